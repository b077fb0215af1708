package recovery_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestCopyToAnotherBackend: a team's live keys are copied from the ledger
// into another backend at their newest values (deleted keys are not);
// the ledger still places them where they were; a second copy writes
// nothing and adds no version; a foreign secret in the target is left
// alone without --adopt.
func TestCopyToAnotherBackend(t *testing.T) {
	p := newPipeline(t)
	target, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p.reg.Register("backend_b", func(context.Context, providers.Config) (providers.Provider, error) { return target, nil })
	var evs []*events.Event
	for i := 0; i < 12; i++ {
		evs = append(evs, p.event(t, events.KeyCreated, "team-c", fmt.Sprintf("key-%02d", i), 1, fmt.Sprintf("sk-c-%02d-g1", i)))
	}
	p.publish(t, evs...)
	p.publish(t, p.event(t, events.KeyRotated, "team-c", "key-00", 2, "sk-c-00-g2"), p.event(t, events.KeyDeleted, "team-c", "key-11", 2, ""))
	if _, err := target.Put(p.ctx, providers.PutRequest{Name: secretName("team-c", "key-10"), Value: []byte("sk-foreign"), IdempotencyKey: "f",
		Owner: providers.Owner{TeamID: "team-x", KeyID: "other"}}); err != nil {
		t.Fatal(err)
	}
	cfg := recovery.CopyConfig{Config: recovery.Config{Teams: []string{"team-c"}}, To: "backend_b"}
	plan := cfg
	plan.DryRun = true
	if rep, err := recovery.Copy(p.ctx, p.deps(), plan); err != nil || rep.Written != 0 || len(rep.Rows) != 11 {
		t.Fatalf("dry run: %+v %v", rep, err)
	}
	rep, err := recovery.Copy(p.ctx, p.deps(), cfg)
	if err != nil || rep.Written != 10 || rep.Skipped != 1 || rep.Failed != 0 {
		t.Fatalf("copy: %+v %v", rep, err)
	}
	for i := 0; i < 10; i++ {
		want := fmt.Sprintf("sk-c-%02d-g1", i)
		if i == 0 {
			want = "sk-c-00-g2"
		}
		sec, err := target.Get(p.ctx, secretName("team-c", fmt.Sprintf("key-%02d", i)), "")
		if err != nil || string(sec.Value) != want {
			t.Errorf("key-%02d in the target: %v", i, err)
		}
	}
	if sec, _ := target.Get(p.ctx, secretName("team-c", "key-10"), ""); sec == nil || string(sec.Value) != "sk-foreign" {
		t.Error("the foreign secret in the target was overwritten")
	}
	if _, err := target.Get(p.ctx, secretName("team-c", "key-11"), ""); err == nil {
		t.Error("a deleted key was copied")
	}
	if e, _, _ := p.ledger.Get(p.ctx, "team-c", "key-01"); e == nil || e.Provider != "local" {
		t.Errorf("the ledger moved: %+v", e)
	}
	again, err := recovery.Copy(p.ctx, p.deps(), cfg)
	if err != nil || again.Written != 0 {
		t.Fatalf("second copy: %+v %v", again, err)
	}
	for i := 0; i < 10; i++ {
		if vs, _ := target.Versions(p.ctx, secretName("team-c", fmt.Sprintf("key-%02d", i))); len(vs) != 1 {
			t.Errorf("key-%02d has %d versions in the target", i, len(vs))
		}
	}
}
