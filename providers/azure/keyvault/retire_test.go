package keyvault_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
)

// TestRetireDisables: Retire disables the version and keeps its tags; Get
// of it reads as retired (ErrNotFound, with ErrSecretDisabled, not access
// denied); the current version, even one an operator disabled, is never
// retired.
func TestRetireDisables(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t)
	ctx := context.Background()
	r1 := put(t, p, "ret", "v1", "e1")
	r2 := put(t, p, "ret", "v2", "e2")
	if err := p.Retire(ctx, providers.RetireRequest{Name: "ret", Version: r1.Version, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	_, err := p.Get(ctx, "ret", r1.Version)
	wantKind(t, err, providers.ErrNotFound, providers.Permanent)
	if !errors.Is(err, keyvault.ErrSecretDisabled) || errors.Is(err, providers.ErrAccessDenied) {
		t.Errorf("Get of a retired version: %v, want ErrSecretDisabled and not ErrAccessDenied", err)
	}
	noLeak(t, err)
	vs, err := p.Versions(ctx, "ret")
	if err != nil || len(vs) != 2 || vs[0].Version != r1.Version || vs[0].IdempotencyKey != "e1" || !vs[1].Current {
		t.Fatalf("Versions after Retire (tags kept): %+v, %v", vs, err)
	}
	if st, n := f.srv.SecretState(keyvault.KVName("ret")); st != "active" || n != 2 {
		t.Errorf("state %q with %d versions, want the retired version kept", st, n)
	}

	// An operator disables the current version: it is still current, and
	// neither Retire nor Get takes it for a retired one.
	f.disable(t, "ret")
	err = p.Retire(ctx, providers.RetireRequest{Name: "ret", Version: r2.Version, Owner: owner})
	wantKind(t, err, providers.ErrConflict, providers.Permanent)
	_, err = p.Get(ctx, "ret", r2.Version)
	wantKind(t, err, keyvault.ErrSecretDisabled, providers.Permanent)
	if !errors.Is(err, providers.ErrAccessDenied) || errors.Is(err, providers.ErrNotFound) {
		t.Errorf("Get of the disabled current version: %v, want ErrAccessDenied and not ErrNotFound", err)
	}
	if err := p.Retire(ctx, providers.RetireRequest{Name: "ret", Version: r1.Version, Owner: owner}); err != nil {
		t.Errorf("Retire again with the current version disabled: %v", err)
	}
}
