package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/providers"
)

// scenario is the end-to-end load every backend runs: three `keyrelay
// serve` processes share the work; fresh generations of every key are
// published (shuffled per generation); one worker is SIGKILLed once a
// third is confirmed and restarted; after the dedupe window, exact
// duplicates (same id, same bytes) and older generations under new ids are
// published.
type scenario struct {
	keys, teams int
	// fresh generations per key: key.created then key.rotated.
	fresh     uint64
	dupWindow time.Duration
	seed      uint64
	// teamPrefix makes team ids unique where a backend's store outlives the
	// test (kumo keeps one store per test binary).
	teamPrefix string
}

func (sc scenario) teamOf(k int) string { return fmt.Sprintf("%steam-%d", sc.teamPrefix, k%sc.teams) }
func (sc scenario) keyOf(k int) string  { return fmt.Sprintf("key-%04d", k) }

// secretName is the default template's name for key k.
func (sc scenario) secretName(k int) string { return "litellm/" + sc.teamOf(k) + "/" + sc.keyOf(k) }

// outcome is what a scenario published and what came back.
type outcome struct {
	// events holds every distinct event id published.
	events    map[string]*events.Event
	stale     int
	total     int // messages published, duplicates included
	elapsed   time.Duration
	confs     []*events.Confirmation
	confByID  map[string]*events.Confirmation
	statuses  map[events.Status]int
	eventsOf  map[string][]*events.Event // "team/key" -> its events
	notOnce   int                        // ids without exactly one confirmation
	missing   int
	confCount int
	// reader is a serve process that stayed up: lookups are read from it.
	reader *proc
}

// run plays the scenario against e and checks what every backend must
// give: one confirmation per event id, none failed or rejected, and the
// stale events mostly superseded.
func (sc scenario) run(ctx context.Context, t *testing.T, e *env) *outcome {
	t.Helper()
	out := &outcome{events: map[string]*events.Event{}, eventsOf: map[string][]*events.Event{}}
	teams := make([]string, sc.teams)
	for i := range teams {
		teams[i] = sc.teamOf(i)
	}
	e.setLookupTeams(teams)
	w := []*proc{e.startWorker("w1"), e.startWorker("w2"), e.startWorker("w3")}
	out.reader = w[0]
	pub := client.NewPublisher(e.js)
	rng := rand.New(rand.NewPCG(sc.seed, sc.seed+1))
	mk := func(k int, gen uint64) *events.Event {
		typ := events.KeyRotated
		if gen == 1 {
			typ = events.KeyCreated
		}
		team, key := sc.teamOf(k), sc.keyOf(k)
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key, gen, []byte(value(team, key, gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		out.events[ev.ID] = ev
		out.eventsOf[team+"/"+key] = append(out.eventsOf[team+"/"+key], ev)
		return ev
	}
	publishAll := func(evs []*events.Event) {
		if err := publishAll(ctx, pub, evs); err != nil {
			t.Fatal(err)
		}
		out.total += len(evs)
	}

	var fresh []*events.Event
	for g := uint64(1); g <= sc.fresh; g++ {
		for _, k := range rng.Perm(sc.keys) {
			fresh = append(fresh, mk(k, g))
		}
	}
	start := time.Now()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for {
			s, err := e.js.Stream(ctx, "KEYRELAY_CONFIRMATIONS")
			if err == nil {
				if info, err := s.Info(ctx); err == nil && info.State.Msgs >= uint64(len(fresh)/3) {
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
		time.Sleep(500 * time.Millisecond)
		w[1] = e.startWorker("w2-restarted")
		t.Logf("restarted w2 at %v", time.Since(start).Round(time.Millisecond))
	}()
	publishAll(fresh)

	// After the dedupe window the server stores exact duplicates again.
	time.Sleep(sc.dupWindow + 500*time.Millisecond)
	for i := 0; i < sc.keys; i++ {
		orig := fresh[rng.IntN(len(fresh))]
		raw, _ := json.Marshal(orig)
		m := &nats.Msg{Subject: orig.Subject(), Data: raw, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, orig.ID)
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		out.total++
	}
	// Older generations under new ids: never newer than what is stored.
	var stale []*events.Event
	for i := 0; i < sc.keys; i++ {
		ev := mk(rng.IntN(sc.keys), uint64(1+rng.IntN(int(sc.fresh-1))))
		delete(out.events, ev.ID)
		ev.ID = uuid.NewString() // the binding does not cover the id: the value still opens
		out.events[ev.ID] = ev
		stale = append(stale, ev)
	}
	out.stale = len(stale)
	publishAll(stale)

	<-killed
	distinct := len(fresh) + len(stale)
	e.waitQuiet(ctx, distinct, 5*time.Minute)
	out.elapsed = time.Since(start)

	out.confs = e.confirmations(ctx)
	out.confByID = map[string]*events.Confirmation{}
	out.statuses = map[events.Status]int{}
	count := map[string]int{}
	for _, c := range out.confs {
		count[c.EventID]++
		out.confByID[c.EventID] = c
		out.statuses[c.Status]++
	}
	for _, ev := range append(fresh, stale...) {
		switch count[ev.ID] {
		case 0:
			out.missing++
		case 1:
		default:
			out.notOnce++
		}
	}
	if len(out.confs) != distinct || out.notOnce != 0 || out.missing != 0 {
		t.Errorf("confirmations: %d for %d distinct ids (%d ids not exactly once, %d missing)", len(out.confs), distinct, out.notOnce, out.missing)
	}
	if out.statuses[events.StatusFailed] != 0 || out.statuses[events.StatusRejected] != 0 {
		t.Errorf("unexpected failures: %v", out.statuses)
	}
	if out.statuses[events.StatusSuperseded] < len(stale)/2 {
		t.Errorf("only %d superseded confirmations for %d stale events", out.statuses[events.StatusSuperseded], len(stale))
	}
	return out
}

// backendCheck reads a backend back after a scenario.
type backendCheck struct {
	store interface {
		providers.Provider
		providers.Versioner
	}
	// eventOf maps a version to the id of the event that wrote it ("" when
	// the backend has no record). Default: VersionInfo.IdempotencyKey.
	eventOf func(name string, v providers.VersionInfo) string
}

// backendResult counts what check found.
type backendResult struct {
	wrong, extra, versions, writtenThenSuperseded, unrecorded int
}

// check verifies every key: the current value is its newest generation's,
// the secret is owned by the key, every version was written by exactly one
// event of that key (none twice), and every stored or rotated confirmation
// names a version holding that event's value.
func (sc scenario) check(ctx context.Context, t *testing.T, out *outcome, b backendCheck) backendResult {
	t.Helper()
	if b.eventOf == nil {
		b.eventOf = func(_ string, v providers.VersionInfo) string { return v.IdempotencyKey }
	}
	var r backendResult
	for k := 0; k < sc.keys; k++ {
		team, key, name := sc.teamOf(k), sc.keyOf(k), sc.secretName(k)
		cur, err := b.store.Get(ctx, name, "")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			r.wrong++
			continue
		}
		if string(cur.Value) != value(team, key, sc.fresh) {
			r.wrong++
			t.Errorf("%s: current version %s holds %q, want generation %d", name, cur.Version, cur.Value, sc.fresh)
		}
		if !providers.IsOwnedBy(cur.Tags, providers.Owner{TeamID: team, KeyID: key}) {
			t.Errorf("%s: not owned by its key: tags %v", name, cur.Tags)
		}
		vs, err := b.store.Versions(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		r.versions += len(vs)
		writer := map[string]string{} // event id -> version
		have := map[string]bool{}
		for _, v := range vs {
			have[v.Version] = true
			id := b.eventOf(name, v)
			ev := out.events[id]
			switch {
			case id == "":
				// Written by a worker killed before it recorded the event,
				// then overwritten by a newer generation before the
				// redelivery could record it (the current value is checked
				// above).
				r.unrecorded++
				if r.unrecorded <= 5 {
					t.Logf("%s: version %s has no recorded event", name, v.Version)
				}
			case writer[id] != "":
				r.extra++
				t.Errorf("%s: event %s wrote versions %s and %s", name, id, writer[id], v.Version)
			case ev == nil || ev.TeamID != team || ev.KeyID != key:
				r.extra++
				t.Errorf("%s: version %s from unknown event %q", name, v.Version, id)
			case out.confByID[id] != nil && out.confByID[id].Status == events.StatusSuperseded:
				// Killed after the write and before the ledger commit, the
				// key then taken over by a newer generation.
				r.writtenThenSuperseded++
			}
			if id != "" {
				writer[id] = v.Version
			}
		}
		for _, ev := range out.eventsOf[team+"/"+key] {
			c := out.confByID[ev.ID]
			if c == nil || (c.Status != events.StatusStored && c.Status != events.StatusRotated) {
				continue
			}
			if !have[c.ProviderVersion] {
				r.extra++
				t.Errorf("%s: confirmation of %s names version %q, which does not exist", name, ev.ID, c.ProviderVersion)
				continue
			}
			s, err := b.store.Get(ctx, name, c.ProviderVersion)
			if err != nil || string(s.Value) != value(team, key, ev.Generation) {
				t.Errorf("%s: version %s should hold generation %d: %v", name, c.ProviderVersion, ev.Generation, err)
			}
		}
	}
	if r.wrong != 0 || r.extra != 0 {
		t.Errorf("%d keys with a value other than the newest, %d extra versions", r.wrong, r.extra)
	}
	return r
}

// report prints a scenario's counts (go test -v shows them in CI).
func (sc scenario) report(t *testing.T, backend string, out *outcome, r backendResult) {
	t.Logf("RESULT backend=%s events_published=%d distinct_ids=%d confirmations=%d ids_not_exactly_once=%d missing=%d "+
		"keys=%d wrong_value=%d extra_versions=%d provider_versions=%d written_then_superseded=%d unrecorded=%d elapsed=%v rate=%.0f events/s statuses=%v",
		backend, out.total, len(out.events), len(out.confs), out.notOnce, out.missing, sc.keys, r.wrong, r.extra, r.versions,
		r.writtenThenSuperseded, r.unrecorded, out.elapsed.Round(time.Millisecond), float64(out.total)/out.elapsed.Seconds(), out.statuses)
	fmt.Printf("e2e %s: published=%d distinct_ids=%d confirmations=%d wrong_value=%d extra_versions=%d ids_not_exactly_once=%d missing=%d statuses=%v\n",
		backend, out.total, len(out.events), len(out.confs), r.wrong, r.extra, out.notOnce, out.missing, out.statuses)
}

// checkLookups reads every key back through the lookup API of a serve
// process, with its team's token, and expects the newest value: the same
// answer the backend check found, now through the cache path (ledger,
// the team's provider, ownership tags).
func (sc scenario) checkLookups(ctx context.Context, t *testing.T, out *outcome) {
	t.Helper()
	base := "http://127.0.0.1:" + strconv.Itoa(out.reader.lookupPort)
	wrong, failed := 0, 0
	for k := 0; k < sc.keys; k++ {
		team, key := sc.teamOf(k), sc.keyOf(k)
		c := &lookupclient.HTTP{BaseURL: base, Token: lookupToken(team)}
		s, err := c.Get(ctx, key)
		switch {
		case err != nil:
			failed++
			if failed <= 3 {
				t.Errorf("lookup %s/%s: %v", team, key, err)
			}
		case s.Value != value(team, key, sc.fresh):
			wrong++
			if wrong <= 3 {
				t.Errorf("lookup %s/%s: not the newest value (version %s)", team, key, s.Version)
			}
		}
	}
	// Another team's token never reads the key.
	if sc.teams > 1 {
		c := &lookupclient.HTTP{BaseURL: base, Token: lookupToken(sc.teamOf(1))}
		if _, err := c.Get(ctx, sc.keyOf(0)); !errors.Is(err, lookupclient.ErrNotFound) {
			t.Errorf("team %s read team %s's key: %v", sc.teamOf(1), sc.teamOf(0), err)
		}
	}
	t.Logf("LOOKUPS keys=%d newest_value=%d wrong_value=%d failed=%d", sc.keys, sc.keys-wrong-failed, wrong, failed)
	fmt.Printf("e2e lookups: keys=%d newest_value=%d wrong_value=%d failed=%d\n", sc.keys, sc.keys-wrong-failed, wrong, failed)
}
