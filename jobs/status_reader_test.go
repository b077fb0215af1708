package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/worker"
)

// TestStatusReaderReadsOnlyWhatIsStillOpen: `jobs status --watch` reads
// the status every second. A confirmation that says rotated, stored or
// superseded is final, so the reader does not read it again (every read
// of a 100,000-key job read every confirmation, every second, while the
// workers were writing them); an open or failed event is read again, so
// a failure retried from the DLQ shows as rotated. The settled
// confirmations are purged from the stream after the first read: a
// reader that read them again would count them as remaining.
func TestStatusReaderReadsOnlyWhatIsStillOpen(t *testing.T) {
	b := newBare(t)
	j, plan := b.job(t, 6, 0)
	confirm := func(i int, st events.Status) {
		t.Helper()
		c := events.Confirmation{SpecVersion: events.SpecVersion, EventID: plan[i].EventID, TeamID: plan[i].Team, KeyID: plan[i].Key, Status: st, Time: time.Now().UTC()}
		data, _ := json.Marshal(c)
		if _, err := b.js.Publish(b.ctx, events.ConfirmationSubject(plan[i].Team, plan[i].Key, plan[i].EventID), data); err != nil {
			t.Fatal(err)
		}
	}
	confirm(0, events.StatusRotated)
	confirm(1, events.StatusStored)
	confirm(2, events.StatusSuperseded)
	confirm(3, events.StatusFailed)
	r := jobs.NewStatusReader(b.js, b.deps.Store, j.ID)
	st, err := r.Read(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rotated != 2 || st.Superseded != 1 || st.Failed != 1 || st.Remaining != 2 {
		t.Fatalf("first read: %+v", st)
	}
	cs, err := b.js.Stream(b.ctx, worker.ConfirmationsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Purge(b.ctx); err != nil {
		t.Fatal(err)
	}
	confirm(3, events.StatusRotated) // retried from the DLQ
	confirm(4, events.StatusRotated)
	st, err = r.Read(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rotated != 4 || st.Superseded != 1 || st.Failed != 0 || st.Remaining != 1 {
		t.Fatalf("second read: %+v; want 4 rotated (2 kept, the retried failure, a new one), 1 superseded, 1 remaining", st)
	}
	// A new reader (`jobs status` once) reads everything: what the purge
	// removed is remaining again.
	once, err := jobs.GetStatus(b.ctx, b.js, b.deps.Store, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if once.Rotated != 2 || once.Remaining != 4 {
		t.Fatalf("one read after the purge: %+v", once)
	}
}
