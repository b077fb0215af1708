package vault_test

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/internal/testenv"
)

// A periodic token given to keyrelay (no login method) lives as long as
// it is renewed within its period. A provider left idle longer than that
// (a quiet team) must still hold a live token when the next event comes:
// the renewal cannot wait for the next call, since by then the token is
// gone and every write fails with a permanent access denied.
func TestVaultPeriodicTokenSurvivesIdle(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
	ctx := ctxT(t)
	sec, err := v.Client(t).Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"keyrelay"}, Period: "3s"})
	if err != nil {
		t.Fatal(err)
	}
	p := openToken(t, &testenv.Vault{Addr: v.Addr, Token: sec.Auth.ClientToken}, nil)
	put(t, p, "idle/key", "sk-1", "ev-1", ownerA)
	time.Sleep(6 * time.Second) // two periods without a call
	put(t, p, "idle/key", "sk-2", "ev-2", ownerA)
	wantValue(t, p, "idle/key", "", "sk-2")
}
