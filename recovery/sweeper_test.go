package recovery_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// TestSweeperLogsACorruptEntryOncePerRevision: the sweeper of `keyrelay
// serve` meets the same corrupt ledger entry on every sweep. It counts
// each sighting, but logs the entry once per revision: a second sweep over
// the same entry logs nothing new, a new corrupt write of it is logged
// again. The log names the key and never holds the entry's bytes.
func TestSweeperLogsACorruptEntryOncePerRevision(t *testing.T) {
	p := newPipeline(t)
	for i := range 2 {
		p.publish(t, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, sentinel))
	}
	p.settings(t, "team-a", 10, moveTarget)
	lkv, err := p.js.KeyValue(p.ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	bad := worker.LedgerKey("team-a", "key-bad")
	corrupt := func() uint64 {
		rev, err := lkv.Put(p.ctx, bad, []byte(`{"generation":1,"sealed":"`+sentinel))
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	rev1 := corrupt()

	core, logs := observer.New(zapcore.WarnLevel)
	d := p.deps()
	d.Logger = zap.New(core)
	counted := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyrelay_corrupt_entries_total"}, []string{"bucket"})
	m := recovery.Migrations{KV: p.js2, JS: p.js}
	sw := recovery.NewSweeper(d, m, recovery.SweeperConfig{Grace: time.Hour, CorruptEntries: counted})
	// sweep asks for the move again (the last sweep finished it) and sweeps.
	sweep := func() {
		t.Helper()
		if err := m.Record(p.ctx, &recovery.MigrationRecord{Team: "team-a", To: moveTarget, State: recovery.MigrationRequested,
			RequestedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		if err := sw.Sweep(p.ctx); err != nil {
			t.Fatal(err)
		}
		if r, _, err := m.Get(p.ctx, "team-a"); err != nil || r == nil || r.State != recovery.MigrationMoved {
			t.Fatalf("record after the sweep: %+v %v", r, err)
		}
	}
	// logged returns the revisions of the warnings naming bad.
	logged := func() []uint64 {
		var revs []uint64
		for _, e := range logs.All() {
			if strings.Contains(e.Message, sentinel) {
				t.Fatal("a log message holds the entry's bytes")
			}
			fields := e.ContextMap()
			for _, v := range fields {
				if s, ok := v.(string); ok && strings.Contains(s, sentinel) {
					t.Fatalf("a log field holds the entry's bytes: %v", fields)
				}
			}
			if fields["key"] == bad {
				revs = append(revs, fields["revision"].(uint64))
			}
		}
		return revs
	}

	sweep()
	sweep()
	if got := logged(); len(got) != 1 || got[0] != rev1 {
		t.Fatalf("after two sweeps over one corrupt entry: logged at revisions %v, want once, at %d", got, rev1)
	}
	if got := testutil.ToFloat64(counted.WithLabelValues(worker.LedgerBucket)); got != 2 {
		t.Fatalf("counted %v sightings, want 2", got)
	}

	rev2 := corrupt()
	sweep()
	if got := logged(); len(got) != 2 || got[1] != rev2 {
		t.Fatalf("after a new corrupt revision: logged at revisions %v, want %d then %d", got, rev1, rev2)
	}
	if got := testutil.ToFloat64(counted.WithLabelValues(worker.LedgerBucket)); got != 3 {
		t.Fatalf("counted %v sightings, want 3", got)
	}
}
