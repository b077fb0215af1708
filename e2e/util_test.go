package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	"github.com/keyrelay/keyrelay/providers/vault"
)

func readConfirmations(ctx context.Context, t *testing.T, js jetstream.JetStream) []*events.Confirmation {
	t.Helper()
	s, err := js.Stream(ctx, "KEYRELAY_CONFIRMATIONS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int(info.State.Msgs)
	if total == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, "KEYRELAY_CONFIRMATIONS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*events.Confirmation, 0, total)
	for len(out) < total {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var c events.Confirmation
			if err := json.Unmarshal(m.Data(), &c); err != nil {
				t.Fatalf("confirmation is not JSON: %v", err)
			}
			out = append(out, &c)
		}
		if n == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}

// publishAll publishes evs asynchronously and waits for every ack. It
// returns the first error, so that it can run in a goroutine of its own.
func publishAll(ctx context.Context, pub *client.Publisher, evs []*events.Event) error {
	futs := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, ev := range evs {
		f, err := pub.PublishAsync(ev)
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// useVaultEnv points LiteLLM's Vault variables (the workers inherit them)
// at v with its root token, and clears every other way to authenticate.
func useVaultEnv(t *testing.T, v *testenv.Vault) {
	t.Helper()
	for _, k := range []string{"VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "HCP_VAULT_NAMESPACE", vault.EnvAppRoleRoleID, vault.EnvAppRoleSecretID} {
		setenv(t, k, "")
	}
	setenv(t, vault.EnvAddr, v.Addr)
	setenv(t, vault.EnvToken, v.Token)
}

// awsEnv is LiteLLM's AWS variables for kumofront, as a LiteLLM
// deployment passes them to the workers; "" unsets (nothing of the
// machine's AWS setup leaks in). Every test's kumofront takes the same
// credentials and region, so TestMain sets them for the whole process
// (the AWS SDK in this process reads some of them too).
var awsEnv = map[string]string{
	"AWS_PROFILE": "", "AWS_ROLE_ARN": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_ENDPOINT_URL": "", "AWS_REGION": "",
	"AWS_DEFAULT_REGION": "", "AWS_SESSION_TOKEN": "", "AWS_ROLE_NAME": "", "AWS_PROFILE_NAME": "", "AWS_WEB_IDENTITY_TOKEN": "",
	"AWS_REGION_NAME": kumofront.Region, "AWS_ACCESS_KEY_ID": kumofront.AccessKeyID, "AWS_SECRET_ACCESS_KEY": kumofront.SecretAccessKey,
	"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
}

func TestMain(m *testing.M) {
	for k, v := range awsEnv {
		if v == "" {
			os.Unsetenv(k)
		} else {
			os.Setenv(k, v)
		}
	}
	os.Exit(m.Run())
}

// childEnvs holds, per test, the variables the keyrelay processes it
// starts get on top of this process's environment (setenv, environ).
// Tests that give them different values (a Vault address, a Google
// project) run in parallel, so none is set in this process.
var childEnvs sync.Map // test name -> map[string]string

// setenv sets k for the keyrelay processes t (and its subtests) start;
// "" unsets it. Not for parallel use within one test.
func setenv(t *testing.T, k, v string) {
	t.Helper()
	m, loaded := childEnvs.LoadOrStore(t.Name(), map[string]string{})
	if !loaded {
		name := t.Name()
		t.Cleanup(func() { childEnvs.Delete(name) })
	}
	m.(map[string]string)[k] = v
}

// environ is the environment of a keyrelay process t starts: this
// process's, with the variables set for t and the tests it runs under.
func environ(t *testing.T) []string {
	set := map[string]string{}
	for name := t.Name(); ; {
		if m, ok := childEnvs.Load(name); ok {
			for k, v := range m.(map[string]string) {
				if _, inner := set[k]; !inner {
					set[k] = v
				}
			}
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			break
		}
		name = name[:i]
	}
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range set {
		if v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// cliRunner runs the keyrelay binary against e's config and returns its
// stdout, stderr and exit status; it fails the test only when the binary
// cannot run at all.
func cliRunner(ctx context.Context, t *testing.T, e *env) func(args ...string) (string, string, int) {
	bin := keyrelayBinary(t)
	return func(args ...string) (string, string, int) {
		cmd := exec.CommandContext(ctx, bin, append([]string{"--config", e.config}, args...)...)
		cmd.Env = environ(t)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), stderr.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return string(out), stderr.String(), 0
	}
}
