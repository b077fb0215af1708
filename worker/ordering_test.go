package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// TestOrderingAcrossEventTypes (issue 10, point 11): one rule for every
// pair of key event types, as docs/events.md states it. A key's value (set
// by created, rotated, deleted) and its description (alias and metadata,
// set by every key event) each take the newest generation that set them;
// an equal or lower generation never replaces a part. So after A at
// generation 5, B at 5 (equal) or 4 (lower) is applied only when A set no
// value and B sets one (A = key.updated), and then A's alias stays.
func TestOrderingAcrossEventTypes(t *testing.T) {
	b := setup(t, setupOptions{})
	w, _ := b.startWorker(nil)
	types := []events.Type{events.KeyCreated, events.KeyRotated, events.KeyUpdated, events.KeyDeleted}
	applied := map[events.Type]events.Status{events.KeyCreated: events.StatusStored, events.KeyRotated: events.StatusRotated,
		events.KeyDeleted: events.StatusDeleted}
	mk := func(typ events.Type, key string, gen uint64, alias string) *events.Event {
		var ev *events.Event
		if typ == events.KeyUpdated {
			ev = &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("upd-%s-%d-%s", key, gen, alias), Type: typ, Time: time.Now().UTC(),
				TeamID: "team-o", KeyID: key, Generation: gen}
		} else {
			ev = b.keyEvent(typ, "team-o", key, gen, "sk-"+key+"-"+fmt.Sprint(gen))
		}
		ev.KeyAlias = alias
		return ev
	}
	type tc struct {
		a, b   events.Type
		bGen   uint64
		key    string
		first  *events.Event
		second *events.Event
	}
	var cases []*tc
	for _, a := range types {
		for _, bt := range types {
			for _, g := range []uint64{5, 4} {
				key := fmt.Sprintf("%s-%s-%d", a[4:], bt[4:], g)
				c := &tc{a: a, b: bt, bGen: g, key: key}
				c.first, c.second = mk(a, key, 5, "alias-a"), mk(bt, key, g, "alias-b")
				cases = append(cases, c)
			}
		}
	}
	var firsts, seconds []*events.Event
	for _, c := range cases {
		firsts, seconds = append(firsts, c.first), append(seconds, c.second)
	}
	b.publish(firsts...)
	b.waitConfirmed(firsts, 30*time.Second)
	b.publish(seconds...)
	cs := b.waitConfirmed(seconds, 30*time.Second)
	for _, c := range cases {
		name := fmt.Sprintf("%s@5 then %s@%d", c.a, c.b, c.bGen)
		got := cs[c.second.ID]
		want := events.StatusSuperseded
		if c.a == events.KeyUpdated && c.b != events.KeyUpdated {
			want = applied[c.b]
		}
		if got.Status != want {
			t.Errorf("%s: %s (%s), want %s", name, got.Status, got.Reason, want)
			continue
		}
		e, _, err := w.Ledger().Get(b.ctx, "team-o", c.key)
		if err != nil || e == nil {
			t.Fatalf("%s: ledger: %v", name, err)
		}
		if e.Alias != "alias-a" {
			t.Errorf("%s: alias %q, want the first event's (its generation is not older)", name, e.Alias)
		}
		wantGen := uint64(5)
		if want != events.StatusSuperseded {
			wantGen = c.bGen
		}
		if e.Generation != wantGen && !(c.a == events.KeyUpdated && want == events.StatusSuperseded) {
			t.Errorf("%s: value generation %d, want %d", name, e.Generation, wantGen)
		}
		if c.b == events.KeyCreated || c.b == events.KeyRotated {
			v := b.value("local", name2("team-o", c.key))
			switch {
			case want != events.StatusSuperseded && v != "sk-"+c.key+"-"+fmt.Sprint(c.bGen):
				t.Errorf("%s: value %q, want the second event's", name, v)
			case want == events.StatusSuperseded && c.a != events.KeyDeleted && c.a != events.KeyUpdated && v != "sk-"+c.key+"-5":
				t.Errorf("%s: value %q, want the first event's", name, v)
			}
		}
	}
}

func name2(team, key string) string { return name(team, key) }
