package secretmanager_test

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// TestRetireStates: Retire disables and destroys an enabled version,
// destroys one hygiene (or an operator) disabled, and writes nothing for
// one already destroyed.
func TestRetireStates(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	name := "retire/states"
	for i, v := range []string{"sk-1", "sk-2", "sk-3", "sk-4"} {
		put(t, p, name, v, "e"+string(rune('1'+i)))
	}
	cl := rawClient(fake)
	defer cl.Close()
	v2, err := cl.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: p.SecretName(name) + "/versions/2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v2.GetName(), Etag: v2.GetEtag()}); err != nil {
		t.Fatal(err)
	}
	retire := func(version string) {
		t.Helper()
		if err := p.Retire(ctx, providers.RetireRequest{Name: name, Version: version, Owner: owner}); err != nil {
			t.Fatalf("Retire %s: %v", version, err)
		}
	}
	retire("1")
	retire("2")
	if got := states(t, fake, p, name); len(got) != 4 || got[0] != "DESTROYED" || got[1] != "DESTROYED" || got[2] != "ENABLED" || got[3] != "ENABLED" {
		t.Fatalf("states after retiring 1 and 2: %v", got)
	}
	disables, destroys := fake.Calls("DisableSecretVersion"), fake.Calls("DestroySecretVersion")
	if disables != 2 || destroys != 2 {
		t.Errorf("%d disables and %d destroys, want 2 and 2 (the test's own disable included)", disables, destroys)
	}
	retire("1")
	if fake.Calls("DisableSecretVersion") != disables || fake.Calls("DestroySecretVersion") != destroys {
		t.Error("retiring a destroyed version changed state again")
	}
	if fake.Errors("DestroySecretVersion", codes.FailedPrecondition) != 0 {
		t.Error("Retire destroyed a destroyed version")
	}
}

// TestRetireEtagRace: a state change that loses an etag race is retried
// on the version as it now is.
func TestRetireEtagRace(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	name := "retire/race"
	put(t, p, name, "sk-1", "e1")
	put(t, p, name, "sk-2", "e2")
	fake.Fail("DisableSecretVersion", codes.FailedPrecondition, 1, 0)
	fake.Fail("DestroySecretVersion", codes.FailedPrecondition, 1, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Retire(ctx, providers.RetireRequest{Name: name, Version: "1", Owner: owner}); err != nil {
		t.Fatalf("Retire after etag conflicts: %v", err)
	}
	if got := states(t, fake, p, name); len(got) != 2 || got[0] != "DESTROYED" || got[1] != "ENABLED" {
		t.Fatalf("states: %v", got)
	}
}
