package secretmanager_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// TestRetireAfterRecreate: a retirement scheduled before the secret was
// deleted and created again names a version number the new secret reuses
// (Secret Manager numbers a new secret's versions from 1). Carrying the
// Stamp of the rotation that scheduled it (RetireRequest.ReplacedBy), it
// leaves the new secret's version of that number alone and reports the
// scheduled one gone, whether the number is the new secret's latest
// version or an older one; on the secret it was scheduled on it retires
// as before.
func TestRetireAfterRecreate(t *testing.T) {
	fake := smfake.Start(t)
	// Every create time distinct: a re-created secret's versions are
	// created after the rotation, as in Secret Manager.
	var tick atomic.Int64
	base := time.Now().UTC()
	fake.SetClock(func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Millisecond) })
	p := open(t, fake, nil)
	ctx := context.Background()
	name := "retire/recreated"

	put(t, p, name, "sk-old-1", "e1")
	rot := put(t, p, name, "sk-old-2", "e2") // the rotation: retire version 1 later
	if rot.Stamp == "" {
		t.Fatal("PutResult.Stamp is empty")
	}
	if dup := put(t, p, name, "sk-old-2", "e2"); !dup.Duplicate || dup.Stamp != rot.Stamp {
		t.Errorf("redelivered rotation: %+v, want a Duplicate with the rotation's stamp %q", dup, rot.Stamp)
	}
	scheduled := providers.RetireRequest{Name: name, Version: "1", Owner: owner, ReplacedBy: rot.Stamp}

	// The key is deleted and created again before the grace period ends.
	if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	if r := put(t, p, name, "sk-new-1", "e3"); r.Version != "1" || !r.Created {
		t.Fatalf("re-created secret's first write: %+v", r)
	}
	// Version 1 is now the new secret's latest: not a refusal (ErrConflict),
	// the scheduled version is gone.
	if err := p.Retire(ctx, scheduled); err != nil {
		t.Errorf("Retire of the old secret's version 1, the new secret's latest: %v", err)
	}
	put(t, p, name, "sk-new-2", "e4")
	put(t, p, name, "sk-new-3", "e5")
	if err := p.Retire(ctx, scheduled); err != nil {
		t.Errorf("Retire of the old secret's version 1 on the new secret: %v", err)
	}
	if got := strings.Join(states(t, fake, p, name), ","); got != "ENABLED,ENABLED,ENABLED" {
		t.Errorf("new secret's versions after the old retirement: %s, want all ENABLED", got)
	}
	if s, err := p.Get(ctx, name, "1"); err != nil || string(s.Value) != "sk-new-1" {
		t.Errorf("new secret's version 1 after the old retirement: %v", err)
	}
	if fake.Calls("DisableSecretVersion") != 0 || fake.Calls("DestroySecretVersion") != 0 {
		t.Errorf("%d disables and %d destroys, want none", fake.Calls("DisableSecretVersion"), fake.Calls("DestroySecretVersion"))
	}

	// The new secret's own rotation retires its version 2 as usual.
	rot2 := put(t, p, name, "sk-new-4", "e6")
	if err := p.Retire(ctx, providers.RetireRequest{Name: name, Version: "2", Owner: owner, ReplacedBy: rot2.Stamp}); err != nil {
		t.Fatalf("Retire of the new secret's version 2: %v", err)
	}
	if got := strings.Join(states(t, fake, p, name), ","); got != "ENABLED,DESTROYED,ENABLED,ENABLED" {
		t.Errorf("states after retiring version 2: %s", got)
	}
	// The current version is still refused.
	err := p.Retire(ctx, providers.RetireRequest{Name: name, Version: "4", Owner: owner, ReplacedBy: rot2.Stamp})
	if !errors.Is(err, providers.ErrConflict) || providers.IsRetryable(err) {
		t.Errorf("Retire of the current version: %v, want a permanent ErrConflict", err)
	}
	err = p.Retire(ctx, providers.RetireRequest{Name: name, Version: "3", Owner: owner, ReplacedBy: "yesterday"})
	if !errors.Is(err, providers.ErrInvalid) || providers.IsRetryable(err) {
		t.Errorf("Retire with a malformed ReplacedBy: %v, want a permanent ErrInvalid", err)
	}
}
