package worker_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/worker"
)

// TestExclusiveFarFutureIntentIsClamped: an intent stored with a deadline
// in the year 9999 (and a generation above any event's) would keep its key
// waiting for ever; a new holder cuts its deadline to one lease TTL from
// when it loads it, so the key's events are confirmed within the bound of
// any dead holder's intent (one TTL, then ack_wait + claim_lease).
func TestExclusiveFarFutureIntentIsClamped(t *testing.T) {
	const team, key = "team-f", "key-f"
	b := setup(t, setupOptions{})
	log := ownership.NewIntentLog(b.js, worker.IntentsSubject)
	if err := log.Append(b.ctx, ownership.Intent{Key: worker.LedgerKey(team, key), EventID: "forged", StreamSeq: 999,
		Lane: string(events.LaneInteractive), Generation: 1 << 40, Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	w, _ := b.exclusiveWorker(nil)
	waitHeld(t, w)
	start := time.Now()
	ev := b.keyEvent(events.KeyCreated, team, key, 1, "sk-f")
	b.publish(ev)
	// The bound: TTL 600ms + ack_wait 5s + claim_lease 3s, with slack.
	if c := byEventID(b.confirmations(1, 25*time.Second))[ev.ID]; c == nil || c.Status != events.StatusStored {
		t.Fatalf("the key's event: %+v, want stored", c)
	}
	t.Logf("confirmed %s after publication", time.Since(start).Round(time.Millisecond))
	if got := counterValue(t, b.promReg, "keyrelay_intents_clamped_total", nil); got != 1 {
		t.Errorf("keyrelay_intents_clamped_total %v, want 1", got)
	}
}
