package ownership_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/ownership"
)

func intentStream(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "INTENTS", Subjects: []string{"intents.>"},
		Storage: jetstream.FileStorage, MaxAge: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
}

func intent(i int) ownership.Intent {
	return ownership.Intent{Key: fmt.Sprintf("team.k%d", i%100), EventID: fmt.Sprintf("ev-%d", i), StreamSeq: uint64(i + 1),
		Lane: "events", Generation: uint64(i + 1), Until: time.Now().Add(30 * time.Second)}
}

// concurrently runs f(i) for i in [0, writers*each), writers goroutines
// at once, each taking each consecutive i, and fails on any error.
func concurrently(t *testing.T, writers, each int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := f(g*each + i); err != nil {
					errs <- err
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Concurrent appends are each stored before they return, and share stored
// messages; reading the log back gives every one of them.
func TestIntentLogGroupCommit(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	intentStream(t, js)
	log := ownership.NewIntentLog(js, "intents.7")
	const writers, each = 64, 50
	concurrently(t, writers, each, func(i int) error { return log.Append(context.Background(), intent(i)) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "INTENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Msgs; n == 0 || n >= writers*each {
		t.Errorf("%d stored messages for %d concurrent appends: want fewer (group commit)", n, writers*each)
	}
	if ins, msgs := log.Stats(); ins != writers*each || msgs != info.State.Msgs {
		t.Errorf("Stats: %d intents in %d messages, want %d in %d", ins, msgs, writers*each, info.State.Msgs)
	}
	got, bad, err := ownership.ReadIntents(ctx, js, "INTENTS", "intents.7", time.Time{})
	if err != nil || bad != 0 {
		t.Fatalf("read: %v, %d bad", err, bad)
	}
	seen := map[string]bool{}
	for _, in := range got {
		seen[in.EventID] = true
	}
	for i := 0; i < writers*each; i++ {
		if !seen[fmt.Sprintf("ev-%d", i)] {
			t.Fatalf("intent ev-%d was acknowledged but is not in the log (%d read)", i, len(got))
		}
	}
	if other, _, _ := ownership.ReadIntents(ctx, js, "INTENTS", "intents.8", time.Time{}); len(other) != 0 {
		t.Errorf("another epoch's subject returned %d intents", len(other))
	}
}

// Stored messages that are not valid batches are counted, never
// half-used; valid batches around them are read.
func TestReadIntentsHostileBatches(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	intentStream(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, raw := range []string{
		`not json`,
		`[]`,
		`[{"key":"t.k","event_id":"e","generation":0,"until":"2026-12-06T00:00:00Z"}]`,
		`{"key":"t.k"}`,
	} {
		if _, err := js.Publish(ctx, "intents.1", []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	if err := ownership.NewIntentLog(js, "intents.1").Append(ctx, intent(1)); err != nil {
		t.Fatal(err)
	}
	got, bad, err := ownership.ReadIntents(ctx, js, "INTENTS", "intents.1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if bad != 4 || len(got) != 1 || got[0].EventID != "ev-1" {
		t.Fatalf("got %d intents and %d bad batches, want the 1 valid intent and 4 bad", len(got), bad)
	}
	if later, _, _ := ownership.ReadIntents(ctx, js, "INTENTS", "intents.1", time.Now().Add(time.Minute)); len(later) != 0 {
		t.Errorf("since a later time: %d intents, want none", len(later))
	}
}

func TestIntentEncodingMatchesEncodingJSON(t *testing.T) {
	for name, in := range map[string]ownership.Intent{
		"plain":   intent(7),
		"escapes": {Key: "t\"eam.k\u2028", EventID: "e<>&\\", Lane: "bulk", Generation: 1, Until: time.Date(2026, 12, 6, 1, 2, 3, 4, time.FixedZone("x", 3600))},
		"zero":    {},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ownership.IntentJSON(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// An intent too large to store is refused with ErrIntentTooLarge and
// leaves the batch it was being added to intact: appends around it,
// concurrent ones included, are stored and read back, and no stored
// message is unreadable.
func TestIntentTooLargeLeavesTheBatchIntact(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	intentStream(t, js)
	log := ownership.NewIntentLog(js, "intents.9")
	const writers, each = 16, 20
	concurrently(t, writers, each, func(i int) error {
		in := intent(i)
		if i%5 != 0 {
			return log.Append(context.Background(), in)
		}
		in.Key = strings.Repeat("k", 2000)
		if err := log.Append(context.Background(), in); !errors.Is(err, ownership.ErrIntentTooLarge) {
			return fmt.Errorf("a too large intent: %v", err)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ins, bad, err := ownership.ReadIntents(ctx, js, "INTENTS", "intents.9", time.Time{})
	if err != nil || bad != 0 {
		t.Fatalf("read: %d bad, %v", bad, err)
	}
	if want := writers * each * 4 / 5; len(ins) != want {
		t.Errorf("%d intents read back, want %d", len(ins), want)
	}
	if n, _ := log.Stats(); n != uint64(writers*each*4/5) {
		t.Errorf("stats: %d intents stored", n)
	}
}

// A new holder reads its predecessors' intents right after a node was
// lost, often the node that led the intents stream: every read attempt
// ends (stalled, or an error of the step that met no leader) instead
// of waiting out its context, and a read within a bound after the loss
// gives every intent. (A read through an ordered consumer once sat for
// 30 s, its consumer recreating itself without a context, while the
// pipeline waited for it.)
func TestReadIntentsAcrossALostLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster")
	}
	c, js := testenv.StartClusterJetStream(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "INTENTS", Subjects: []string{"intents.>"},
		Storage: jetstream.FileStorage, MaxAge: 5 * time.Minute, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	log := ownership.NewIntentLog(js, "intents.1")
	const writers, each = 8, 40
	concurrently(t, writers, each, func(i int) error { return log.Append(ctx, intent(i)) })

	const bound = 20 * time.Second
	for round := range 3 {
		leader, err := c.LeaderOf(ctx, "INTENTS")
		if err != nil {
			t.Fatal(err)
		}
		c.Kill(leader)
		lost := time.Now()
		if round%2 == 1 {
			c.Start(leader) // back at once: the read meets a catching-up node
		}
		attempts := 0
		for {
			attempts++
			actx, acancel := context.WithTimeout(ctx, time.Minute)
			ins, bad, err := ownership.ReadIntents(actx, js, "INTENTS", "intents.1", time.Time{})
			waited := actx.Err() != nil
			acancel()
			if err == nil {
				if bad != 0 || len(ins) != writers*each {
					t.Fatalf("round %d: %d intents and %d bad batches, want %d and none", round, len(ins), bad, writers*each)
				}
				break
			}
			if waited {
				t.Fatalf("round %d: a read waited out its context: %v", round, err)
			}
			if time.Since(lost) > bound {
				t.Fatalf("round %d: no complete read within %v of the node's loss (%d attempts, last: %v)", round, bound, attempts, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("round %d: all %d intents read %v after the leader was killed, attempt %d", round, writers*each,
			time.Since(lost).Round(10*time.Millisecond), attempts)
		if !c.Running(leader) {
			c.Start(leader)
		}
		hctx, hcancel := context.WithTimeout(ctx, time.Minute)
		if err := c.WaitHealthy(hctx); err != nil {
			t.Fatal(err)
		}
		hcancel()
	}
}

// TestClampIntents: an intent whose deadline lies further ahead than the
// bound given (the reader's time plus one lease TTL) is cut to it; the
// others are left as they are.
func TestClampIntents(t *testing.T) {
	now := time.Now()
	latest := now.Add(15 * time.Second)
	ins := []ownership.Intent{
		{Key: "t.a", EventID: "a", Generation: 1, Until: now.Add(time.Second)},
		{Key: "t.b", EventID: "b", Generation: 1, Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Key: "t.c", EventID: "c", Generation: 1, Until: latest},
	}
	if n := ownership.ClampIntents(ins, latest); n != 1 {
		t.Fatalf("clamped %d, want 1", n)
	}
	if !ins[0].Until.Equal(now.Add(time.Second)) || !ins[1].Until.Equal(latest) || !ins[2].Until.Equal(latest) {
		t.Errorf("deadlines after the clamp: %v %v %v", ins[0].Until, ins[1].Until, ins[2].Until)
	}
}
