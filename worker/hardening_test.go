package worker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// sentinelForms are the ways a planted value could show up: plain, and
// standard base64 at each of the three byte alignments.
func sentinelForms(s string) []string {
	out := []string{s}
	for pad := 0; pad < 3; pad++ {
		enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", pad) + s))
		// Drop the characters that depend on the neighbouring bytes.
		skip := []int{0, 2, 3}[pad]
		out = append(out, enc[skip:len(enc)-4])
	}
	return out
}

func containsSentinel(s, sentinel string) bool {
	for _, f := range sentinelForms(sentinel) {
		if strings.Contains(s, f) {
			return true
		}
	}
	return false
}

// TestDLQRedactsWhatIsNotProvenSealed (issue 10, point 2): messages whose
// bytes carry a plaintext value but fail validation for another reason are
// dead-lettered as a redacted summary (ids, type, subject, reason, digest)
// with no payload byte; a valid sealed event keeps its original bytes so
// `dlq retry` still works.
func TestDLQRedactsWhatIsNotProvenSealed(t *testing.T) {
	const sentinel = "sk-SENTINEL-7d1e9a-plaintext"
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	pv := base64.StdEncoding.EncodeToString([]byte(sentinel))
	head := `{"spec_version":"1.0","id":"evt-%d","type":"key.created","time":"2025-01-02T03:04:05Z","team_id":"team-a","key_id":"key-%d","generation":1,`
	bodies := []string{
		`"data":{"value":"` + sentinel + `"}}`,                                                                  // a string value
		`"data":{"value":{"alg":"plaintext","ct":"` + sentinel + `"}}}`,                                         // non-base64 ct
		`"data":{"value":{"alg":"plaintext","ct":"` + pv + `"},"extra":1}}`,                                     // extra member
		`"data":{"value":{"alg":"plaintext","ct":"` + pv + `"},"value":{"alg":"plaintext","ct":"` + pv + `"}}}`, // duplicated member
		`"data":{"value":{"alg":"plaintext","ct":"` + pv,                                                        // truncated JSON
		`"data":{"value":{"alg":"plaintext","ct":"` + pv + `"}},"unknown":"` + sentinel + `"}`,                  // unknown member
		`"data":{"value":{"alg":"A256GCM","kid":"t1","nonce":"` + pv + `","ct":"` + pv + `"}}}`,                 // bad nonce
	}
	for i, body := range bodies {
		subj := fmt.Sprintf("keyrelay.events.team-a.key-%d.key.created", i)
		b.publishRaw(subj, []byte(fmt.Sprintf(head, i, i)+body))
	}
	// A valid event with a plaintext value (refused: sealing is required).
	plain := &events.Event{SpecVersion: events.SpecVersion, ID: "plain-1", Type: events.KeyCreated, Time: time.Now().UTC(),
		TeamID: "team-a", KeyID: "key-plain", Generation: 1}
	plain.Data = []byte(`{"value":{"alg":"plaintext","ct":"` + pv + `"}}`)
	// A valid sealed event that fails for good keeps its bytes.
	ro := events.AccessReadOnly
	roSettings := b.settingsEvent("team-ro", 1, &events.TeamSettings{AccessMode: ro})
	sealed := b.keyEvent(events.KeyCreated, "team-ro", "key-1", 1, sentinel)
	b.publish(plain, roSettings, sealed)

	want := len(bodies) + 3
	cs := b.confirmations(want, 30*time.Second)
	dl := b.rawMessages(worker.DLQStream)
	if len(dl) != len(bodies)+2 {
		t.Fatalf("%d dead letters, want %d", len(dl), len(bodies)+2)
	}
	redacted := 0
	for _, m := range dl {
		all := string(m.Data) + fmt.Sprint(m.Header)
		if m.Header.Get(worker.HdrEventID) == sealed.ID {
			raw, _ := sealed.Encode()
			if string(m.Data) != string(raw) {
				t.Errorf("the valid sealed event's dead letter is not its original bytes")
			}
			continue
		}
		if containsSentinel(all, sentinel) {
			t.Errorf("dead letter %d keeps the plaintext value: %s", m.Sequence, all)
		}
		var e worker.RedactedEntry
		if err := json.Unmarshal(m.Data, &e); err != nil || !e.Redacted || e.SHA256 == "" || e.Reason == "" || e.Subject == "" || e.Size == 0 {
			t.Errorf("dead letter %d is not a redacted summary: %s (%v)", m.Sequence, m.Data, err)
		}
		if m.Header.Get(worker.HdrRedacted) != "true" {
			t.Errorf("dead letter %d lacks %s", m.Sequence, worker.HdrRedacted)
		}
		redacted++
	}
	if redacted != len(bodies)+1 {
		t.Fatalf("%d redacted dead letters, want %d", redacted, len(bodies)+1)
	}
	for _, c := range cs {
		if b, _ := json.Marshal(c); containsSentinel(string(b), sentinel) {
			t.Errorf("confirmation carries the value: %s", b)
		}
	}
	if containsSentinel(b.logs.String(), sentinel) {
		t.Error("logs carry the value")
	}
	// A redacted entry cannot be retried; the error says why.
	dls, _ := worker.ListDeadLetters(b.ctx, b.js, 0)
	for _, d := range dls {
		if d.Redacted {
			if err := worker.RetryDeadLetter(b.ctx, b.js, d.Seq); err == nil || !strings.Contains(err.Error(), "redacted") {
				t.Errorf("retry of a redacted entry: %v", err)
			}
			break
		}
	}
}

// TestInvalidEventCannotTakeValidConfirmation (issue 10, point 3): an
// invalid message claiming id X, published before the valid event X, is
// rejected under its stream sequence, never under X; the valid event's only
// confirmation under X is its true outcome. A refused second confirmation
// that says something else is reported.
func TestInvalidEventCannotTakeValidConfirmation(t *testing.T) {
	b := setup(t, setupOptions{})
	w, _ := b.startWorker(nil)
	_ = w
	valid := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-valid")
	raw, _ := valid.Encode()
	// The same document with an unknown member: invalid, same id, no
	// Nats-Msg-Id so the stream does not deduplicate it.
	bad := strings.Replace(string(raw), `"spec_version"`, `"bogus":1,"spec_version"`, 1)
	b.publishRaw(valid.Subject(), []byte(bad))
	b.publish(valid)
	cs := b.confirmations(2, 20*time.Second)
	var got, rej *events.Confirmation
	for _, c := range cs {
		switch {
		case c.EventID == valid.ID:
			got = c
		case c.ClaimedEventID == valid.ID:
			rej = c
		}
	}
	if got == nil || got.Status != events.StatusStored {
		t.Fatalf("the valid event's confirmation: %+v (all: %+v)", got, cs)
	}
	if rej == nil || rej.Status != events.StatusRejected || rej.EventID != "" || rej.TeamID != "team-a" || rej.KeyID != "key-1" {
		t.Fatalf("the invalid message's rejection: %+v", rej)
	}
	// Both on the subjects the doc gives.
	subjects := map[string]bool{}
	for _, m := range b.rawMessages(worker.ConfirmationsStream) {
		subjects[m.Subject] = true
	}
	if !subjects[events.ConfirmationSubject("team-a", "key-1", valid.ID)] ||
		!subjects[events.ConfirmationSubject("team-a", "key-1", worker.InvalidConfirmationToken(rej.Lane, rej.StreamSeq))] {
		t.Fatalf("confirmation subjects: %v", subjects)
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-valid" {
		t.Fatalf("value %q", got)
	}

	// A reused id: a rejected valid event (plaintext refused), then a
	// different valid event with the same id. The first confirmation
	// stands and the contradiction is counted and logged.
	plain := &events.Event{SpecVersion: events.SpecVersion, ID: "reused-1", Type: events.KeyCreated, Time: time.Now().UTC(),
		TeamID: "team-a", KeyID: "key-2", Generation: 1, Data: []byte(`{"value":{"alg":"plaintext","ct":"c2stMg=="}}`)}
	b.publish(plain)
	b.confirmations(3, 20*time.Second)
	second := b.keyEvent(events.KeyCreated, "team-a", "key-2", 1, "sk-2")
	second.ID = plain.ID
	data, _ := second.Encode()
	m := &nats.Msg{Subject: second.Subject(), Data: data, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, "another-msg-id")
	if _, err := b.js.PublishMsg(b.ctx, m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(b.metrics.Contradictions) == 1 })
	if !strings.Contains(b.logs.String(), "already confirmed with another outcome") {
		t.Fatal("the contradiction was not logged")
	}
	if c := byEventID(b.confirmations(3, time.Second))[plain.ID]; c.Status != events.StatusRejected {
		t.Fatalf("the first confirmation changed: %+v", c)
	}
}

// planClaims writes claims into the ledger as a worker killed in the middle
// of its writes leaves them: held by "dead-worker" for lease.
func (b *bundle) plantClaims(team string, keys []string, lease time.Duration) {
	b.t.Helper()
	l := worker.NewLedger(b.kv(worker.LedgerBucket))
	for _, k := range keys {
		e := &worker.LedgerEntry{Claim: &worker.Claim{EventID: "dead-" + k, Generation: 1, Worker: "dead-worker", Until: time.Now().Add(lease)}}
		if _, err := l.Put(b.ctx, team, k, e, 0); err != nil {
			b.t.Fatal(err)
		}
	}
}

func (b *bundle) kv(bucket string) jetstream.KeyValue {
	b.t.Helper()
	kv, err := b.js.KeyValue(b.ctx, bucket)
	if err != nil {
		b.t.Fatal(err)
	}
	return kv
}

// TestDeadWorkerClaimsDoNotStallOtherKeys (issue 10, point 4): keys claimed
// by a worker that died hold none of the surviving worker's slots. Events
// of other keys flow at more than half their earlier rate while the
// claimed keys wait, and the claimed keys are written once the lease ends.
func TestDeadWorkerClaimsDoNotStallOtherKeys(t *testing.T) {
	b := setup(t, setupOptions{})
	const lease = 4 * time.Second
	b.startWorker(func(c *worker.Config) { c.ClaimLease = lease })
	const n = 400
	run := func(round string) (rate float64) {
		var evs []*events.Event
		for i := 0; i < n; i++ {
			evs = append(evs, b.keyEvent(events.KeyCreated, "team-free", fmt.Sprintf("%s-%03d", round, i), 1, "sk"))
		}
		start := time.Now()
		b.publish(evs...)
		b.waitConfirmed(evs, 60*time.Second)
		return n / time.Since(start).Seconds()
	}
	before := run("pre")

	// The dead worker's keys, with events waiting for them (more than the
	// surviving worker's slots).
	var claimed []string
	for i := 0; i < 24; i++ {
		claimed = append(claimed, fmt.Sprintf("held-%02d", i))
	}
	plantedAt := time.Now()
	b.plantClaims("team-held", claimed, lease)
	var held []*events.Event
	for _, k := range claimed {
		held = append(held, b.keyEvent(events.KeyCreated, "team-held", k, 2, "sk-"+k))
	}
	b.publish(held...)
	after := run("post")
	t.Logf("unaffected keys: %.0f events/s before, %.0f events/s while %d keys were claimed by a dead worker (ratio %.2f)",
		before, after, len(claimed), after/before)
	if after < before/2 {
		t.Errorf("unaffected keys slowed to %.2f of their rate", after/before)
	}
	b.waitConfirmed(held, lease+30*time.Second)
	resumed := time.Since(plantedAt)
	t.Logf("claimed keys written %v after the claims were planted (lease %v)", resumed.Round(10*time.Millisecond), lease)
	for _, ev := range held {
		if got := b.value("local", name("team-held", ev.KeyID)); got != "sk-"+ev.KeyID {
			t.Errorf("%s holds %q", ev.KeyID, got)
		}
	}
	if dl := b.rawMessages(worker.DLQStream); len(dl) != 0 {
		t.Fatalf("%d dead letters", len(dl))
	}
}

// waitConfirmed waits until every event of evs has a confirmation.
func (b *bundle) waitConfirmed(evs []*events.Event, timeout time.Duration) map[string]*events.Confirmation {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, worker.ConfirmationsStream)
	if err != nil {
		b.t.Fatal(err)
	}
	out := map[string]*events.Confirmation{}
	deadline := time.Now().Add(timeout)
	for _, ev := range evs {
		subj := events.ConfirmationSubject(ev.TeamID, ev.KeyID, ev.ID)
		for {
			m, err := s.GetLastMsgForSubject(b.ctx, subj)
			if err == nil {
				var c events.Confirmation
				if err := json.Unmarshal(m.Data, &c); err != nil {
					b.t.Fatal(err)
				}
				out[ev.ID] = &c
				break
			}
			if time.Now().After(deadline) {
				b.t.Fatalf("no confirmation for %s/%s after %v\nlogs:\n%s", ev.TeamID, ev.KeyID, timeout, tail(b.logs.String(), 3000))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

// outage makes a provider fail every call with a retryable error while
// down is set, like a backend returning 503s.
type outage struct {
	providers.Provider
	down  atomic.Bool
	calls atomic.Int64
}

func (o *outage) fail(op string) error {
	o.calls.Add(1)
	if o.down.Load() {
		return providers.NewError("outage", op, "", providers.Retryable, fmt.Errorf("503 service unavailable: %w", providers.ErrUnavailable))
	}
	return nil
}

func (o *outage) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	if err := o.fail("put"); err != nil {
		return providers.PutResult{}, err
	}
	return o.Provider.Put(ctx, r)
}

func (o *outage) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	if err := o.fail("get"); err != nil {
		return nil, err
	}
	return o.Provider.Get(ctx, name, version)
}

func (o *outage) Delete(ctx context.Context, r providers.DeleteRequest) error {
	if err := o.fail("delete"); err != nil {
		return err
	}
	return o.Provider.Delete(ctx, r)
}

// TestProviderOutageOfMinutes (issue 10, point 5): a backend answering 503
// for two minutes under load ends with every event stored and nothing
// dead-lettered, and keys on another backend are confirmed during the
// outage.
func TestProviderOutageOfMinutes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a two-minute outage")
	}
	t.Parallel()
	down := &outage{}
	b := setup(t, setupOptions{
		backends: []string{"backend_b"},
		wrap:     map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider { down.Provider = p; return down }},
		// The package defaults for deliveries (0 selects them).
		topo:    func(c *worker.TopologyConfig) { c.MaxDeliver, c.MaxAckPending = 0, 4096 },
		timeout: 6 * time.Minute,
	})
	for i := 0; i < 2; i++ {
		b.startWorker(func(c *worker.Config) { c.RetryMax, c.Concurrency, c.MaxDeliver = 3*time.Second, 16, 0 })
	}
	b.publish(b.settingsEvent("team-up", 1, &events.TeamSettings{Backend: "backend_b"}))
	const outageFor = 2 * time.Minute
	down.down.Store(true)
	start := time.Now()
	var downEvs, upEvs []*events.Event
	// Load for the first 90 s of the outage: both teams, a burst each second.
	for time.Since(start) < 90*time.Second {
		var burst []*events.Event
		for i := 0; i < 10; i++ {
			k := len(downEvs)
			burst = append(burst, b.keyEvent(events.KeyCreated, "team-down", fmt.Sprintf("key-%04d", k), 1, "sk-down"))
			downEvs = append(downEvs, burst[len(burst)-1])
			burst = append(burst, b.keyEvent(events.KeyCreated, "team-up", fmt.Sprintf("key-%04d", k), 1, "sk-up"))
			upEvs = append(upEvs, burst[len(burst)-1])
		}
		b.publish(burst...)
		time.Sleep(time.Second)
	}
	// Every event of the healthy backend is confirmed while the other is down.
	for id, c := range b.waitConfirmed(upEvs, outageFor-time.Since(start)-5*time.Second) {
		if c.Status != events.StatusStored {
			t.Errorf("team-up %s: %s %s", id, c.Status, c.Reason)
		}
	}
	upDone := time.Since(start)
	time.Sleep(outageFor - time.Since(start))
	down.down.Store(false)
	end := time.Now()
	for _, c := range b.waitConfirmed(downEvs, 2*time.Minute) {
		if c.Status != events.StatusStored {
			t.Errorf("team-down %s/%s: %s %s", c.TeamID, c.KeyID, c.Status, c.Reason)
		}
	}
	t.Logf("%d events for the down backend, %d for the healthy one; healthy ones all confirmed %v into the outage; "+
		"down ones all stored %v after it ended; %d calls to the down backend",
		len(downEvs), len(upEvs), upDone.Round(time.Second), time.Since(end).Round(100*time.Millisecond), down.calls.Load())
	if dl := b.rawMessages(worker.DLQStream); len(dl) != 0 {
		t.Fatalf("%d dead letters after a provider outage", len(dl))
	}
	if bo := testutil.ToFloat64(b.metrics.BreakerOpen.WithLabelValues("local")); bo != 0 {
		t.Errorf("breaker still open after the outage")
	}
}

// TestLedgerOutageDeadLettersNothing (issue 10, point 5): for 30 s under
// load the ledger accepts no writes (its stream answers no subject, the
// "no responders" of a leader election). Nothing is dead-lettered, every
// event is confirmed once and stored.
func TestLedgerOutageDeadLettersNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.MaxDeliver, c.MaxAckPending = 0, 4096 }, timeout: 4 * time.Minute})
	for i := 0; i < 2; i++ {
		b.startWorker(func(c *worker.Config) { c.InfraWait, c.MaxDeliver = 5*time.Second, 0 })
	}
	var evs []*events.Event
	for i := 0; i < 300; i++ {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%03d", i), 1, "sk-"+fmt.Sprint(i)))
	}
	b.publish(evs[:100]...)
	b.waitConfirmed(evs[:100], 30*time.Second)

	stream := "KV_" + worker.LedgerBucket
	s, err := b.js.Stream(b.ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(b.ctx)
	cfg := info.Config
	paused := cfg
	paused.Subjects = []string{"$KV.KEYRELAY_LEDGER_PAUSED.>"}
	if _, err := b.js.UpdateStream(b.ctx, paused); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 100; i < 300; i += 10 {
		b.publish(evs[i : i+10]...)
		time.Sleep(1200 * time.Millisecond)
	}
	time.Sleep(30*time.Second - time.Since(start))
	if _, err := b.js.UpdateStream(b.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("ledger refused writes for %v", time.Since(start).Round(100*time.Millisecond))
	cs := b.waitConfirmed(evs, 2*time.Minute)
	for i, ev := range evs {
		if c := cs[ev.ID]; c.Status != events.StatusStored {
			t.Errorf("%s: %s %s", ev.KeyID, c.Status, c.Reason)
		}
		if got := b.value("local", name("team-a", ev.KeyID)); got != "sk-"+fmt.Sprint(i) {
			t.Errorf("%s holds %q", ev.KeyID, got)
		}
	}
	if dl := b.rawMessages(worker.DLQStream); len(dl) != 0 {
		t.Fatalf("%d dead letters after a ledger outage", len(dl))
	}
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n != len(evs) {
		t.Fatalf("%d confirmations for %d events", n, len(evs))
	}
}

// TestStreamsAreBounded (issue 10, point 8): the DLQ and the confirmations
// stream keep within their configured limits and drop their oldest
// messages (never refusing new ones, which would stop the pipeline); what
// they drop is counted; a malformed message costs a small summary, not its
// size.
func TestStreamsAreBounded(t *testing.T) {
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) {
		c.DLQMaxMsgs, c.ConfirmationsMaxMsgs = 5, 12
	}})
	b.startWorker(nil)
	big := strings.Repeat("A", 60000)
	for i := 0; i < 20; i++ {
		b.publishRaw(fmt.Sprintf("keyrelay.events.team-a.key-%d.key.created", i), []byte(`{"id":"bad-`+fmt.Sprint(i)+`","data":"`+big+`"`))
	}
	// Valid events after the flood are still confirmed.
	var good []*events.Event
	for i := 0; i < 3; i++ {
		good = append(good, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("good-%d", i), 1, "sk"))
	}
	b.publish(good...)
	for id, c := range b.waitConfirmed(good, 30*time.Second) {
		if c.Status != events.StatusStored {
			t.Errorf("%s: %s", id, c.Status)
		}
	}
	dl := b.rawMessages(worker.DLQStream)
	if len(dl) > 5 {
		t.Fatalf("DLQ holds %d entries, limit 5", len(dl))
	}
	for _, m := range dl {
		if len(m.Data) > 2048 {
			t.Errorf("a malformed message cost %d bytes in the DLQ", len(m.Data))
		}
	}
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n > 12 {
		t.Fatalf("confirmations stream holds %d, limit 12", n)
	}
	waitFor(t, func() bool {
		return testutil.ToFloat64(b.metrics.StreamDiscarded.WithLabelValues(worker.DLQStream)) == 15 &&
			testutil.ToFloat64(b.metrics.StreamDiscarded.WithLabelValues(worker.ConfirmationsStream)) == 11
	})
}

// slowPut delays every Put, so two copies of an event overlap, and counts
// Puts of one event that ran at the same time: a provider whose
// idempotency check is not atomic with its write (Azure, Google) would
// write two versions then.
type slowPut struct {
	providers.Provider
	inflight *sync.Map
	overlaps *atomic.Int64
}

func (s slowPut) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	if _, busy := s.inflight.LoadOrStore(r.IdempotencyKey, true); busy {
		s.overlaps.Add(1)
	} else {
		defer s.inflight.Delete(r.IdempotencyKey)
	}
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		return providers.PutResult{}, ctx.Err()
	}
	return s.Provider.Put(ctx, r)
}

// TestCopiesOfAnEventNeverWriteTwice: an event and a copy of it published
// again as another stream message (after the dedupe window, or by a replay)
// handled at the same time by two workers write one version: the copy
// waits for the first's claim, then finds it applied.
func TestCopiesOfAnEventNeverWriteTwice(t *testing.T) {
	var overlaps atomic.Int64
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { return slowPut{p, &sync.Map{}, &overlaps} }}})
	b.startWorker(nil)
	b.startWorker(nil)
	var evs []*events.Event
	for i := 0; i < 20; i++ {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, "sk-copy"))
	}
	for _, ev := range evs {
		raw, _ := ev.Encode()
		for copyN := 0; copyN < 2; copyN++ {
			m := &nats.Msg{Subject: ev.Subject(), Data: raw, Header: nats.Header{}}
			m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-copy-%d", ev.ID, copyN))
			if _, err := b.js.PublishMsg(b.ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.waitConfirmed(evs, 60*time.Second)
	// Both copies handled: the stream is drained and acknowledged.
	waitFor(t, func() bool {
		c, err := b.js.Consumer(b.ctx, worker.EventsStream, worker.ConsumerName)
		if err != nil {
			return false
		}
		info, err := c.Info(b.ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	for _, ev := range evs {
		vs, err := b.stores["local"].Versions(b.ctx, name("team-a", ev.KeyID))
		if err != nil || len(vs) != 1 {
			t.Errorf("%s: %d versions (%v), want 1", ev.KeyID, len(vs), err)
		}
	}
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n != len(evs) {
		t.Errorf("%d confirmations for %d events", n, len(evs))
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d Puts of an event ran while another Put of the same event was in flight", n)
	}
}
