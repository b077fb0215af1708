package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers/local"
)

func value(team, key string, gen uint64) string { return fmt.Sprintf("sk-%s-%s-g%d", team, key, gen) }

// TestPipelineThreeWorkersKill is the core end-to-end proof: three worker
// processes share one consumer; 10,000 events over 1,000 keys, including
// exact duplicates published again after the dedupe window and older
// generations re-published under new ids; one worker is killed with
// SIGKILL midway and restarted. Afterwards every key holds its newest
// value, no key has an extra provider version, and every event id has
// exactly one confirmation.
func TestPipelineThreeWorkersKill(t *testing.T) {
	const (
		keys      = 1000
		fresh     = 8 // per key: key.created then 7 key.rotated
		dupWindow = 2 * time.Second
	)
	e := newEnv(t, envOptions{dupWindow: dupWindow})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	w := []*proc{e.startWorker("w1"), e.startWorker("w2"), e.startWorker("w3")}

	pub := client.NewPublisher(e.js)
	rng := rand.New(rand.NewPCG(1, 2))
	type sent struct {
		ev  *events.Event
		raw []byte
	}
	var published []sent
	publishAll := func(evs []*events.Event) {
		futs := make([]jetstream.PubAckFuture, 0, len(evs))
		for _, ev := range evs {
			f, err := pub.PublishAsync(ev)
			if err != nil {
				t.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish: %v", err)
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
	mk := func(team, key string, gen uint64) *events.Event {
		typ := events.KeyRotated
		if gen == 1 {
			typ = events.KeyCreated
		}
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key, gen, []byte(value(team, key, gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	teamOf := func(k int) string { return fmt.Sprintf("team-%d", k%10) }
	keyOf := func(k int) string { return fmt.Sprintf("key-%04d", k) }

	// Phase 1: the fresh events, generation by generation, keys shuffled.
	var phase1 []*events.Event
	for g := uint64(1); g <= fresh; g++ {
		for _, k := range rng.Perm(keys) {
			ev := mk(teamOf(k), keyOf(k), g)
			phase1 = append(phase1, ev)
			b, _ := json.Marshal(ev)
			published = append(published, sent{ev, b})
		}
	}
	start := time.Now()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		// Kill w2 once about a third of the work is confirmed.
		for {
			s, err := e.js.Stream(ctx, "KEYRELAY_CONFIRMATIONS")
			if err == nil {
				if info, err := s.Info(ctx); err == nil && info.State.Msgs >= keys*fresh/3 {
					break
				}
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		w[1].stop(syscall.SIGKILL)
		t.Logf("SIGKILLed w2 at %v", time.Since(start).Round(time.Millisecond))
		time.Sleep(time.Second)
		w[1] = e.startWorker("w2-restarted")
		t.Logf("restarted w2 at %v", time.Since(start).Round(time.Millisecond))
	}()
	publishAll(phase1)
	t.Logf("phase 1: published %d events in %v", len(phase1), time.Since(start).Round(time.Millisecond))

	// Phase 2, after the dedupe window: 1,000 exact duplicates (same id,
	// same bytes, so the server no longer drops them) and 1,000 older
	// generations under new ids.
	time.Sleep(dupWindow + 500*time.Millisecond)
	var exactDups, stale int
	for i := 0; i < keys; i++ {
		orig := published[rng.IntN(len(published))]
		m := &nats.Msg{Subject: orig.ev.Subject(), Data: orig.raw, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, orig.ev.ID)
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		exactDups++
	}
	var phase2 []*events.Event
	for i := 0; i < keys; i++ {
		k := rng.IntN(keys)
		g := uint64(1 + rng.IntN(fresh-1)) // 1..fresh-1: always older than the newest
		ev := mk(teamOf(k), keyOf(k), g)
		ev.ID = uuid.NewString() // a new id for old content
		// Re-seal: the binding does not include the id, so the value opens.
		phase2 = append(phase2, ev)
		stale++
	}
	publishAll(phase2)
	total := len(phase1) + exactDups + stale
	distinct := len(phase1) + stale
	t.Logf("published %d events (%d fresh, %d exact duplicates after the window, %d stale re-publications); %d distinct ids",
		total, len(phase1), exactDups, stale, distinct)

	<-killed
	e.waitQuiet(ctx, distinct, 5*time.Minute)
	elapsed := time.Since(start)

	// Every event id has exactly one confirmation.
	confs := e.confirmations(ctx)
	byID := map[string]int{}
	statuses := map[events.Status]int{}
	writes := map[string]int{} // team/key -> stored+rotated confirmations
	for _, c := range confs {
		byID[c.EventID]++
		statuses[c.Status]++
		if c.Status == events.StatusStored || c.Status == events.StatusRotated {
			writes[c.TeamID+"/"+c.KeyID]++
		}
	}
	multi := 0
	for _, n := range byID {
		if n != 1 {
			multi++
		}
	}
	missing := 0
	for _, s := range published {
		if byID[s.ev.ID] == 0 {
			missing++
		}
	}
	for _, ev := range phase2 {
		if byID[ev.ID] == 0 {
			missing++
		}
	}

	// Every key's stored value is its newest; no extra provider version.
	store, err := local.New(local.Config{Path: e.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// The invariants: every version was written by exactly one event of
	// that key (no event wrote twice), and every stored/rotated
	// confirmation names a version that exists. A version may also come
	// from an event confirmed superseded: its worker was killed between
	// the provider write and the ledger commit, and a newer generation was
	// applied before the redelivery; the newest value still wins.
	keyOfEvent := map[string]string{}
	for _, s := range published {
		keyOfEvent[s.ev.ID] = s.ev.TeamID + "/" + s.ev.KeyID
	}
	for _, ev := range phase2 {
		keyOfEvent[ev.ID] = ev.TeamID + "/" + ev.KeyID
	}
	confByID := map[string]*events.Confirmation{}
	for _, c := range confs {
		confByID[c.EventID] = c
	}
	wrong, extra, writtenThenSuperseded := 0, 0, 0
	versionsTotal := 0
	for k := 0; k < keys; k++ {
		team, key := teamOf(k), keyOf(k)
		name := "litellm/" + team + "/" + key
		sec, err := store.Get(ctx, name, "")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			wrong++
			continue
		}
		if string(sec.Value) != value(team, key, fresh) {
			wrong++
		}
		vs, err := store.Versions(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		versionsTotal += len(vs)
		seen := map[string]bool{}
		have := map[string]bool{}
		for _, v := range vs {
			have[v.Version] = true
			c := confByID[v.IdempotencyKey]
			switch {
			case seen[v.IdempotencyKey]:
				extra++
				t.Errorf("%s: event %s wrote two versions", name, v.IdempotencyKey)
			case keyOfEvent[v.IdempotencyKey] != team+"/"+key:
				extra++
				t.Errorf("%s: version %s from unknown event %q", name, v.Version, v.IdempotencyKey)
			case c != nil && c.Status == events.StatusSuperseded:
				writtenThenSuperseded++
			}
			seen[v.IdempotencyKey] = true
		}
		if len(vs) > fresh+len(phase2) {
			extra++
		}
		_ = writes
		for id, tk := range keyOfEvent {
			if tk != team+"/"+key {
				continue
			}
			if c := confByID[id]; c != nil && (c.Status == events.StatusStored || c.Status == events.StatusRotated) && !have[c.ProviderVersion] {
				extra++
				t.Errorf("%s: confirmation of %s names version %s, which does not exist", name, id, c.ProviderVersion)
			}
		}
	}

	t.Logf("RESULT events_published=%d distinct_ids=%d confirmations=%d ids_with_other_than_one=%d missing=%d "+
		"keys=%d wrong_value=%d extra_versions=%d provider_versions=%d written_then_superseded=%d elapsed=%v rate=%.0f events/s statuses=%v",
		total, distinct, len(confs), multi, missing, keys, wrong, extra, versionsTotal, writtenThenSuperseded,
		elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), statuses)
	fmt.Printf("e2e: published=%d distinct_ids=%d confirmations=%d wrong_value=%d extra_versions=%d ids_not_exactly_once=%d missing=%d statuses=%v\n",
		total, distinct, len(confs), wrong, extra, multi, missing, statuses)

	if len(confs) != distinct || multi != 0 || missing != 0 {
		t.Errorf("confirmations: got %d for %d distinct ids (%d ids not exactly once, %d missing)", len(confs), distinct, multi, missing)
	}
	if wrong != 0 || extra != 0 {
		t.Errorf("%d keys with a value other than the newest, %d with extra versions", wrong, extra)
	}
	if statuses[events.StatusFailed] != 0 || statuses[events.StatusRejected] != 0 {
		t.Errorf("unexpected failures: %v", statuses)
	}
	if statuses[events.StatusSuperseded] < stale/2 {
		t.Errorf("only %d superseded confirmations for %d stale events", statuses[events.StatusSuperseded], stale)
	}
}
