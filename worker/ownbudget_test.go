package worker_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// blockingPut makes every Put wait for its context's end while block is
// set: a provider call can then only end by a deadline.
type blockingPut struct {
	providers.Provider
	block atomic.Bool
	calls atomic.Int64
}

func (p *blockingPut) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	p.calls.Add(1)
	if p.block.Load() {
		<-ctx.Done()
		return providers.PutResult{}, ctx.Err()
	}
	return p.Provider.Put(ctx, r)
}

// TestOwnDeadlineIsAWait: a provider call that keyrelay's own deadline (here
// the claims request's, a TTL of 1 s, under a call_timeout of 3 s) cuts
// short is not the provider's failure. The event waits: no failure is
// recorded (no redelivery-kind retry), the breaker counts nothing (two
// failures would open it), nothing is dead-lettered; it is stored once the
// provider answers in time.
func TestOwnDeadlineIsAWait(t *testing.T) {
	bp := &blockingPut{}
	bp.block.Store(true)
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { bp.Provider = p; return bp },
	}})
	w, _ := b.startWorker(func(c *worker.Config) {
		c.ClaimLease, c.CallTimeout = 4*time.Second, 3*time.Second
		c.BreakerFailures, c.BreakerOpen = 2, 30*time.Second
		c.RetryFor = time.Minute
	})
	kv, err := b.js.KeyValue(b.ctx, worker.OwnershipBucket)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ownership.NewRequest(kv, ownership.RequestConfig{Key: worker.WriterLeaseKey, Requester: "short-request", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(b.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = req.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if _, err := req.Granted(b.ctx); err != nil {
		t.Fatal(err)
	}
	w.UseClaimsRequest(rctx, req)

	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-one")
	b.publish(ev)
	// Three calls cut short (or, counted as failures, two: enough to open
	// the breaker).
	redeliveries := func() float64 { return testutil.ToFloat64(b.metrics.Retries.WithLabelValues("redelivery")) }
	for end := time.Now().Add(30 * time.Second); bp.calls.Load() < 3 && redeliveries() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d provider calls, want 3 cut short", bp.calls.Load())
		}
	}
	if n := redeliveries(); n != 0 {
		t.Errorf("%v redelivery-kind retries: calls our own deadline cut short were counted as provider failures", n)
	}
	if n := testutil.ToFloat64(b.metrics.BreakerOpen.WithLabelValues("local")); n != 0 {
		t.Errorf("the breaker opened on calls our own deadline cut short")
	}
	bp.block.Store(false)
	if c := b.waitConfirmed([]*events.Event{ev}, 30*time.Second)[ev.ID]; c.Status != events.StatusStored {
		t.Fatalf("%s %s", c.Status, c.Reason)
	}
	if n := len(b.rawMessages(worker.DLQStream)); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
}

// failingPut fails the first fails Puts with a retryable provider error.
type failingPut struct {
	providers.Provider
	fails atomic.Int64
	calls atomic.Int64
}

func (p *failingPut) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	p.calls.Add(1)
	if p.fails.Add(-1) >= 0 {
		return providers.PutResult{}, providers.NewError("local", "put", r.Name, providers.Retryable, providers.ErrUnavailable)
	}
	return p.Provider.Put(ctx, r)
}

// TestInfraWaitsDoNotSpendRetryFor: retry_for is 3 s; the provider fails
// once, then the ledger refuses writes for 4 s (the event waits), then the
// provider fails once more. The waits are not provider-failing time: the
// second failure is retried, not dead-lettered, and the event is stored
// when the provider answers.
func TestInfraWaitsDoNotSpendRetryFor(t *testing.T) {
	fp := &failingPut{}
	fp.fails.Store(2)
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { fp.Provider = p; return fp },
	}})
	b.startWorker(func(c *worker.Config) {
		c.RetryFor, c.InfraWait, c.InProcessAttempts = 3*time.Second, 500*time.Millisecond, 1
		c.RetryInitial, c.RetryMax = time.Second, 2*time.Second
	})
	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-one")
	b.publish(ev)
	for end := time.Now().Add(20 * time.Second); testutil.ToFloat64(b.metrics.Retries.WithLabelValues("redelivery")) < 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("no provider failure")
		}
	}

	s, err := b.js.Stream(b.ctx, "KV_"+worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	paused := cfg
	paused.Subjects = []string{"$KV.KEYRELAY_LEDGER_PAUSED.>"}
	if _, err := b.js.UpdateStream(b.ctx, paused); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	if _, err := b.js.UpdateStream(b.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if c := b.waitConfirmed([]*events.Event{ev}, 30*time.Second)[ev.ID]; c.Status != events.StatusStored {
		t.Fatalf("%s %s", c.Status, c.Reason)
	}
	if n := fp.calls.Load(); n != 3 {
		t.Errorf("%d provider calls, want 3 (two failures, then the write)", n)
	}
	if n := len(b.rawMessages(worker.DLQStream)); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
}

// moveWorker runs a worker (placeWorker) that records the moves it is
// asked for; fail makes a call fail (true: fail this one).
func moveWorker(b *bundle, fail func() bool) (w *worker.Worker, moves func() [][3]string) {
	var mu sync.Mutex
	var got [][3]string
	w = placeWorker(b, func(_ context.Context, team string, from, to worker.TeamPlace) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, [3]string{team, from.Backend, to.Backend})
		if fail != nil && fail() {
			return errors.New("migration record: no responders")
		}
		return nil
	})
	return w, func() [][3]string {
		mu.Lock()
		defer mu.Unlock()
		return append([][3]string(nil), got...)
	}
}

// TestMoveRequestedAfterCatchUp: a key event's catch-up (Teams.Current)
// applies a settings event that moves the team before the worker handles
// that event; the move is requested all the same, once.
func TestMoveRequestedAfterCatchUp(t *testing.T) {
	b := setup(t, setupOptions{backends: []string{"hashicorp_vault"}})
	s := b.settingsEvent("team-m", 1, &events.TeamSettings{Backend: "hashicorp_vault"})
	b.publish(s)
	kv, err := b.js.KeyValue(b.ctx, worker.TeamsBucket)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := b.js.Stream(b.ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	st, err := worker.NewTeams(kv, stream, b.log).Current(b.ctx, "team-m", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st.Settings == nil || st.Settings.Backend != "hashicorp_vault" || st.EventID != s.ID {
		t.Fatalf("catch-up state %+v", st)
	}

	_, moves := moveWorker(b, nil)
	if c := b.waitConfirmed([]*events.Event{s}, 30*time.Second)[s.ID]; c.Status != events.StatusStored {
		t.Fatalf("settings event: %s %s", c.Status, c.Reason)
	}
	if got := moves(); len(got) != 1 || got[0] != [3]string{"team-m", "local", "hashicorp_vault"} {
		t.Fatalf("OnPlaceChange calls: %v, want one local -> hashicorp_vault", got)
	}
}

// TestFailedMoveRequestIsRetried: a move request that fails (NATS trouble)
// hands the settings event back; its redelivery requests the move again.
func TestFailedMoveRequestIsRetried(t *testing.T) {
	b := setup(t, setupOptions{backends: []string{"hashicorp_vault"}})
	var n atomic.Int64
	_, moves := moveWorker(b, func() bool { return n.Add(1) == 1 })
	s := b.settingsEvent("team-m", 1, &events.TeamSettings{Backend: "hashicorp_vault"})
	b.publish(s)
	if c := b.waitConfirmed([]*events.Event{s}, 30*time.Second)[s.ID]; c.Status != events.StatusStored {
		t.Fatalf("settings event: %s %s", c.Status, c.Reason)
	}
	want := [3]string{"team-m", "local", "hashicorp_vault"}
	if got := moves(); len(got) != 2 || got[0] != want || got[1] != want {
		t.Fatalf("OnPlaceChange calls: %v, want two (a failed one, then its retry) local -> hashicorp_vault", got)
	}
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n != 1 {
		t.Fatalf("%d confirmations, want 1", n)
	}
}
