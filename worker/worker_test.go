package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/providertest"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

func name(team, key string) string { return "litellm/" + team + "/" + key }

func TestCreateRotateDeleteConfirmed(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	c1 := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-one")
	r2 := b.keyEvent(events.KeyRotated, "team-a", "key-1", 2, "sk-two")
	b.publish(c1) // one at a time: handled together, generation 1 may be superseded
	b.confirmations(1, 20*time.Second)
	b.publish(r2)
	cs := byEventID(b.confirmations(2, 20*time.Second))
	if cs[c1.ID].Status != events.StatusStored || cs[r2.ID].Status != events.StatusRotated {
		t.Fatalf("statuses: %s, %s", cs[c1.ID].Status, cs[r2.ID].Status)
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-two" {
		t.Fatalf("value %q, want sk-two", got)
	}
	if cs[r2.ID].ProviderVersion == "" || cs[r2.ID].SecretRef != name("team-a", "key-1") || cs[r2.ID].Provider != "local" {
		t.Fatalf("confirmation lacks provider details: %+v", cs[r2.ID])
	}
	// The previous value stays readable (rotation grace).
	prev, err := b.stores["local"].Get(b.ctx, name("team-a", "key-1"), cs[c1.ID].ProviderVersion)
	if err != nil || string(prev.Value) != "sk-one" {
		t.Fatalf("previous version: %v", err)
	}
	d3 := b.keyEvent(events.KeyDeleted, "team-a", "key-1", 3, "")
	stale := b.keyEvent(events.KeyCreated, "team-a", "key-1", 2, "sk-stale") // older than the delete
	b.publish(d3, stale)
	cs = byEventID(b.confirmations(4, 20*time.Second))
	if cs[d3.ID].Status != events.StatusDeleted {
		t.Fatalf("delete: %+v", cs[d3.ID])
	}
	if cs[stale.ID].Status != events.StatusSuperseded {
		t.Fatalf("stale create after delete: %+v", cs[stale.ID])
	}
	if _, err := b.stores["local"].Get(b.ctx, name("team-a", "key-1"), ""); err == nil {
		t.Fatal("a stale create resurrected a deleted key")
	}
}

func TestRedeliveredAndRepublishedEventsWriteOnce(t *testing.T) {
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.DuplicateWindow = time.Second }})
	b.startWorker(nil)
	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 5, "sk-v5")
	b.publish(ev)
	b.confirmations(1, 20*time.Second)
	time.Sleep(1200 * time.Millisecond) // past the dedupe window: the server stores it again
	b.publish(ev)
	older := b.keyEvent(events.KeyRotated, "team-a", "key-1", 4, "sk-v4")
	b.publish(older)
	cs := b.confirmations(2, 20*time.Second)
	// Let the duplicate be handled too.
	waitFor(t, func() bool { return consumerIdle(b) })
	cs = b.confirmations(2, time.Second)
	if len(cs) != 2 {
		t.Fatalf("%d confirmations, want exactly 2 (one per event id)", len(cs))
	}
	vs, err := b.stores["local"].Versions(b.ctx, name("team-a", "key-1"))
	if err != nil || len(vs) != 1 {
		t.Fatalf("versions %v %v, want exactly one", vs, err)
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-v5" {
		t.Fatalf("value %q: an older generation overwrote a newer one", got)
	}
	if c := byEventID(cs)[older.ID]; c.Status != events.StatusSuperseded {
		t.Fatalf("older event: %+v", c)
	}
}

func consumerIdle(b *bundle) bool {
	cons, err := b.js.Consumer(b.ctx, worker.EventsStream, worker.ConsumerName)
	if err != nil {
		return false
	}
	info, err := cons.Info(b.ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFaultInjection: 30% of provider calls fail with retryable errors (some
// throttled with a retry hint, some after the write committed), and keys
// named perm-* fail permanently. Every retryable event ends stored; every
// permanent one ends in the DLQ with a reason and a failed confirmation.
func TestFaultInjection(t *testing.T) {
	var faulty *providertest.Faulty
	b := setup(t, setupOptions{
		wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
			faulty = providertest.NewFaulty(p, providertest.FaultConfig{
				Seed: 42, RetryableRate: 0.30, ThrottledFraction: 0.3, RetryAfter: 20 * time.Millisecond, FailAfterCommitRate: 0.05,
				Permanent: func(name string) bool { return strings.Contains(name, "/perm-") },
			})
			return faulty
		}},
		topo: func(c *worker.TopologyConfig) { c.MaxDeliver = 10 },
	})
	b.startWorker(func(c *worker.Config) { c.MaxDeliver = 10 })
	b.startWorker(func(c *worker.Config) { c.MaxDeliver = 10 })
	var evs []*events.Event
	for i := 0; i < 200; i++ {
		key := fmt.Sprintf("key-%03d", i)
		if i%20 == 0 {
			key = fmt.Sprintf("perm-%03d", i)
		}
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-f", key, 1, "sk-"+key))
	}
	b.publish(evs...)
	cs := byEventID(b.confirmations(len(evs), 60*time.Second))
	stored, failed := 0, 0
	for _, ev := range evs {
		c := cs[ev.ID]
		if strings.HasPrefix(ev.KeyID, "perm-") {
			if c.Status != events.StatusFailed || c.Reason == "" {
				t.Errorf("%s: %+v, want failed with a reason", ev.KeyID, c)
			}
			failed++
			continue
		}
		if c.Status != events.StatusStored {
			t.Errorf("%s: %s (%s), want stored", ev.KeyID, c.Status, c.Reason)
		}
		if got := b.value("local", name("team-f", ev.KeyID)); got != "sk-"+ev.KeyID {
			t.Errorf("%s holds %q", ev.KeyID, got)
		}
		vs, _ := b.stores["local"].Versions(b.ctx, name("team-f", ev.KeyID))
		if len(vs) != 1 {
			t.Errorf("%s: %d versions (a retry after a lost response wrote twice)", ev.KeyID, len(vs))
		}
		stored++
	}
	dlq, err := worker.ListDeadLetters(b.ctx, b.js, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dlq) != failed {
		t.Fatalf("%d dead letters, want %d", len(dlq), failed)
	}
	for _, d := range dlq {
		if d.Reason == "" || d.Status != events.StatusFailed || d.EventID == "" || len(d.Data) == 0 {
			t.Errorf("dead letter lacks detail: %+v", d)
		}
	}
	st := faulty.Stats()
	t.Logf("stored=%d failed=%d provider calls=%+v retries=%v", stored, failed, st,
		testutil.ToFloat64(b.metrics.Retries.WithLabelValues("in_process"))+testutil.ToFloat64(b.metrics.Retries.WithLabelValues("redelivery")))
	if st.Retryable+st.Throttled == 0 {
		t.Fatal("no faults were injected")
	}
}

// TestSettingsBeforeKeys: a key event published after its team's settings
// change is written with the new settings, whichever of several workers
// handles which event.
func TestSettingsBeforeKeys(t *testing.T) {
	b := setup(t, setupOptions{backends: []string{"backend_b"}})
	ws := make([]*worker.Worker, 3)
	for i := range ws {
		ws[i], _ = b.startWorker(func(c *worker.Config) { c.Concurrency = 16 })
	}
	const teams, rounds = 20, 6
	var evs []*events.Event
	want := map[string]string{} // event id -> backend it must land in
	for r := 1; r <= rounds; r++ {
		for tm := 0; tm < teams; tm++ {
			team := fmt.Sprintf("team-%02d", tm)
			backend := "local"
			if (r+tm)%2 == 0 {
				backend = "backend_b"
			}
			evs = append(evs, b.settingsEvent(team, uint64(r), &events.TeamSettings{Backend: backend}))
			k := b.keyEvent(events.KeyCreated, team, fmt.Sprintf("key-r%d", r), 1, "sk-"+team+"-"+fmt.Sprint(r))
			evs = append(evs, k)
			want[k.ID] = backend
		}
	}
	b.publish(evs...)
	cs := byEventID(b.confirmations(len(evs), 60*time.Second))
	for _, ev := range evs {
		if !ev.Type.IsKey() {
			continue
		}
		c := cs[ev.ID]
		if c.Status != events.StatusStored || c.Provider != want[ev.ID] {
			t.Errorf("%s/%s went to %q (%s), want %q", ev.TeamID, ev.KeyID, c.Provider, c.Status, want[ev.ID])
			continue
		}
		if got := b.value(want[ev.ID], name(ev.TeamID, ev.KeyID)); !strings.HasPrefix(got, "sk-") {
			t.Errorf("%s/%s not in %s: %s", ev.TeamID, ev.KeyID, want[ev.ID], got)
		}
	}
	var catchUps int64
	for _, w := range ws {
		catchUps += w.Teams().CatchUps.Load()
	}
	t.Logf("key events that applied their team's newest settings before the watch delivered them: %d", catchUps)
}

func TestStoreFlagAndAccessMode(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	f, ro := false, events.AccessReadOnly
	s1 := b.settingsEvent("team-off", 1, &events.TeamSettings{StoreVirtualKeys: &f})
	s2 := b.settingsEvent("team-ro", 1, &events.TeamSettings{AccessMode: ro})
	k1 := b.keyEvent(events.KeyCreated, "team-off", "key-1", 1, "sk-1")
	k2 := b.keyEvent(events.KeyCreated, "team-ro", "key-1", 1, "sk-2")
	b.publish(s1, s2, k1, k2)
	cs := byEventID(b.confirmations(4, 20*time.Second))
	if c := cs[k1.ID]; c.Status != events.StatusSkipped || !strings.Contains(c.Reason, "store_virtual_keys") {
		t.Errorf("store_virtual_keys=false: %+v", c)
	}
	if c := cs[k2.ID]; c.Status != events.StatusRejected || !strings.Contains(c.Reason, "read_only") {
		t.Errorf("read_only: %+v", c)
	}
	if names, _ := b.stores["local"].Names(b.ctx); len(names) != 0 {
		t.Errorf("secrets written despite the settings: %v", names)
	}
}

// TestMalformedEventsNeverBlock: garbage, invalid ids and subjects that do
// not match the event are rejected with a reason and dead-lettered, and the
// valid events behind them are stored.
func TestMalformedEventsNeverBlock(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	b.publishRaw("keyrelay.events.team-a.key-1.key.created", []byte("{not json"))
	b.publishRaw("keyrelay.events.team-a.key-1.key.created", []byte(`{"spec_version":"9.9","id":"x1","type":"key.created"}`))
	bad := b.keyEvent(events.KeyCreated, "team-a", "key-2", 1, "sk-x")
	raw, _ := bad.Encode()
	b.publishRaw("keyrelay.events.team-b.key-2.key.created", raw) // wrong team in the subject
	good := b.keyEvent(events.KeyCreated, "team-a", "key-3", 1, "sk-good")
	b.publish(good)
	cs := b.confirmations(4, 20*time.Second)
	rejected := 0
	for _, c := range cs {
		if c.Status == events.StatusRejected {
			rejected++
			if c.Reason == "" {
				t.Errorf("rejection without a reason: %+v", c)
			}
		}
	}
	if rejected != 3 {
		t.Fatalf("%d rejected, want 3: %+v", rejected, cs)
	}
	if byEventID(cs)[good.ID].Status != events.StatusStored {
		t.Fatal("the valid event behind the malformed ones was not stored")
	}
	dlq, _ := worker.ListDeadLetters(b.ctx, b.js, 0)
	if len(dlq) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dlq))
	}
	for _, d := range dlq {
		t.Logf("dead letter %d: %s: %s", d.Seq, d.Status, d.Reason)
	}
}

func TestDLQRetryAfterFix(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		return providertest.NewFaulty(p, providertest.FaultConfig{Permanent: func(string) bool { return broken.Load() }})
	}}})
	b.startWorker(nil)
	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-1")
	b.publish(ev)
	cs := b.confirmations(1, 20*time.Second)
	if cs[0].Status != events.StatusFailed {
		t.Fatalf("%+v", cs[0])
	}
	dlq, _ := worker.ListDeadLetters(b.ctx, b.js, 0)
	if len(dlq) != 1 {
		t.Fatalf("%d dead letters", len(dlq))
	}
	broken.Store(false)
	if err := worker.RetryDeadLetter(b.ctx, b.js, dlq[0].Seq); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		cs := b.confirmations(1, time.Second)
		return len(cs) == 1 && cs[0].Status == events.StatusStored
	})
	if dlq, _ := worker.ListDeadLetters(b.ctx, b.js, 0); len(dlq) != 0 {
		t.Fatalf("retried entry still in the DLQ: %+v", dlq)
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-1" {
		t.Fatalf("value %q", got)
	}
}

func TestAliasTemplateRenameMovesSecret(t *testing.T) {
	b := setup(t, setupOptions{mutate: func(c *settings.Config) { c.Keyrelay.Naming.Template = "{prefix}{alias}" }})
	b.startWorker(nil)
	c1 := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-1")
	c1.KeyAlias = "first"
	// Re-seal is not needed: the alias is not part of the binding.
	u2 := &events.Event{SpecVersion: events.SpecVersion, ID: "upd-2", Type: events.KeyUpdated, Time: time.Now().UTC(),
		TeamID: "team-a", KeyID: "key-1", Generation: 2, KeyAlias: "second"}
	noAlias := b.keyEvent(events.KeyCreated, "team-a", "key-2", 1, "sk-2")
	b.publish(c1, noAlias)
	b.confirmations(2, 20*time.Second)
	b.publish(u2)
	cs := byEventID(b.confirmations(3, 20*time.Second))
	if cs[u2.ID].Status != events.StatusStored || cs[u2.ID].SecretRef != "litellm/second" {
		t.Fatalf("rename: %+v", cs[u2.ID])
	}
	if got := b.value("local", "litellm/second"); got != "sk-1" {
		t.Fatalf("moved value %q", got)
	}
	if _, err := b.stores["local"].Get(b.ctx, "litellm/first", ""); err == nil {
		t.Fatal("old name still holds the secret")
	}
	// Alias-less keys are stored (and so deletable) under their key id.
	if cs[noAlias.ID].SecretRef != "litellm/key-2" {
		t.Fatalf("alias-less key stored as %q", cs[noAlias.ID].SecretRef)
	}
}

// TestSentinelNeverLeaks plants a value and drives it through success,
// permanent failure, plaintext refusal and read_only rejection; the value
// must appear in no log line, confirmation, dead letter, ledger entry or
// metric.
func TestSentinelNeverLeaks(t *testing.T) {
	const sentinel = "SENTINEL-5eb1c7-do-not-log"
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		return providertest.NewFaulty(p, providertest.FaultConfig{Permanent: func(n string) bool { return strings.HasSuffix(n, "/perm") }})
	}}})
	b.startWorker(nil)
	ro := events.AccessReadOnly
	ok := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, sentinel)
	perm := b.keyEvent(events.KeyCreated, "team-a", "perm", 1, sentinel)
	plain := &events.Event{SpecVersion: events.SpecVersion, ID: "plain-1", Type: events.KeyCreated, Time: time.Now().UTC(),
		TeamID: "team-a", KeyID: "key-plain", Generation: 1}
	plain.Data = []byte(`{"value":{"alg":"plaintext","ct":"` + b64(sentinel) + `"}}`)
	settingsRO := b.settingsEvent("team-ro", 1, &events.TeamSettings{AccessMode: ro})
	roKey := b.keyEvent(events.KeyCreated, "team-ro", "key-1", 1, sentinel)
	b.publish(ok, perm, plain, settingsRO, roKey)
	cs := b.confirmations(5, 20*time.Second)
	bc := byEventID(cs)
	if bc[ok.ID].Status != events.StatusStored || bc[perm.ID].Status != events.StatusFailed ||
		bc[plain.ID].Status != events.StatusRejected || bc[roKey.ID].Status != events.StatusRejected {
		t.Fatalf("unexpected outcomes: %+v %+v %+v %+v", bc[ok.ID], bc[perm.ID], bc[plain.ID], bc[roKey.ID])
	}
	if b.value("local", name("team-a", "key-1")) != sentinel {
		t.Fatal("the value itself was not stored")
	}
	check := func(where, s string) {
		if strings.Contains(s, sentinel) || strings.Contains(s, b64(sentinel)) {
			t.Errorf("sentinel value found in %s", where)
		}
	}
	check("logs", b.logs.String())
	for _, m := range b.rawMessages(worker.ConfirmationsStream) {
		check("confirmations", string(m.Data)+fmt.Sprint(m.Header))
	}
	dl := b.rawMessages(worker.DLQStream)
	if len(dl) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dl))
	}
	for _, m := range dl {
		check("dead letters", string(m.Data)+fmt.Sprint(m.Header))
	}
	for _, m := range b.rawMessages("KV_" + worker.LedgerBucket) {
		check("ledger", string(m.Data))
	}
	mfs, _ := b.promReg.Gather()
	check("metrics", fmt.Sprint(mfs))
	if !strings.Contains(b.logs.String(), "event confirmed") {
		t.Fatal("logs captured nothing: the check above would prove nothing")
	}
}

func b64(s string) string { return base64Std([]byte(s)) }

// TestSettingsOrderedByGeneration: a settings event published later with an
// older generation never replaces newer settings, whichever worker (or key
// event catching up) sees which message first.
func TestSettingsOrderedByGeneration(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			b := setup(t, setupOptions{backends: []string{"backend_b"}})
			for i := 0; i < 3; i++ {
				b.startWorker(nil)
			}
			var evs []*events.Event
			var keys []*events.Event
			for tm := 0; tm < 10; tm++ {
				team := fmt.Sprintf("team-%d", tm)
				newer := b.settingsEvent(team, 10, &events.TeamSettings{Backend: "backend_b"})
				older := b.settingsEvent(team, 5, &events.TeamSettings{Backend: "local"})
				k := b.keyEvent(events.KeyCreated, team, "key-1", 1, "sk")
				evs = append(evs, newer, older, k)
				keys = append(keys, k)
			}
			b.publish(evs...)
			cs := byEventID(b.confirmations(len(evs), 30*time.Second))
			for _, k := range keys {
				if c := cs[k.ID]; c.Provider != "backend_b" || c.Status != events.StatusStored {
					t.Errorf("%s: %+v; want stored in backend_b (generation 10 settings)", k.TeamID, c)
				}
			}
		})
	}
}

// TestDeleteFollowsTheSecret: after a team moves to another backend, a
// delete removes the secret from the backend that holds it.
func TestDeleteFollowsTheSecret(t *testing.T) {
	b := setup(t, setupOptions{backends: []string{"backend_b"}})
	b.startWorker(nil)
	c1 := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-1")
	b.publish(c1)
	b.confirmations(1, 20*time.Second)
	b.publish(b.settingsEvent("team-a", 1, &events.TeamSettings{Backend: "backend_b"}))
	d2 := b.keyEvent(events.KeyDeleted, "team-a", "key-1", 2, "")
	b.publish(d2)
	cs := byEventID(b.confirmations(3, 20*time.Second))
	if c := cs[d2.ID]; c.Status != events.StatusDeleted || c.Provider != "local" {
		t.Fatalf("delete: %+v", c)
	}
	if _, err := b.stores["local"].Get(b.ctx, name("team-a", "key-1"), ""); err == nil {
		t.Fatal("the secret is still in the backend the team left")
	}
}

// TestTeamCannotRedirectProvider: provider options a provider does not
// allow teams to set (an address, a path) are ignored and reported.
func TestTeamCannotRedirectProvider(t *testing.T) {
	var seen []map[string]string
	b := setup(t, setupOptions{})
	b.reg.Register("local", func(_ context.Context, cfg providers.Config) (providers.Provider, error) {
		seen = append(seen, cfg.Options)
		return b.stores["local"], nil
	})
	b.reg.AllowTeamOptions("local", "fsync")
	b.startWorker(nil)
	b.publish(b.settingsEvent("team-a", 1, &events.TeamSettings{Options: map[string]string{"path": "/tmp/elsewhere", "fsync": "false"}}))
	b.publish(b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk"))
	cs := b.confirmations(2, 20*time.Second)
	for _, c := range cs {
		if c.KeyID != "" && c.Status != events.StatusStored {
			t.Fatalf("%+v", c)
		}
	}
	if len(seen) != 1 || seen[0]["path"] != "" || seen[0]["fsync"] != "false" {
		t.Fatalf("provider opened with %v; want fsync from the team and no path", seen)
	}
	if !strings.Contains(b.logs.String(), `"options":["path"]`) {
		t.Fatal("the refused option was not reported")
	}
}
