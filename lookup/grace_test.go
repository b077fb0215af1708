package lookup_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// TestGracePeriodServesThePreviousValue: during a rotation's grace period
// the answer carries the previous value (and its version and end) next to
// the new one; once it ends the previous value is gone from the answer,
// from a cached answer too, and from the backend.
func TestGracePeriodServesThePreviousValue(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.write(events.KeyCreated, "team-a", "g", "sk-old")
	if _, body := f.get(tokenA, "/v1/secrets/g"); body["value"] != "sk-old" || body["previous"] != nil {
		t.Fatalf("before the rotation: %v", body)
	}
	gen := f.gen.Add(1)
	ev, err := events.NewKeyEvent(f.ctx, f.kr, events.KeyRotated, "team-a", "g", gen, []byte("sk-new"), events.KeyData{GracePeriodSeconds: 3})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := f.pub.Publish(f.ctx, ev); err != nil {
		t.Fatal(err)
	}
	f.confirmation("team-a", "g", ev.ID)
	var prev map[string]any
	waitFor(t, 5*time.Second, "previous value served", func() bool {
		_, body := f.get(tokenA, "/v1/secrets/g")
		prev, _ = body["previous"].(map[string]any)
		return body["value"] == "sk-new" && prev != nil
	})
	until, err := time.Parse(time.RFC3339Nano, prev["until"].(string))
	if prev["value"] != "sk-old" || prev["version"] == "" || err != nil || until.Before(start.Add(3*time.Second)) {
		t.Fatalf("previous %v (until: %v)", prev, err)
	}
	// Served from the cache meanwhile, never past until.
	waitFor(t, 10*time.Second, "previous value dropped after the grace period", func() bool {
		// The clock is read before the request: an answer decided just
		// before until may arrive just after it.
		asked := time.Now()
		_, body := f.get(tokenA, "/v1/secrets/g")
		if body["previous"] != nil && asked.After(until) {
			t.Fatalf("previous value served to a request made at %v, after its grace period ended at %v", asked, until)
		}
		return body["previous"] == nil && body["value"] == "sk-new"
	})
	waitFor(t, 10*time.Second, "previous version retired in the backend", func() bool {
		_, err := f.store.Get(f.ctx, "litellm/team-a/g", prev["version"].(string))
		return err != nil
	})
}
