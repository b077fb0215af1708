package secretmanager_test

import (
	"context"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

const project = "keyrelay-test"

// open builds a provider on fake through Factory, as the registry does.
func open(t testing.TB, fake *smfake.Server, extra map[string]string) *secretmanager.Provider {
	t.Helper()
	opts := map[string]string{
		secretmanager.OptionProject:                project,
		secretmanager.OptionEndpoint:               fake.Addr(),
		secretmanager.OptionInsecure:               "true",
		secretmanager.OptionSecretWritesPerSecond:  "1000",
		secretmanager.OptionProjectWritesPerMinute: "600000",
		secretmanager.OptionReadsPerMinute:         "600000",
		secretmanager.OptionAccessPerMinute:        "600000",
	}
	for k, v := range extra {
		opts[k] = v
	}
	p, err := secretmanager.Factory(context.Background(), providers.Config{Options: opts, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(providers.Closer).Close() })
	return p.(*secretmanager.Provider)
}

func TestConformance(t *testing.T) {
	fake := smfake.Start(t)
	// Small ListSecrets pages, so that the List case pages.
	listOpts := map[string]string{secretmanager.OptionListPageSize: "2"}
	providertest.Run(t, func(t *testing.T) providers.Provider { return open(t, fake, listOpts) }, providertest.Options{
		Features: providertest.Features{
			ListPageSize:  2,
			BinaryValues:  true,
			MaxNameLength: secretmanager.MaxNameLength,
		},
		CreateUnmanaged: func(ctx context.Context, p providers.Provider, name string, value []byte) error {
			return createUnmanaged(ctx, fake, p.(*secretmanager.Provider).SecretName(name), value)
		},
	})
}

// createUnmanaged writes a secret as another tool would: no annotations.
func createUnmanaged(ctx context.Context, fake *smfake.Server, full string, value []byte) error {
	cl := rawClient(fake)
	defer cl.Close()
	i := len("projects/" + project + "/secrets/")
	if _, err := cl.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{
		Parent: "projects/" + project, SecretId: full[i:],
		Secret: &secretmanagerpb.Secret{Replication: &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}},
	}); err != nil {
		return err
	}
	_, err := cl.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: full, Payload: &secretmanagerpb.SecretPayload{Data: value}})
	return err
}
