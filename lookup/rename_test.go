package lookup_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/settings"
)

// TestRenamedKeyIsNotServedUnderItsOldName: with alias naming, key.updated
// with a new alias moves the secret to its new name and deletes the old
// one. Its confirmation names only the new name, so a gateway that read
// the key by its old name (global scope) kept getting the value from the
// cache for the whole TTL, and after the key was deleted too: a deleted
// virtual key stayed readable.
func TestRenamedKeyIsNotServedUnderItsOldName(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{TTL: time.Hour}, mutate: func(c *settings.Config) {
		c.Keyrelay.Naming.Template = "{prefix}{team_id}/{alias}"
	}})
	publish := func(ev *events.Event) *events.Confirmation {
		t.Helper()
		applied := f.applied()
		if _, err := f.pub.Publish(f.ctx, ev); err != nil {
			t.Fatal(err)
		}
		c := f.confirmation(ev.TeamID, ev.KeyID, ev.ID)
		waitFor(t, 5*time.Second, "confirmation applied", func() bool { return f.applied() > applied })
		return c
	}
	gen := f.gen.Add(1)
	ev, err := events.NewKeyEvent(f.ctx, f.kr, events.KeyCreated, "team-a", "k", gen, []byte("sk-renamed-key"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	ev.KeyAlias = "old-alias"
	created := publish(ev)
	if created.Status != events.StatusStored || created.SecretRef == "" {
		t.Fatalf("created: %+v", created)
	}
	oldPath := "/v1/secrets/" + created.SecretRef
	if code, body := f.get(tokenGlobal, oldPath); code != 200 || body["value"] != "sk-renamed-key" {
		t.Fatalf("before the rename: %d %v", code, body)
	}

	upd := &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("ev-rename-%d", time.Now().UnixNano()), Type: events.KeyUpdated,
		Time: time.Now().UTC(), TeamID: "team-a", KeyID: "k", Generation: f.gen.Add(1), KeyAlias: "new-alias"}
	renamed := publish(upd)
	if renamed.Status != events.StatusStored || renamed.SecretRef == created.SecretRef {
		t.Fatalf("renamed: %+v", renamed)
	}
	if code, body := f.get(tokenGlobal, "/v1/secrets/"+renamed.SecretRef); code != 200 || body["value"] != "sk-renamed-key" {
		t.Fatalf("new name: %d %v", code, body)
	}
	if code, body := f.get(tokenGlobal, oldPath); code != 404 {
		t.Fatalf("old name after the rename (its secret was deleted): %d %v; want 404", code, body)
	}
}
