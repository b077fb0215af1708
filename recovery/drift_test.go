package recovery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

const sentinel = "sk-DRIFT-SENTINEL-91c2"

// pipeline is a real nats-server, the topology, one worker and an
// in-memory local store registered as the "local" backend.
type pipeline struct {
	ctx   context.Context
	js    jetstream.JetStream
	kr    *events.Keyring
	cfg   *settings.Config
	reg   *providers.Registry
	store *local.Provider
	// store2 is a second in-memory store registered as "hashicorp_vault",
	// the target of migration tests.
	store2 *local.Provider
	js2    jetstream.KeyValue
	ledger *worker.Ledger
	teams  *worker.Teams
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	_, js := testenv.StartJetStream(t)
	topo := worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute, AckWait: 5 * time.Second, MaxAckPending: 1024}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	kr, err := events.NewKeyring("d1", map[string][]byte{"d1": bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := providers.NewRegistry()
	reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return store, nil })
	store2, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg.Register(moveTarget, func(context.Context, providers.Config) (providers.Provider, error) { return store2, nil })
	cfg := settings.Default()
	w, err := worker.New(ctx, worker.Config{Concurrency: 8, AckWait: topo.AckWait, CallTimeout: time.Second, ClaimLease: 3 * time.Second},
		worker.Deps{JS: js, Settings: cfg, Registry: reg, Opener: kr})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	rkv, _ := js.KeyValue(ctx, worker.RecoveryBucket)
	return &pipeline{ctx: ctx, js: js, kr: kr, cfg: cfg, reg: reg, store: store, store2: store2, js2: rkv, ledger: worker.NewLedger(lkv, js.Conn()), teams: w.Teams()}
}

func (p *pipeline) publish(t *testing.T, evs ...*events.Event) {
	t.Helper()
	pub := client.NewPublisher(p.js)
	for _, ev := range evs {
		if _, err := pub.Publish(p.ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := p.js.Stream(p.ctx, worker.ConfirmationsStream)
	for _, ev := range evs {
		subj := events.ConfirmationSubject(ev.TeamID, ev.KeyID, ev.ID)
		for {
			if _, err := s.GetLastMsgForSubject(p.ctx, subj); err == nil {
				break
			}
			if p.ctx.Err() != nil {
				t.Fatalf("no confirmation for %s/%s", ev.TeamID, ev.KeyID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The worker commits the ledger and publishes the confirmation at the
	// same time: wait for the commit too (the event's claim gone from the
	// key's entry), or a test reading the ledger next can miss a new key.
	for _, ev := range evs {
		if ev.KeyID == "" {
			continue
		}
		for {
			e, _, err := p.ledger.Get(p.ctx, ev.TeamID, ev.KeyID)
			if err == nil && (e == nil || e.Claim == nil || e.Claim.EventID != ev.ID) {
				break
			}
			if p.ctx.Err() != nil {
				t.Fatalf("the ledger never committed %s/%s", ev.TeamID, ev.KeyID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (p *pipeline) event(t *testing.T, typ events.Type, team, key string, gen uint64, value string) *events.Event {
	t.Helper()
	ev, err := events.NewKeyEvent(p.ctx, p.kr, typ, team, key, gen, []byte(value), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (p *pipeline) deps() recovery.Deps {
	return recovery.Deps{Ledger: p.ledger, Settings: p.cfg, Registry: p.reg, Opener: p.kr,
		TeamSettings: func(team string) *events.TeamSettings { return p.teams.Cached(team).Settings }}
}

func (p *pipeline) drift(t *testing.T, c recovery.Config) *recovery.Report {
	t.Helper()
	rep, err := recovery.Drift(p.ctx, p.deps(), c)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func secretName(team, key string) string { return "litellm/" + team + "/" + key }

// TestDriftFindsHandEdits: keys written through the pipeline, then changed,
// deleted and planted directly in the backend. Drift finds exactly those,
// classified, and never shows a value.
func TestDriftFindsHandEdits(t *testing.T) {
	p := newPipeline(t)
	var evs []*events.Event
	for i := 0; i < 40; i++ {
		evs = append(evs, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, sentinel+fmt.Sprint(i)))
	}
	for i := 0; i < 5; i++ {
		evs = append(evs, p.event(t, events.KeyCreated, "team-b", fmt.Sprintf("key-%02d", i), 1, sentinel))
	}
	p.publish(t, evs...)
	var dels []*events.Event
	for i := 37; i < 40; i++ {
		dels = append(dels, p.event(t, events.KeyDeleted, "team-a", fmt.Sprintf("key-%02d", i), 2, ""))
	}
	p.publish(t, dels...)
	if rep := p.drift(t, recovery.Config{All: true}); rep.Drifted() != 0 || rep.Errors() != 0 {
		t.Fatalf("drift before any edit: %+v", rep.Rows)
	}

	ctx, s := p.ctx, p.store
	owner := func(k string) providers.Owner { return providers.Owner{TeamID: "team-a", KeyID: k} }
	put := func(name string, o providers.Owner, v string) {
		if _, err := s.Put(ctx, providers.PutRequest{Name: name, Value: []byte(v), IdempotencyKey: "hand-" + name + v, Owner: o, Adopt: true}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]recovery.Status{}
	for _, k := range []string{"key-00", "key-01", "key-02", "key-03"} { // changed by hand
		put(secretName("team-a", k), owner(k), sentinel+"-edited")
		want[k] = recovery.StatusStale
	}
	for _, k := range []string{"key-04", "key-05", "key-06"} { // deleted by hand
		if err := s.Delete(ctx, providers.DeleteRequest{Name: secretName("team-a", k), Owner: owner(k), Force: true}); err != nil {
			t.Fatal(err)
		}
		want[k] = recovery.StatusMissing
	}
	for _, k := range []string{"key-07", "key-08"} { // another key's secret under this name
		put(secretName("team-a", k), owner("key-99"), sentinel)
		want[k] = recovery.StatusUnowned
	}
	for _, k := range []string{"key-37", "key-38"} { // deleted in the ledger, back in the backend
		put(secretName("team-a", k), owner(k), sentinel)
		want[k] = recovery.StatusResurrected
	}
	put(secretName("team-a", "ghost"), owner("ghost"), sentinel) // owned, no ledger entry
	want["ghost"] = recovery.StatusOrphan

	rep := p.drift(t, recovery.Config{Teams: []string{"team-a"}})
	got := map[string]recovery.Status{}
	for _, r := range rep.Rows {
		if r.Team != "team-a" {
			t.Errorf("row of a team out of scope: %+v", r)
		}
		if r.Status != recovery.StatusOK {
			got[r.Key] = r.Status
		}
	}
	for k, st := range want {
		if got[k] != st {
			t.Errorf("%s: %q, want %q", k, got[k], st)
		}
	}
	for k, st := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %q, but nothing was changed", k, st)
		}
	}
	if rep.Drifted() != len(want) || rep.Errors() != 0 {
		t.Errorf("%d drifted, %d errors; want %d, 0", rep.Drifted(), rep.Errors(), len(want))
	}
	if len(rep.Summary) != 1 || rep.Summary[0].Counts[recovery.StatusOK] != 40-len(want)+1 {
		t.Errorf("summary: %+v", rep.Summary)
	}
	b, _ := json.Marshal(rep)
	if strings.Contains(string(b), "SENTINEL") {
		t.Fatal("the report carries a value")
	}
	// Scope: another team is clean; another backend has nothing.
	if r := p.drift(t, recovery.Config{Teams: []string{"team-b"}}); r.Drifted() != 0 || len(r.Rows) != 5 {
		t.Errorf("team-b: %+v", r.Rows)
	}
	if r := p.drift(t, recovery.Config{All: true, Backend: "hashicorp_vault"}); len(r.Rows) != 0 {
		t.Errorf("--backend hashicorp_vault: %+v", r.Rows)
	}
}

// countingGets counts the reads made through it; List reaches the store
// beneath through Unwrap.
type countingGets struct {
	providers.Provider
	gets atomic.Int64
}

func (c *countingGets) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	c.gets.Add(1)
	return c.Provider.Get(ctx, name, version)
}

func (c *countingGets) Unwrap() providers.Provider { return c.Provider }

// TestDriftTellsMissingKeysFromAListing: a team folder holding many keys
// is listed once (every name, whoever owns it); the keys it does not show
// are missing without a read, the others are read and classified as
// always, a foreign secret under a key's name included.
func TestDriftTellsMissingKeysFromAListing(t *testing.T) {
	p := newPipeline(t)
	const n = 30
	var evs []*events.Event
	for i := 0; i < n; i++ {
		evs = append(evs, p.event(t, events.KeyCreated, "team-l", fmt.Sprintf("key-%02d", i), 1, sentinel))
	}
	p.publish(t, evs...)
	for i := 0; i < 20; i++ {
		k := fmt.Sprintf("key-%02d", i)
		if err := p.store.Delete(p.ctx, providers.DeleteRequest{Name: secretName("team-l", k), Owner: providers.Owner{TeamID: "team-l", KeyID: k}, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	// A foreign secret under a deleted key's name: listed, so read.
	if _, err := p.store.Put(p.ctx, providers.PutRequest{Name: secretName("team-l", "key-00"), Value: []byte(sentinel), IdempotencyKey: "foreign",
		Owner: providers.Owner{TeamID: "someone-else", KeyID: "x"}}); err != nil {
		t.Fatal(err)
	}
	counted := &countingGets{Provider: p.store}
	reg := providers.NewRegistry()
	reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return counted, nil })
	d := p.deps()
	d.Registry = reg
	rep, err := recovery.Drift(p.ctx, d, recovery.Config{Teams: []string{"team-l"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[recovery.Status]int{}
	for _, r := range rep.Rows {
		got[r.Status]++
	}
	want := map[recovery.Status]int{recovery.StatusMissing: 19, recovery.StatusUnowned: 1, recovery.StatusOK: 10}
	if !maps.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if g := counted.gets.Load(); g != 11 {
		t.Errorf("%d reads, want 11: the 10 listed keys and the foreign secret, none for the 19 missing", g)
	}
}
