package worker_test

import (
	"context"
	"encoding/json"
	"errors"
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
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// switchedOutage fails every call with a retryable error while down is
// set, and counts the puts that reached the store, by secret name.
type switchedOutage struct {
	providers.Provider
	down atomic.Bool
	mu   sync.Mutex
	puts map[string]int
}

func (o *switchedOutage) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	if o.down.Load() {
		return providers.PutResult{}, providers.NewError("outage", "put", "", providers.Retryable, fmt.Errorf("503 service unavailable: %w", providers.ErrUnavailable))
	}
	res, err := o.Provider.Put(ctx, r)
	if err == nil {
		o.mu.Lock()
		o.puts[r.Name]++
		o.mu.Unlock()
	}
	return res, err
}

func (o *switchedOutage) Delete(ctx context.Context, r providers.DeleteRequest) error {
	if o.down.Load() {
		return providers.NewError("outage", "delete", "", providers.Retryable, fmt.Errorf("503 service unavailable: %w", providers.ErrUnavailable))
	}
	return o.Provider.Delete(ctx, r)
}

func (o *switchedOutage) putsOf(name string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.puts[name]
}

// writtenOnce checks that each of evs reached down's store exactly once.
func writtenOnce(t *testing.T, down *switchedOutage, evs []*events.Event) {
	t.Helper()
	for _, ev := range evs {
		if n := down.putsOf(name(ev.TeamID, ev.KeyID)); n != 1 {
			t.Errorf("%s: %d writes, want 1", ev.KeyID, n)
		}
	}
}

// storedOnce waits for evs' confirmations and checks that each is stored,
// with one write to down's store.
func (b *bundle) storedOnce(down *switchedOutage, evs []*events.Event, timeout time.Duration) {
	b.t.Helper()
	for id, c := range b.waitConfirmed(evs, timeout) {
		if c.Status != events.StatusStored {
			b.t.Errorf("%s: %s %s", id, c.Status, c.Reason)
		}
	}
	writtenOnce(b.t, down, evs)
}

// parkSetup is a bundle whose "local" backend (team-a's, the default) is
// a switchedOutage and whose "backend_b" is team-b's.
func parkSetup(t *testing.T, maxAckPending int, topo ...func(*worker.TopologyConfig)) (*bundle, *switchedOutage) {
	down := &switchedOutage{puts: map[string]int{}}
	b := setup(t, setupOptions{
		backends: []string{"backend_b"},
		wrap:     map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider { down.Provider = p; return down }},
		topo: func(c *worker.TopologyConfig) {
			c.MaxAckPending = maxAckPending
			for _, f := range topo {
				f(c)
			}
		},
	})
	return b, down
}

// confirmationCounts counts the confirmations stored per event id.
func (b *bundle) confirmationCounts() map[string]int {
	b.t.Helper()
	out := map[string]int{}
	for _, m := range b.rawMessages(worker.ConfirmationsStream) {
		var c events.Confirmation
		if err := json.Unmarshal(m.Data, &c); err != nil {
			b.t.Fatal(err)
		}
		out[c.EventID]++
	}
	return out
}

// parkedState is the parked stream's message count and its interactive
// consumer's pending acks.
func (b *bundle) parkedState() (msgs uint64, ackPending int) {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, worker.ParkedStream)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	c, err := b.js.Consumer(b.ctx, worker.ParkedStream, worker.ParkedConsumerName)
	if err != nil {
		b.t.Fatal(err)
	}
	ci, err := c.Info(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	return info.State.Msgs, ci.NumAckPending
}

// otherTeamFlows publishes 10 events of team-b (on backend_b) and checks
// that each is stored within 15 s while team-a's events wait.
func (b *bundle) otherTeamFlows() {
	b.t.Helper()
	var evs []*events.Event
	for i := range 10 {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-b", fmt.Sprintf("key-%03d", i), 1, "sk-b"))
	}
	start := time.Now()
	b.publish(evs...)
	for id, c := range b.waitConfirmed(evs, 15*time.Second) {
		if c.Status != events.StatusStored {
			b.t.Errorf("team-b %s: %s %s", id, c.Status, c.Reason)
		}
	}
	b.t.Logf("team-b's events confirmed %v after they were published, team-a's backend down", time.Since(start).Round(10*time.Millisecond))
}

// TestParkedEventsHoldNoLaneSlot: the lane consumer's MaxAckPending is 20
// and team-a's backend is down with 60 events of team-a pending. Team-b's
// events, published after them on another backend, are still confirmed
// promptly: team-a's events wait parked in KEYRELAY_PARKED, not in the
// shared consumer's pending set. When team-a's backend is back every one
// of its events is stored and confirmed exactly once, with one write each.
// (Without parking, worker.Config.ParkAfter -1, team-a's events hold all
// 20 slots while they wait and team-b's are not delivered.)
func TestParkedEventsHoldNoLaneSlot(t *testing.T) {
	b, down := parkSetup(t, 20)
	for i := 0; i < 2; i++ {
		b.startWorker(func(c *worker.Config) { c.ParkAfter = 2 * time.Second })
	}
	b.publish(b.settingsEvent("team-b", 1, &events.TeamSettings{Backend: "backend_b"}))
	b.confirmations(1, 30*time.Second)
	down.down.Store(true)
	var aEvs []*events.Event
	for i := 0; i < 60; i++ {
		aEvs = append(aEvs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%03d", i), 1, "sk-a"))
	}
	b.publish(aEvs...)
	// team-a's events fill the consumer and its breaker opens.
	time.Sleep(time.Second)
	b.otherTeamFlows()
	if n := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "parked")); n == 0 {
		t.Error("no event parked")
	}
	for _, ev := range aEvs {
		if down.putsOf(name(ev.TeamID, ev.KeyID)) != 0 {
			t.Fatalf("%s stored while its backend is down", ev.KeyID)
		}
	}
	// Down for a while longer: parked events come back and are parked again.
	time.Sleep(4 * time.Second)
	down.down.Store(false)
	recovered := time.Now()
	for id, c := range b.waitConfirmed(aEvs, 60*time.Second) {
		if c.Status != events.StatusStored || c.Duplicate {
			t.Errorf("team-a %s: %s %s (duplicate %v)", id, c.Status, c.Reason, c.Duplicate)
		}
	}
	t.Logf("team-a's events all confirmed %v after its backend recovered; parked %v times", time.Since(recovered).Round(10*time.Millisecond),
		testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "parked")))
	// Settle: nothing parked or pending is left to write again.
	waitWithin(t, 30*time.Second, "the parked stream drained", func() bool { msgs, pending := b.parkedState(); return msgs == 0 && pending == 0 })
	for _, ev := range aEvs {
		if n := down.putsOf(name(ev.TeamID, ev.KeyID)); n != 1 {
			t.Errorf("%s: %d writes, want 1", ev.KeyID, n)
		}
		if got := b.value("local", name(ev.TeamID, ev.KeyID)); got != "sk-a" {
			t.Errorf("%s: stored %q", ev.KeyID, got)
		}
	}
	for id, n := range b.confirmationCounts() {
		if n != 1 {
			t.Errorf("event %s: %d confirmations", id, n)
		}
	}
	if dl := b.rawMessages(worker.DLQStream); len(dl) != 0 {
		t.Fatalf("%d dead letters", len(dl))
	}
	// The parked consumers are polled with the lanes' (every 5 s).
	waitWithin(t, 15*time.Second, "the parked consumers in keyrelay_consumer_pending", func() bool {
		return testutil.CollectAndCount(b.metrics.Pending, "keyrelay_consumer_pending") == 4
	})
}

// TestParkedEventDeadLettersAfterRetryFor: an event whose backend keeps
// failing is parked again and again (each time a new message, delivered
// for the first time) and still dead-letters once its provider failures
// span retry_for: its budget is the lane message's, carried across parks
// (in the process and in the ledger entry). Its DLQ entry and
// confirmation name the lane message, not a parked copy.
func TestParkedEventDeadLettersAfterRetryFor(t *testing.T) {
	b, down := parkSetup(t, 256)
	down.down.Store(true)
	for i := 0; i < 2; i++ {
		b.startWorker(func(c *worker.Config) {
			// Every provider failure is handed back for 1 to 3 s (parked),
			// and the breaker never opens: the provider is called each time.
			c.ParkAfter, c.RetryFor, c.RetryInitial, c.RetryMax = time.Second, 6*time.Second, 2*time.Second, 2*time.Second
			c.InProcessAttempts, c.BreakerFailures = 1, 1000
		})
	}
	ev := b.keyEvent(events.KeyCreated, "team-a", "doomed", 1, "sk-a")
	ack, err := b.pub.Publish(b.ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := b.waitConfirmed([]*events.Event{ev}, 60*time.Second)[ev.ID]
	took := time.Since(start)
	if c.Status != events.StatusFailed || !strings.Contains(c.Reason, "worker.retry_for") {
		t.Fatalf("confirmation %s %q, want failed after retry_for", c.Status, c.Reason)
	}
	if c.StreamSeq != ack || c.Lane != events.LaneInteractive {
		t.Errorf("confirmation names stream_seq %d lane %q, want the lane message %d", c.StreamSeq, c.Lane, ack)
	}
	parks := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "parked"))
	if parks < 2 {
		t.Errorf("parked %v times, want at least 2", parks)
	}
	if took < 6*time.Second {
		t.Errorf("dead-lettered after %v, before retry_for", took)
	}
	t.Logf("dead-lettered %v after publication, parked %v times, attempts %d", took.Round(100*time.Millisecond), parks, c.Attempts)
	dl := b.rawMessages(worker.DLQStream)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	if s := dl[0].Header.Get(worker.HdrStreamSeq); s != fmt.Sprint(ack) {
		t.Errorf("dead letter names stream_seq %s, want %d", s, ack)
	}
	if subj := dl[0].Header.Get(worker.HdrSubject); subj != ev.Subject() {
		t.Errorf("dead letter names subject %s, want %s", subj, ev.Subject())
	}
}

// TestParkFailureFallsBack: when the park cannot be stored (NATS trouble)
// the event is handed back to its consumer as before parking existed,
// and nothing is lost.
func TestParkFailureFallsBack(t *testing.T) {
	b, down := parkSetup(t, 256)
	defer worker.SetParkHook(func() error { return errors.New("injected: parked stream unavailable") })()
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	var evs []*events.Event
	for i := 0; i < 5; i++ {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, "sk-a"))
	}
	b.publish(evs...)
	waitWithin(t, 20*time.Second, "a park to fail", func() bool {
		return testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "fallback")) >= 5
	})
	down.down.Store(false)
	for id, c := range b.waitConfirmed(evs, 30*time.Second) {
		if c.Status != events.StatusStored {
			t.Errorf("%s: %s %s", id, c.Status, c.Reason)
		}
	}
	if n := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "parked")); n != 0 {
		t.Errorf("%v parked although every park failed", n)
	}
	writtenOnce(t, down, evs)
}

// TestParkedCopiesAreHarmless: a crash between the park and the ack of
// the lane message (the ack skipped) leaves two copies of the event: the
// lane message, redelivered after AckWait and parked again onto the same
// schedule subject or handled, and the parked one. Each event is still
// written once and confirmed once: the second copy is a duplicate.
func TestParkedCopiesAreHarmless(t *testing.T) {
	b, down := parkSetup(t, 256)
	var skipped atomic.Int64
	defer worker.SetParkedAckHook(func() bool { return skipped.Add(1) <= 20 })()
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	var evs []*events.Event
	for i := 0; i < 8; i++ {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, "sk-a"))
	}
	b.publish(evs...)
	waitWithin(t, 30*time.Second, "parks whose ack was lost", func() bool { return skipped.Load() > 20 })
	down.down.Store(false)
	for id, c := range b.waitConfirmed(evs, 60*time.Second) {
		if c.Status != events.StatusStored {
			t.Errorf("%s: %s %s", id, c.Status, c.Reason)
		}
	}
	// Both copies of each come back and are done with (AckWait is 5 s).
	waitWithin(t, 30*time.Second, "every copy handled", func() bool {
		msgs, pending := b.parkedState()
		c, err := b.js.Consumer(b.ctx, worker.EventsStream, worker.ConsumerName)
		if err != nil {
			return false
		}
		ci, err := c.Info(b.ctx)
		return err == nil && msgs == 0 && pending == 0 && ci.NumAckPending == 0 && ci.NumPending == 0
	})
	for _, ev := range evs {
		if n := down.putsOf(name(ev.TeamID, ev.KeyID)); n != 1 {
			t.Errorf("%s: %d writes, want 1", ev.KeyID, n)
			for _, l := range strings.Split(b.logs.String(), "\n") {
				if strings.Contains(l, ev.ID) {
					t.Log(l)
				}
			}
		}
	}
	for id, n := range b.confirmationCounts() {
		if n != 1 {
			t.Errorf("event %s: %d confirmations", id, n)
		}
	}
	if dl := b.rawMessages(worker.DLQStream); len(dl) != 0 {
		t.Fatalf("%d dead letters", len(dl))
	}
	// The second copies were handled, as duplicates.
	dups := strings.Count(b.logs.String(), `"already_confirmed":true`)
	if dups == 0 {
		t.Error("no second copy was handled")
	}
	t.Logf("%d parks not acked; %d second copies confirmed as duplicates", min(skipped.Load(), 20), dups)
}

// TestForgedParkedMessages: a parked message names a lane message. One
// that names another team or key than that message's, a lane message that
// does not exist or is not a key event, that carries a copy which is not
// that message, a copy of a message its lane has not dropped, or whose
// subject is malformed is terminated with a reason and acts on nothing. One that names a lane message rightly is that message
// handled again, with its own bytes: an event already applied is a
// duplicate (no second write), a plaintext value where sealing is
// required is rejected again.
func TestForgedParkedMessages(t *testing.T) {
	b, down := parkSetup(t, 256)
	b.startWorker(nil)
	ev := b.keyEvent(events.KeyCreated, "team-x", "k1", 1, "sk-x")
	ack, err := b.pub.Publish(b.ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	b.waitConfirmed([]*events.Event{ev}, 30*time.Second)
	// A plaintext value: sealing is required (allow_plaintext_values off).
	plain := &events.Event{SpecVersion: events.SpecVersion, ID: "evt-plain", Type: events.KeyCreated, Time: time.Now().UTC(),
		TeamID: "team-x", KeyID: "k2", Generation: 1}
	plain.Data = []byte(`{"value":{"alg":"plaintext","ct":"` + base64Std([]byte("sk-plaintext-secret")) + `"}}`)
	pack, err := b.pub.Publish(b.ctx, plain)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(plain)
	if c := b.waitConfirmed([]*events.Event{plain}, 30*time.Second)[plain.ID]; c.Status != events.StatusRejected {
		t.Fatalf("plaintext value: %s %s", c.Status, c.Reason)
	}
	settingsAck, err := b.pub.Publish(b.ctx, b.settingsEvent("team-x", 1, &events.TeamSettings{Description: "x"}))
	if err != nil {
		t.Fatal(err)
	}
	confs := len(b.confirmations(3, 30*time.Second))
	dlqs := len(b.rawMessages(worker.DLQStream))

	due := func(lane, team, key string, seq uint64) string {
		return fmt.Sprintf("%s.due.%s.%s.%s.%d", worker.ParkedPrefix, lane, team, key, seq)
	}
	// copyOf is the lane subject a copy claims to be of (its header).
	k1 := events.EventsPrefix + ".team-x.k1." + string(events.KeyCreated)
	forged := []struct {
		subject string
		body    []byte
		copyOf  string
	}{
		{due("interactive", "team-y", "k1", ack), nil, ""},                         // team-x's event under team-y
		{due("interactive", "team-x", "k9", ack), nil, ""},                         // under another key
		{due("interactive", "team-x", "k1", ack), raw, ""},                         // a body of its own
		{due("interactive", "team-x", "k1", ack), raw, k1},                         // a copy that is not the message
		{due("interactive", "team-x", "k1", 99999), nil, ""},                       // no such message
		{due("interactive", "team-x", "k1", 99999), raw, k1},                       // a copy of a message the lane never held
		{due("interactive", "team-x", "k1", settingsAck), nil, ""},                 // a settings event
		{due("interactive", "team-x", "k1", 0), nil, ""},                           // sequence 0
		{worker.ParkedPrefix + ".due.interactive.team-x.k1", []byte("junk"), ""},   // malformed
		{worker.ParkedPrefix + ".due.interactive.team-x.k1.01", nil, ""},           // not canonical
		{due("bulk", "team-x", "k1", ack), nil, ""},                                // not in the bulk lane
		{worker.ParkedPrefix + ".due.interactive.te..am.k1.1", []byte("junk"), ""}, // not a subject
		{due("interactive", "team-x", "k1", ack) + ".pin", raw, ""},                // a pin with a body
		{due("interactive", "team-x", "k1", ack) + ".pin", nil, k1},                // a pin naming a copy's subject
		{due("interactive", "team-x", "k1", 99999) + ".pin", nil, ""},              // a pin of a message the lane never held
		{due("interactive", "team-x", "k1", ack) + ".pins", nil, ""},               // not a pin
		{due("interactive", "team-y", "k1", ack) + ".pin", nil, ""},                // a pin under another team
	}
	invalid := 0
	for _, f := range forged {
		if strings.Contains(f.subject, "..") {
			continue
		}
		m := &nats.Msg{Subject: f.subject, Data: f.body, Header: nats.Header{}}
		if f.copyOf != "" {
			m.Header.Set(worker.ParkedSubjectHeader, f.copyOf)
		}
		if _, err := b.js.PublishMsg(b.ctx, m); err != nil {
			t.Fatalf("%s: %v", f.subject, err)
		}
		invalid++
	}
	waitWithin(t, 20*time.Second, "every forged parked message terminated", func() bool {
		return testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "invalid"))+
			testutil.ToFloat64(b.metrics.Parked.WithLabelValues("bulk", "invalid")) == float64(invalid)
	})
	// Right references: the applied event again, and the rejected one.
	for _, seq := range []struct {
		key string
		seq uint64
	}{{"k1", ack}, {"k2", pack}} {
		for _, suffix := range []string{"", ".pin"} {
			if _, err := b.js.PublishMsg(b.ctx, &nats.Msg{Subject: due("interactive", "team-x", seq.key, seq.seq) + suffix}); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitWithin(t, 20*time.Second, "the parked stream drained", func() bool { msgs, pending := b.parkedState(); return msgs == 0 && pending == 0 })
	time.Sleep(500 * time.Millisecond)
	if n := down.putsOf(name("team-x", "k1")); n != 1 {
		t.Errorf("k1: %d writes, want 1", n)
	}
	for _, k := range []struct{ team, key string }{{"team-x", "k2"}, {"team-y", "k1"}, {"team-x", "k9"}} {
		if n := down.putsOf(name(k.team, k.key)); n != 0 {
			t.Errorf("%s/%s: %d writes, want none", k.team, k.key, n)
		}
		if e, _, err := b.ledgerGet(k.team, k.key); err == nil && e != nil && e.EventID != "" {
			t.Errorf("%s/%s: ledger entry %+v", k.team, k.key, e)
		}
	}
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n != confs {
		t.Errorf("%d confirmations, want %d (none new)", n, confs)
	}
	for _, m := range b.rawMessages(worker.DLQStream)[dlqs:] {
		if strings.Contains(string(m.Data), "sk-plaintext-secret") || strings.Contains(string(m.Data), base64Std([]byte("sk-plaintext-secret"))) {
			t.Errorf("dead letter holds the plaintext value")
		}
	}
	logs := b.logs.String()
	for _, want := range []string{"is not a key event of team team-y, key k1", "its copy is not message", "holds no copy of it", "its copy stands for nothing removed", "not a due subject",
		"a pin carries no copy", "the pin stands for nothing removed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line with reason %q", want)
		}
	}
	if strings.Contains(logs, "sk-plaintext-secret") || strings.Contains(logs, "sk-x") {
		t.Error("a value in the logs")
	}
}

// TestParkedEventsExclusiveBulk: in exclusive mode only the writer-lease
// holder takes parked events, as it alone takes the lanes, and bulk-lane
// events are parked and come back through the bulk lane's parked
// consumer, in the bulk lane. The holder stops while events are parked;
// its successor writes each once.
func TestParkedEventsExclusiveBulk(t *testing.T) {
	b, down := parkSetup(t, 256)
	down.down.Store(true)
	mut := func(c *worker.Config) { c.ParkAfter = time.Second }
	w1, stop1 := b.exclusiveWorker(mut)
	w2, stop2 := b.exclusiveWorker(mut)
	var evs []*events.Event
	for i := 0; i < 10; i++ {
		ev := b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, "sk-a")
		lane := events.LaneInteractive
		if i%2 == 1 {
			lane = events.LaneBulk
		}
		if _, err := b.pub.PublishIn(b.ctx, lane, ev); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	waitWithin(t, 30*time.Second, "both lanes' events parked", func() bool {
		return testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "parked")) >= 5 &&
			testutil.ToFloat64(b.metrics.Parked.WithLabelValues("bulk", "parked")) >= 5
	})
	standby, stopHolder := w2, stop1
	if w2.ActsClaimless() {
		standby, stopHolder = w1, stop2
	}
	if n := standby.Handled(); n != 0 {
		t.Errorf("the standby handled %d events", n)
	}
	stopHolder()
	down.down.Store(false)
	confs := b.waitConfirmed(evs, 60*time.Second)
	for i, ev := range evs {
		c := confs[ev.ID]
		want := events.LaneInteractive
		if i%2 == 1 {
			want = events.LaneBulk
		}
		if c.Status != events.StatusStored || c.Lane != want {
			t.Errorf("%s: %s %s, lane %q", ev.KeyID, c.Status, c.Reason, c.Lane)
		}
		if n := down.putsOf(name(ev.TeamID, ev.KeyID)); n != 1 {
			t.Errorf("%s: %d writes, want 1", ev.KeyID, n)
		}
	}
}

// TestEnsureTopologyAddsParkedStream: a deployment made before parking
// (no KEYRELAY_PARKED) is upgraded by EnsureTopology run from three
// processes at once: the stream allows schedules and roll-ups, and each
// lane's parked consumer takes only its due subjects. Running it again
// changes nothing.
func TestEnsureTopologyAddsParkedStream(t *testing.T) {
	b := setup(t, setupOptions{})
	if err := b.js.DeleteStream(b.ctx, worker.ParkedStream); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- worker.EnsureTopology(b.ctx, b.js, b.topo) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("upgrade: %v", err)
		}
	}
	if err := worker.EnsureTopology(b.ctx, b.js, b.topo); err != nil {
		t.Fatalf("again: %v", err)
	}
	s, err := b.js.Stream(b.ctx, worker.ParkedStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if !cfg.AllowMsgSchedules || !cfg.AllowRollup || cfg.Retention != jetstream.WorkQueuePolicy || cfg.Replicas != b.topo.Replicas {
		t.Fatalf("parked stream: %+v", cfg)
	}
	for name, want := range map[string]string{worker.ParkedConsumerName: worker.ParkedPrefix + ".due.interactive.>", worker.ParkedBulkConsumerName: worker.ParkedPrefix + ".due.bulk.>"} {
		c, err := b.js.Consumer(b.ctx, worker.ParkedStream, name)
		if err != nil {
			t.Fatal(err)
		}
		f := c.CachedInfo().Config.FilterSubjects
		if c.CachedInfo().Config.FilterSubject != want && !(len(f) == 1 && f[0] == want) {
			t.Errorf("consumer %s filters %q %v, want %s", name, c.CachedInfo().Config.FilterSubject, f, want)
		}
	}
}

// TestParkAfterSetting: worker.park_after's 0 means never park (Config's
// negative), its default the worker's ParkAfterDefault.
func TestParkAfterSetting(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: -1, settings.DefaultParkAfter: worker.ParkAfterDefault, time.Minute: time.Minute} {
		w := settings.Default().Keyrelay.Worker
		w.ParkAfter = in
		if got := worker.ConfigFrom(w).ParkAfter; got != want {
			t.Errorf("park_after %v: Config %v, want %v", in, got, want)
		}
	}
}

// TestParkedEventOutlivesItsLaneMessage: events parked while their backend
// is down, whose lane messages then leave the events stream (its head
// purged, as events_max_age or the trimmer of events_max_bytes do), are
// still each written once and confirmed once when the backend is back:
// their parked messages carry a copy. A plaintext value (allowed here) is
// parked as a pin, with no copy (its copy would be a second plaintext
// copy) and none of its headers: its lane message, which this purge below
// its sequence leaves, is the only one. No value is in the parked stream
// in clear, nor in the logs. (With bare references, every parked event
// here was terminated as invalid and never confirmed.)
func TestParkedEventOutlivesItsLaneMessage(t *testing.T) {
	const sentinel = "sk-SENTINEL-park-7d1e90"
	b, down := parkSetup(t, 256)
	b.kr.AllowPlaintext(true)
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	var evs []*events.Event
	for i := 0; i < 8; i++ {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, sentinel+fmt.Sprint(i)))
	}
	// A delete carries no value: it is parked with its copy too.
	evs = append(evs, b.keyEvent(events.KeyDeleted, "team-a", "key-gone", 1, ""))
	b.publish(evs...)
	plain := rawKeyEvent(t, "evt-plain-parked", "team-a", "key-plain",
		`{"alg":"plaintext","ct":"`+base64Std([]byte(sentinel+"-plain"))+`"}`)
	plainSeq, err := b.pub.Publish(b.ctx, plain)
	if err != nil {
		t.Fatal(err)
	}
	// Every event parked (acked on its lane, its parked message stored),
	// the plaintext one as a pin.
	waitWithin(t, 30*time.Second, "every event parked", func() bool {
		msgs, _ := b.parkedState()
		return b.ackFloor(worker.EventsStream, worker.ConsumerName) == plainSeq && msgs == uint64(len(evs)+1)
	})
	pins := 0
	for _, m := range b.rawMessages(worker.ParkedStream) {
		if pinned := strings.HasSuffix(m.Subject, ".pin"); pinned != strings.Contains(m.Subject, "key-plain") {
			t.Errorf("parked message %s: pinned %v, want only the plaintext event's", m.Subject, pinned)
		} else if pinned {
			pins++
			for name := range m.Header {
				if !strings.HasPrefix(name, "Nats-") && name != "Keyrelay-Parked-Deliveries" {
					t.Errorf("the pin %s carries header %s of its event", m.Subject, name)
				}
			}
			if len(m.Data) != 0 {
				t.Errorf("the pin %s carries %d bytes", m.Subject, len(m.Data))
			}
		}
		if strings.Contains(string(m.Data), sentinel) || strings.Contains(string(m.Data), base64Std([]byte(sentinel))) {
			t.Errorf("parked message %s holds a value in clear", m.Subject)
		}
	}
	s, err := b.js.Stream(b.ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if pins != 1 {
		t.Fatalf("%d pins, want the plaintext event's", pins)
	}
	if err := s.Purge(b.ctx, jetstream.WithPurgeSequence(plainSeq)); err != nil {
		t.Fatal(err)
	}
	down.down.Store(false)
	confs := b.waitConfirmed(append(evs, plain), 60*time.Second)
	for id, c := range confs {
		want := events.StatusStored
		if id == evs[len(evs)-1].ID {
			want = events.StatusDeleted
		}
		if c.Status != want {
			t.Errorf("%s: %s %s, want %s", id, c.Status, c.Reason, want)
		}
	}
	for i, ev := range evs[:len(evs)-1] {
		if n := down.putsOf(name(ev.TeamID, ev.KeyID)); n != 1 {
			t.Errorf("%s: %d writes, want 1", ev.KeyID, n)
		}
		if v := b.value("local", name(ev.TeamID, ev.KeyID)); v != sentinel+fmt.Sprint(i) {
			t.Errorf("%s: stored %q", ev.KeyID, v)
		}
	}
	if got := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", "copy")); got < float64(len(evs)) {
		t.Errorf("handled from a copy %v times, want at least %d", got, len(evs))
	}
	waitWithin(t, 30*time.Second, "the parked stream drained", func() bool { msgs, pending := b.parkedState(); return msgs == 0 && pending == 0 })
	for id, n := range b.confirmationCounts() {
		if n != 1 {
			t.Errorf("event %s: %d confirmations", id, n)
		}
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "handled from its copy") {
		t.Error("no log line for an event handled from its copy")
	}
	if strings.Contains(logs, sentinel) {
		t.Error("a value in the logs")
	}
}

// TestParkedEventReadPastALaggingReplica: every direct get of a parked
// event's lane message answers "not found", as a replica that lags its
// stream does on a cluster. The worker asks the stream's leader before it
// takes the message for gone: each event is handled from its lane message
// (neither from its copy nor terminated), written once and confirmed.
// (Taking the direct get's answer, each was terminated as a copy of a
// message its lane never dropped, and never confirmed.)
func TestParkedEventReadPastALaggingReplica(t *testing.T) {
	b, down := parkSetup(t, 256)
	defer worker.SetLaneDirectGetHook(func() bool { return true })()
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	var evs []*events.Event
	for i := 0; i < 4; i++ {
		evs = append(evs, b.keyEvent(events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, "sk-a"))
	}
	b.publish(evs...)
	waitWithin(t, 30*time.Second, "every event parked", func() bool { msgs, _ := b.parkedState(); return msgs == uint64(len(evs)) })
	down.down.Store(false)
	b.storedOnce(down, evs, 60*time.Second)
	for _, outcome := range []string{"copy", "invalid"} {
		if got := testutil.ToFloat64(b.metrics.Parked.WithLabelValues("interactive", outcome)); got != 0 {
			t.Errorf("parked outcome %q: %v, want 0", outcome, got)
		}
	}
}

// TestParkedMessageHeldWhileItsEventIsRead: reading a parked event's lane
// message may wait out NATS trouble for longer than ack_wait. The parked
// message is being worked on meanwhile and must not be delivered again
// (here to a second handler of the same process) until it is handled.
func TestParkedMessageHeldWhileItsEventIsRead(t *testing.T) {
	b, down := parkSetup(t, 256)
	var slow atomic.Bool
	var reading, most atomic.Int32
	defer worker.SetLaneDirectGetHook(func() bool {
		if slow.CompareAndSwap(true, false) {
			n := reading.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(3 * b.topo.AckWait) // NATS trouble, as seen from the read
			reading.Add(-1)
		} else if reading.Load() > 0 {
			most.Store(max(most.Load(), 2)) // read again while the first read waits
		}
		return false
	})()
	down.down.Store(true)
	b.startWorker(func(c *worker.Config) { c.ParkAfter = time.Second })
	evs := []*events.Event{b.keyEvent(events.KeyCreated, "team-a", "key-held", 1, "sk-a")}
	b.publish(evs...)
	waitWithin(t, 30*time.Second, "the event parked", func() bool { msgs, _ := b.parkedState(); return msgs == 1 })
	slow.Store(true)
	down.down.Store(false)
	b.storedOnce(down, evs, 90*time.Second)
	if n := most.Load(); n != 1 {
		t.Errorf("the parked message was read by %d handlers at once; want 1 (delivered again while it was being read)", n)
	}
}
