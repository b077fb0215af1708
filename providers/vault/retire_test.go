package vault_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/vault"
)

// TestVaultRetireDestroys: with the policy keyrelay documents, Retire
// destroys the version on a real server: Vault lists it destroyed, its
// data reads as not found, the other versions are untouched.
func TestVaultRetireDestroys(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
	p := open(t, nil, map[string]string{vault.EnvAddr: v.Addr, vault.EnvToken: v.CreateToken(t, time.Hour, "keyrelay")})
	name := "retire/destroys"
	r1 := put(t, p, name, "sk-1", "e1", ownerA)
	r2 := put(t, p, name, "sk-2", "e2", ownerA)
	r3 := put(t, p, name, "sk-3", "e3", ownerA)
	if err := p.Retire(ctxT(t), providers.RetireRequest{Name: name, Version: r2.Version, Owner: ownerA}); err != nil {
		t.Fatal(err)
	}
	vs, err := p.Versions(ctxT(t), name)
	if err != nil || len(vs) != 3 {
		t.Fatalf("Versions: %+v, %v", vs, err)
	}
	for _, vi := range vs {
		if vi.Destroyed != (vi.Version == r2.Version) {
			t.Errorf("version %s Destroyed=%v, want only %s destroyed", vi.Version, vi.Destroyed, r2.Version)
		}
	}
	if _, err := p.Get(ctxT(t), name, r2.Version); !errors.Is(err, providers.ErrNotFound) {
		t.Errorf("Get of the destroyed version: %v, want ErrNotFound", err)
	}
	for _, r := range []struct {
		res   providers.PutResult
		value string
	}{{r1, "sk-1"}, {r3, "sk-3"}} {
		if s, err := p.Get(ctxT(t), name, r.res.Version); err != nil || string(s.Value) != r.value {
			t.Errorf("Get version %s: %v", r.res.Version, err)
		}
	}
}
