package e2e

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
	gsm "github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/providers/vault"
)

// graceBackend sets one backend up for TestGracePeriodEveryProvider: the
// environment's options, the backend read directly (to check the previous
// version) and how to tell that a version is retired there.
type graceBackend struct {
	name  string
	setup func(t *testing.T) (envOptions, func(ctx context.Context, e *env) (providers.Provider, error))
	// retired reports whether version of name is retired; nil: it is no
	// longer readable through the provider.
	retired func(ctx context.Context, name, version string) (bool, error)
}

// TestGracePeriodEveryProvider: on every backend that can retire a
// version, a key rotated with a 5 s grace period answers its previous
// value through the lookup API (as "previous") and keeps it in the backend
// during the grace; the `keyrelay serve` process is restarted in the
// middle of it; after it the lookup API no longer answers the previous
// value and the backend has retired it (AWS: AWSPREVIOUS moved off; the
// others: the version no longer reads), while the new value stays.
func TestGracePeriodEveryProvider(t *testing.T) {
	var front *kumofront.Server
	backends := []graceBackend{
		{name: local.Name, setup: func(t *testing.T) (envOptions, func(context.Context, *env) (providers.Provider, error)) {
			return envOptions{}, func(_ context.Context, e *env) (providers.Provider, error) {
				return local.New(local.Config{Path: e.storeDir})
			}
		}},
		{name: vault.Name, setup: func(t *testing.T) (envOptions, func(context.Context, *env) (providers.Provider, error)) {
			v := testenv.StartVault(t, testenv.VaultOptions{})
			useVaultEnv(t, v)
			return envOptions{system: vault.Name}, func(ctx context.Context, _ *env) (providers.Provider, error) {
				return vault.New(ctx, vault.Config{Addr: v.Addr, Token: v.Token}, nil)
			}
		}},
		{name: secretsmanager.Name, setup: func(t *testing.T) (envOptions, func(context.Context, *env) (providers.Provider, error)) {
			front = kumofront.Start(t)
			return envOptions{system: secretsmanager.Name, backendYML: fmt.Sprintf(`
    aws_secret_manager:
      endpoint: %s`, front.URL)}, func(ctx context.Context, _ *env) (providers.Provider, error) {
					return secretsmanager.Factory(ctx, providers.Config{Options: front.Options(), Getenv: func(string) string { return "" }})
				}
		}, retired: func(ctx context.Context, name, version string) (bool, error) {
			d, err := front.Client().DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(secretsmanager.SecretID(name))})
			if err != nil {
				return false, err
			}
			for _, st := range d.VersionIdsToStages[version] {
				if st == secretsmanager.StageCurrent || st == secretsmanager.StagePrevious {
					return false, nil
				}
			}
			return true, nil
		}},
		{name: gsm.Name, setup: func(t *testing.T) (envOptions, func(context.Context, *env) (providers.Provider, error)) {
			fake := smfake.Start(t)
			const project = "keyrelay-grace"
			setenv(t, "GOOGLE_SECRET_MANAGER_PROJECT_ID", project)
			return envOptions{system: gsm.Name, backendYML: `
    google_secret_manager:
      endpoint: ` + fake.Addr() + `
      insecure: "true"
      superseded_grace: "0"`}, func(ctx context.Context, _ *env) (providers.Provider, error) {
					return gsm.New(ctx, gsm.Config{Project: project, Endpoint: fake.Addr(), Insecure: true}, nil)
				}
		}},
		{name: keyvault.Name, setup: func(t *testing.T) (envOptions, func(context.Context, *env) (providers.Provider, error)) {
			srv := kvfake.New()
			t.Cleanup(srv.Close)
			srv.ClientID, srv.ClientSecret = "11111111-2222-3333-4444-555555555555", "e2e-client-secret"
			ca, err := srv.WriteCABundle(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			vars := map[string]string{"AZURE_KEY_VAULT_URI": srv.URL, "AZURE_TENANT_ID": kvfake.DefaultTenant,
				"AZURE_CLIENT_ID": srv.ClientID, "AZURE_CLIENT_SECRET": srv.ClientSecret}
			for k, v := range vars {
				setenv(t, k, v)
			}
			opts := map[string]string{"ca_bundle": ca, "authority_host": srv.URL, "vault_url": srv.URL,
				"disable_instance_discovery": "true", "disable_challenge_resource_verification": "true"}
			return envOptions{system: keyvault.Name, backendYML: `
    azure_key_vault:
      ca_bundle: ` + ca + `
      authority_host: ` + srv.URL + `
      disable_instance_discovery: "true"
      disable_challenge_resource_verification: "true"`}, func(ctx context.Context, _ *env) (providers.Provider, error) {
					return keyvault.Factory(ctx, providers.Config{Options: opts, Getenv: func(k string) string { return vars[k] }})
				}
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { graceOn(t, b) })
	}
}

func graceOn(t *testing.T, b graceBackend) {
	const (
		team, key = "team-g", "key-1"
		name      = "litellm/" + team + "/" + key
		grace     = 5
	)
	opts, open := b.setup(t)
	e := newEnv(t, opts)
	e.setLookupTeams([]string{team})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.startWorker("grace-1")
	pub := client.NewPublisher(e.js)
	send := func(typ events.Type, gen uint64, value string, g int64) {
		t.Helper()
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key, gen, []byte(value), events.KeyData{GracePeriodSeconds: g})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	send(events.KeyCreated, 1, "sk-grace-old", 0)
	e.waitQuiet(ctx, 1, 30*time.Second)
	send(events.KeyRotated, 2, "sk-grace-new", grace)
	e.waitQuiet(ctx, 2, 30*time.Second)
	lc := func(p *proc) *lookupclient.HTTP {
		return &lookupclient.HTTP{BaseURL: "http://127.0.0.1:" + strconv.Itoa(p.lookupPort), Token: lookupToken(team)}
	}
	var s *lookupclient.Secret
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		s, err = lc(w).Get(ctx, key)
		if err == nil && s.Value == "sk-grace-new" && s.Previous != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lookup during the grace period: %+v, %v; want the new value and the previous one", s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	prev := *s.Previous
	if prev.Value != "sk-grace-old" || prev.Version == "" || time.Until(prev.Until) > grace*time.Second {
		t.Fatalf("previous %+v", prev)
	}
	store, err := open(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := store.(providers.Closer); ok {
		defer c.Close()
	}
	if old, err := store.Get(ctx, name, prev.Version); err != nil || string(old.Value) != "sk-grace-old" {
		t.Fatalf("previous version in the backend during the grace period: %v", err)
	}

	// The process that scheduled the retirement stops; another starts.
	w.stop(syscall.SIGTERM)
	w = e.startWorker("grace-2")

	time.Sleep(time.Until(prev.Until))
	deadline = time.Now().Add(20 * time.Second)
	for {
		asked := time.Now() // before the request: its answer may arrive after prev.Until
		s, err := lc(w).Get(ctx, key)
		retired, rerr := false, error(nil)
		if b.retired != nil {
			retired, rerr = b.retired(ctx, name, prev.Version)
		} else {
			_, gerr := store.Get(ctx, name, prev.Version)
			retired = errors.Is(gerr, providers.ErrNotFound)
			if gerr != nil && !retired {
				rerr = gerr
			}
		}
		if err == nil && s.Previous != nil && asked.After(prev.Until) {
			t.Fatalf("lookup answered the previous value to a request made at %v, after its grace period ended at %v", asked, prev.Until)
		}
		if err == nil && s.Value == "sk-grace-new" && s.Previous == nil && retired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the grace period: lookup %+v (%v), retired %v (%v)", s, err, retired, rerr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cur, err := store.Get(ctx, name, "")
	if err != nil || string(cur.Value) != "sk-grace-new" {
		t.Fatalf("current value after the retirement: %v", err)
	}
	t.Logf("%s: previous version %s served until %s, then retired", b.name, prev.Version, prev.Until.Format(time.RFC3339Nano))
}
