package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
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
		t.Setenv(k, "")
	}
	t.Setenv(vault.EnvAddr, v.Addr)
	t.Setenv(vault.EnvToken, v.Token)
}

// useAWSEnv sets LiteLLM's AWS variables for kumofront, as a LiteLLM
// deployment passes them to the workers; nothing of the machine's AWS
// setup leaks in.
func useAWSEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_REGION",
		"AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_ROLE_NAME", "AWS_PROFILE_NAME", "AWS_WEB_IDENTITY_TOKEN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_REGION_NAME", kumofront.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", kumofront.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", kumofront.SecretAccessKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
}

// cliRunner runs the keyrelay binary against e's config and returns its
// stdout, stderr and exit status; it fails the test only when the binary
// cannot run at all.
func cliRunner(ctx context.Context, t *testing.T, e *env) func(args ...string) (string, string, int) {
	bin := keyrelayBinary(t)
	return func(args ...string) (string, string, int) {
		cmd := exec.CommandContext(ctx, bin, append([]string{"--config", e.config}, args...)...)
		cmd.Env = os.Environ()
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
