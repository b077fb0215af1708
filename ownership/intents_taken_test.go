package ownership_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/ownership"
)

// An intent's Taken is encoded as encoding/json writes it (omitted when
// zero) and read back; ReadIntents gives each intent its batch's stored
// time (Stored, the server's), which is never encoded.
func TestIntentTakenAndStoredTime(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	intentStream(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	taken := time.Now().Add(-10 * time.Minute).Round(0)
	in := intent(1)
	in.Taken = taken
	older := intent(2) // an older version's: no Taken
	for _, x := range []ownership.Intent{in, older, {Stored: time.Now()}} {
		got, err := ownership.IntentJSON(x)
		want, jerr := json.Marshal(x)
		if err != nil || jerr != nil || string(got) != string(want) {
			t.Fatalf("got  %s (%v)\nwant %s (%v)", got, err, want, jerr)
		}
	}
	log := ownership.NewIntentLog(js, "intents.3")
	before := time.Now()
	for _, x := range []ownership.Intent{in, older} {
		if err := log.Append(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	ins, bad, err := ownership.ReadIntents(ctx, js, "INTENTS", "intents.3", time.Time{})
	if err != nil || bad != 0 || len(ins) != 2 {
		t.Fatalf("read %d intents, %d bad, %v; want 2", len(ins), bad, err)
	}
	for _, got := range ins {
		want := map[string]time.Time{in.EventID: taken, older.EventID: {}}[got.EventID]
		if !got.Taken.Equal(want) {
			t.Errorf("%s: Taken %v, want %v", got.EventID, got.Taken, want)
		}
		if got.Stored.Before(before.Add(-time.Second)) || got.Stored.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: Stored %v, want the batch's stored time (about %v)", got.EventID, got.Stored, before)
		}
	}
}

// TestClampIntentLeases: an intent giving its write more than one lease
// TTL (Until − Taken) is cut to one TTL, its Until kept; the others, and
// an intent without Taken, are left as they are.
func TestClampIntentLeases(t *testing.T) {
	const ttl = 15 * time.Second
	until := time.Now()
	ins := []ownership.Intent{
		{Key: "t.a", EventID: "a", Generation: 1, Until: until, Taken: until.Add(-time.Second)},
		{Key: "t.b", EventID: "b", Generation: 1, Until: until, Taken: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC)},
		{Key: "t.c", EventID: "c", Generation: 1, Until: until, Taken: until.Add(-ttl)},
		{Key: "t.d", EventID: "d", Generation: 1, Until: until},
	}
	if n := ownership.ClampIntentLeases(ins, ttl); n != 1 {
		t.Fatalf("clamped %d, want 1", n)
	}
	want := []time.Time{until.Add(-time.Second), until.Add(-ttl), until.Add(-ttl), {}}
	for i, in := range ins {
		if !in.Taken.Equal(want[i]) || !in.Until.Equal(until) {
			t.Errorf("%s after the clamp: Taken %v Until %v, want Taken %v", in.EventID, in.Taken, in.Until, want[i])
		}
	}
}
