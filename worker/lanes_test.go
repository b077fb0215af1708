package worker_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// gatedPut blocks every Put of a name containing "/bulk-" until open is
// closed, counting the Puts waiting.
type gatedPut struct {
	providers.Provider
	open    chan struct{}
	waiting *atomic.Int64
}

func (g gatedPut) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	if strings.Contains(r.Name, "/bulk-") {
		g.waiting.Add(1)
		select {
		case <-g.open:
		case <-ctx.Done():
			g.waiting.Add(-1)
			return providers.PutResult{}, ctx.Err()
		}
		g.waiting.Add(-1)
	}
	return g.Provider.Put(ctx, r)
}

func (g gatedPut) Unwrap() providers.Provider { return g.Provider }

// TestBulkLaneNeverHoldsInteractiveSlots: bulk-lane events are consumed
// with slots of their own. With every bulk slot (worker and backend) held
// by writes that do not return, the gateway's events on the same backend
// are still written and confirmed; the bulk events all complete once their
// backend answers, each confirmed once with lane "bulk".
func TestBulkLaneNeverHoldsInteractiveSlots(t *testing.T) {
	open := make(chan struct{})
	var waiting atomic.Int64
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { return gatedPut{p, open, &waiting} },
	}})
	const bulkSlots, nBulk, nGateway = 4, 40, 10
	b.startWorker(func(c *worker.Config) {
		c.Concurrency, c.BulkConcurrency = 4, bulkSlots
		// The calls that do not return must outlive the test's wait.
		c.CallTimeout, c.ClaimLease = 20*time.Second, 25*time.Second
		c.AckWait = 30 * time.Second
	})
	gen := uint64(time.Now().UnixMicro())
	for i := range nBulk {
		ev := b.keyEvent(events.KeyCreated, "team-a", "bulk-"+itoa(uint64(i)), gen, "bulk-value")
		ev.JobID = "job-lanes"
		if _, err := b.pub.PublishIn(b.ctx, events.LaneBulk, ev); err != nil {
			t.Fatal(err)
		}
	}
	// Its backend share (half its slots) at least; more while borrowing.
	waitFor(t, func() bool { return waiting.Load() >= bulkSlots/2 })
	time.Sleep(300 * time.Millisecond)
	var gw []*events.Event
	for i := range nGateway {
		gw = append(gw, b.keyEvent(events.KeyCreated, "team-a", "gw-"+itoa(uint64(i)), 0, "gw-value"))
	}
	b.publish(gw...)
	confs := byEventID(b.confirmations(nGateway, 30*time.Second))
	for _, ev := range gw {
		c := confs[ev.ID]
		if c == nil || c.Status != events.StatusStored || c.Lane != events.LaneInteractive {
			t.Fatalf("gateway event %s: confirmation %+v, want stored on the interactive lane", ev.KeyID, c)
		}
	}
	if n := len(confs); n != nGateway {
		t.Fatalf("%d confirmations while the bulk writes hang, want only the %d gateway ones", n, nGateway)
	}
	if w := waiting.Load(); w < bulkSlots/2 || w > bulkSlots {
		t.Fatalf("%d bulk writes in flight, want its share to its %d slots", w, bulkSlots)
	}

	close(open)
	all := b.confirmations(nGateway+nBulk, time.Minute)
	bulk := 0
	for _, c := range all {
		if strings.HasPrefix(c.KeyID, "bulk-") {
			bulk++
			if c.Status != events.StatusStored || c.Lane != events.LaneBulk || c.JobID != "job-lanes" {
				t.Fatalf("bulk confirmation %+v, want stored, lane bulk, job id kept", c)
			}
			if got := b.value("local", name("team-a", c.KeyID)); got != "bulk-value" {
				t.Fatalf("%s holds %q", c.KeyID, got)
			}
		}
	}
	if bulk != nBulk || len(all) != nGateway+nBulk {
		t.Fatalf("%d bulk confirmations of %d (%d in all)", bulk, nBulk, len(all))
	}
}

// TestBulkLaneRules: the bulk lane takes key events with a generation and
// nothing else. A settings event or a key event without a generation
// published there is rejected with its reason; rejections of the two
// lanes' invalid messages at the same stream sequence do not collide.
func TestBulkLaneRules(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	// Sequence 1 of each stream is invalid.
	b.publishRaw("keyrelay.events.team-a.k1.key.created", []byte("{not json"))
	noGen := b.keyEvent(events.KeyCreated, "team-a", "k1", 0, "v")
	data, err := noGen.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b.publishRaw(noGen.SubjectIn(events.LaneBulk), data)
	// A settings event on the bulk lane cannot even be published there
	// through the client.
	set := b.settingsEvent("team-a", 1, &events.TeamSettings{})
	if _, err := b.pub.PublishIn(b.ctx, events.LaneBulk, set); err == nil {
		t.Fatal("client published a settings event on the bulk lane")
	}
	sd, _ := set.Encode()
	b.publishRaw("keyrelay.bulk.team-a.k2.key.created", sd)
	confs := b.confirmations(3, 30*time.Second)
	var interactive, bulkNoGen, bulkSettings int
	for _, c := range confs {
		if c.Status != events.StatusRejected {
			t.Fatalf("confirmation %+v, want rejected", c)
		}
		switch {
		case c.Lane == events.LaneInteractive:
			interactive++
		case c.ClaimedEventID == noGen.ID && strings.Contains(c.Reason, "generation"):
			bulkNoGen++
		case c.Lane == events.LaneBulk && strings.Contains(c.Reason, "subject does not match"):
			bulkSettings++
		default:
			t.Fatalf("unexpected confirmation %+v", c)
		}
	}
	if interactive != 1 || bulkNoGen != 1 || bulkSettings != 1 {
		t.Fatalf("rejections: interactive %d, bulk without generation %d, settings on bulk %d; want 1 each", interactive, bulkNoGen, bulkSettings)
	}
	dl := b.rawMessages(worker.DLQStream)
	if len(dl) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dl))
	}
}
