package keys_test

import (
	"context"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/keys"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

// When Key Vault stops accepting the token the sealer holds (revoked,
// signed with a retired key, or expired by the vault's clock), azidentity
// keeps answering the SDK from its cache with that same token until it
// expires locally (up to an hour): every wrap and unwrap would be a
// permanent access denied meanwhile. As the secrets provider does, a 401
// must get a new token and the call go through.
func TestRevokedTokenIsReplaced(t *testing.T) {
	srv := kvfake.New()
	t.Cleanup(srv.Close)
	srv.ClientID = "11111111-2222-3333-4444-555555555555"
	srv.ClientSecret = "client-secret-value-1"
	ca, err := srv.WriteCABundle(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string]string{
		keys.OptionVaultURL: srv.URL, keys.OptionCABundle: ca, keys.OptionAuthorityHost: srv.URL,
		keys.OptionTenantID: kvfake.DefaultTenant, keys.OptionClientID: srv.ClientID, keys.OptionClientSecret: srv.ClientSecret,
		keys.OptionDisableInstanceDiscovery: "true", keys.OptionDisableChallRes: "true",
	}
	noenv := func(string) string { return "" }
	c, err := keys.NewClient(opts, noenv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kty := azkeys.KeyTypeRSA
	if _, err := c.CreateKey(ctx, "keyrelay-kek", azkeys.CreateKeyParameters{Kty: &kty, KeySize: to.Ptr[int32](2048)}, nil); err != nil {
		t.Fatalf("create key: %v", err)
	}
	opts[keys.OptionKeyName] = "keyrelay-kek"
	bind := func(team string) events.Binding { return events.Binding{TeamID: team, KeyID: "key-1", Generation: 1} }

	s, err := keys.New(ctx, opts, noenv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal(ctx, []byte("sk-a"), bind("team-a")); err != nil {
		t.Fatal(err)
	}
	srv.RevokeTokens()
	// A new team: a new data key, so a wrapKey call.
	sv, err := s.Seal(ctx, []byte("sk-b"), bind("team-b"))
	if err != nil {
		t.Fatalf("Seal after the vault revoked the token: %v", err)
	}

	// Another process opens it: an unwrapKey call.
	o, err := keys.New(ctx, opts, noenv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Seal(ctx, []byte("sk-c"), bind("team-c")); err != nil {
		t.Fatal(err)
	}
	srv.RevokeTokens()
	if pt, err := o.Open(ctx, sv, bind("team-b")); err != nil || string(pt) != "sk-b" {
		t.Fatalf("Open after the vault revoked the token: %q, %v", pt, err)
	}
}
