package recovery_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// hidingKV is the ledger's bucket whose watches leave one key out of their
// listing, as nats.go's watch does with a key written while it lists: the
// key's message is replaced before it is delivered, and the replacement
// arrives after the end-of-listing marker. Here the key is left out every
// time, not only when a write happens to land in that window.
type hidingKV struct {
	jetstream.KeyValue
	hide string
}

func (h hidingKV) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := h.KeyValue.WatchFiltered(ctx, keys, opts...)
	if err != nil {
		return nil, err
	}
	return newHidingWatcher(w, h.hide), nil
}

func (h hidingKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	w, err := h.KeyValue.WatchAll(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return newHidingWatcher(w, h.hide), nil
}

// hidingWatcher passes on a watch's entries but those of hide until the
// end-of-listing marker.
type hidingWatcher struct {
	jetstream.KeyWatcher
	out  chan jetstream.KeyValueEntry
	done chan struct{}
	stop sync.Once
}

func newHidingWatcher(w jetstream.KeyWatcher, hide string) *hidingWatcher {
	h := &hidingWatcher{KeyWatcher: w, out: make(chan jetstream.KeyValueEntry), done: make(chan struct{})}
	go func() {
		defer close(h.out)
		listing := true
		for e := range w.Updates() {
			if listing && e != nil && e.Key() == hide {
				continue
			}
			listing = listing && e != nil
			select {
			case h.out <- e:
			case <-h.done:
				return
			}
		}
	}()
	return h
}

func (h *hidingWatcher) Updates() <-chan jetstream.KeyValueEntry { return h.out }

func (h *hidingWatcher) Stop() error {
	h.stop.Do(func() { close(h.done) })
	return h.KeyWatcher.Stop()
}

// TestMigrateScanFindsAKeyTheWatchMissed: the ledger's walk reads the keys
// its watch did not list from the bucket's subjects. For a team's walk
// (migrate, restore and drift scan one team) that read listed nothing: it
// was given the watch's filters after nats.go had rewritten them into
// stream subjects, and prefixed them again. A key rotated while a move
// listed the team was then neither moved nor reported, and stayed on the
// old backend (TestMigrateMovesEveryKeyAndCleansUpAfterGrace's flake).
func TestMigrateScanFindsAKeyTheWatchMissed(t *testing.T) {
	p := newPipeline(t)
	const n = 3
	var evs []*events.Event
	for i := range n {
		evs = append(evs, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, fmt.Sprintf("%s-%d", sentinel, i)))
	}
	evs = append(evs, p.event(t, events.KeyCreated, "team-b", "key-01", 1, sentinel+"-b"))
	p.publish(t, evs...)
	p.settings(t, "team-a", 10, moveTarget)

	lkv, err := p.js.KeyValue(p.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	d := p.deps()
	d.Ledger = worker.NewLedger(hidingKV{KeyValue: lkv, hide: worker.LedgerKey("team-a", "key-01")}, p.js.Conn())
	var progress []recovery.Progress
	rep, err := recovery.Migrate(p.ctx, d, recovery.MigrateConfig{Team: "team-a", To: moveTarget, Grace: time.Hour,
		Progress: func(pr recovery.Progress) { progress = append(progress, pr) }})
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int{}
	for _, r := range rep.Rows {
		rows[r.Team+"/"+r.Key]++
	}
	if rep.Moved != n || rep.Failed != 0 || len(rep.Rows) != n || len(progress) != n {
		t.Fatalf("moved %d, failed %d, %d rows, %d progress calls; want each of the %d keys moved once: %+v",
			rep.Moved, rep.Failed, len(rep.Rows), len(progress), n, rep.Rows)
	}
	for i := range n {
		k := fmt.Sprintf("key-%02d", i)
		if rows["team-a/"+k] != 1 {
			t.Errorf("%s: %d rows, want 1", k, rows["team-a/"+k])
		}
		if got, want := value(t, p, p.store2, secretName("team-a", k)), fmt.Sprintf("%s-%d", sentinel, i); got != want {
			t.Errorf("%s in the new backend: %q, want %q", k, got, want)
		}
		if e, _, err := p.ledger.Get(p.ctx, "team-a", k); err != nil || e.Provider != moveTarget {
			t.Errorf("ledger of %s: %+v (%v)", k, e, err)
		}
	}
	// The keys the watch missed are read within the walk's teams only.
	if value(t, p, p.store2, secretName("team-b", "key-01")) != "" {
		t.Error("another team's key was moved")
	}
}
