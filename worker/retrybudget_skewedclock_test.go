package worker_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// TestRetryBudgetWhateverTheLocalClock: another worker, its clock right,
// failed an event once and left its retry record in the key's ledger entry
// (FirstFailure from its clock). A worker whose clock runs ten minutes
// ahead gets the event's next delivery, and the provider fails once more.
// With retry_for a minute, the budget has not run out by the server's
// time: the event is retried and stored, not dead-lettered as out of
// budget for a clock. A record begun longer ago than retry_for by the
// server's time too is spent as before. Before, the skewed worker read
// ten minutes spent and dead-lettered the event on its first failure.
func TestRetryBudgetWhateverTheLocalClock(t *testing.T) {
	const retryFor = time.Minute
	cases := map[string]struct {
		began time.Duration // when the other worker's record began, from now
		want  events.Status
	}{
		"begun just now":         {began: 0, want: events.StatusStored},
		"begun before retry_for": {began: -2 * retryFor, want: events.StatusFailed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			const team, key = "team-r", "key-r"
			fp := &failingPut{}
			fp.fails.Store(1)
			b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
				"local": func(p providers.Provider) providers.Provider { fp.Provider = p; return fp },
			}})
			w, _ := b.startWorker(func(c *worker.Config) { c.RetryFor, c.InProcessAttempts = retryFor, 1 })
			w.SetClaimClock(func() time.Time { return time.Now().Add(10 * time.Minute) })

			// The record as the other worker left it, for the stream
			// message the event is about to be.
			s, err := b.js.Stream(b.ctx, worker.EventsStream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(b.ctx)
			if err != nil {
				t.Fatal(err)
			}
			ev := b.keyEvent(events.KeyCreated, team, key, 1, "sk-budget")
			seq := info.State.LastSeq + 1
			kv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
			if err != nil {
				t.Fatal(err)
			}
			rec := &worker.RetryRecord{EventID: ev.ID, StreamSeq: seq, Lane: events.LaneInteractive,
				FirstFailure: time.Now().Add(tc.began).UTC(), Failures: 1}
			if _, err := worker.NewLedger(kv).Put(b.ctx, team, key, &worker.LedgerEntry{Retry: rec}, 0); err != nil {
				t.Fatal(err)
			}
			if got, err := b.pub.Publish(b.ctx, ev); err != nil || got != seq {
				t.Fatalf("published at %d (%v), want %d", got, err, seq)
			}

			c := b.waitConfirmed([]*events.Event{ev}, 30*time.Second)[ev.ID]
			if c.Status != tc.want {
				t.Fatalf("%s (%s) after %d provider calls, want %s", c.Status, c.Reason, fp.calls.Load(), tc.want)
			}
			want := 0
			if tc.want == events.StatusFailed {
				want = 1
			}
			if dead := len(b.rawMessages(worker.DLQStream)); dead != want {
				t.Errorf("%d dead letters, want %d", dead, want)
			}
		})
	}
}
