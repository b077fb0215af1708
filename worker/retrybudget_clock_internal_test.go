package worker

import (
	"testing"
	"time"
)

// TestRetryBudgetSpentByTheEarlierClock: this process's clock runs ten
// minutes ahead of the servers' and of the worker that began a retry
// record (here the stored times observed are ten minutes behind it). A
// record read from the ledger is spent only as far as both this process's
// clock and the server's time say; not at all while no server time is
// known. A record this process began is spent by its own clock, and a
// process behind the others still reads its own, shorter, time.
func TestRetryBudgetSpentByTheEarlierClock(t *testing.T) {
	const skew = 10 * time.Minute
	near := func(got, want time.Duration) bool { return got >= want && got < want+time.Second }

	var k ledgerClock
	srvNow := time.Now().Add(-skew)
	read := &RetryRecord{FirstFailure: srvNow.Add(-time.Second), clock: &k}
	if got := read.spent(0); got != 0 {
		t.Errorf("spent %v with no server time known, want 0", got)
	}
	k.observe(srvNow)
	if got := read.spent(0); !near(got, time.Second) {
		t.Errorf("spent %v by a clock ten minutes ahead, want about 1s (the server's time)", got)
	}
	if got := read.spent(500 * time.Millisecond); !near(got, 500*time.Millisecond) {
		t.Errorf("spent %v less 500ms of own time, want about 500ms", got)
	}
	long := &RetryRecord{FirstFailure: srvNow.Add(-2 * time.Minute), clock: &k}
	if got := long.spent(0); !near(got, 2*time.Minute) {
		t.Errorf("spent %v, want the server's 2m: a budget runs out by both clocks", got)
	}
	own := &RetryRecord{FirstFailure: time.Now().Add(-time.Minute)}
	if got := own.spent(0); !near(got, time.Minute) {
		t.Errorf("this process's own record spent %v, want its own clock's minute", got)
	}

	// Behind: its own clock is the earlier.
	var b ledgerClock
	behind := func() time.Time { return time.Now().Add(-skew) }
	b.local.Store(&behind)
	b.observe(time.Now())
	if got := (&RetryRecord{FirstFailure: time.Now().Add(-time.Second), clock: &b}).spent(0); got > 0 {
		t.Errorf("spent %v by a clock ten minutes behind, want its own (negative) reading", got)
	}
}
