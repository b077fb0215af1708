package app

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Garbage-collector tuning, unless the environment sets GOGC.
//
// A worker's live heap is small (a few MB of caches) while it allocates per
// event, so Go's default GOGC of 100 collects very often: 400 cut the p99
// publish→confirmation latency at 1,000 events/s from about 6-10 ms to
// about 3 ms in `make bench` on a 2-core machine. But GOGC is a ratio: the
// heap may grow to (1 + GOGC/100) × the live heap before a collection, and
// a process whose caches are full (100,000 lookup entries, the ledger
// cache, the embedded server's subject trees) has a live heap of 100 MB or
// more, so at a fixed 400 it sat at 5× that in RSS (1.2 GiB measured by
// bench/memory, against a target of 256 MiB).
//
// So the ratio adapts to the live heap: the garbage allowed between
// collections is GCHeadroom (64 MiB) or 400% of the live heap, whichever is
// smaller, but never less than GCPercentFloor (25%) of it. Small heaps keep
// the latency gain; large ones keep RSS near the live heap plus 64 MiB, at
// the cost of a collection per 64 MiB allocated (or per quarter of the
// live heap, when that is larger). GOMEMLIMIT, if set, still bounds the heap on top.
const (
	// GCPercentDefault is the ratio for small live heaps.
	GCPercentDefault = 400
	// GCPercentFloor is the lowest ratio the tuner sets.
	GCPercentFloor = 25
	// GCHeadroom is the garbage the tuner aims to allow between collections.
	GCHeadroom = 64 << 20
	// gcTuneEvery is how often the live heap is read.
	gcTuneEvery = 2 * time.Second
)

var tuneOnce sync.Once

// TuneRuntime applies the adaptive GC ratio unless the environment sets
// GOGC. It is idempotent; the tuner runs for the life of the process.
func TuneRuntime() {
	if os.Getenv("GOGC") != "" {
		return
	}
	tuneOnce.Do(func() {
		debug.SetGCPercent(GCPercentDefault)
		go tuneGC(gcTuneEvery)
	})
}

// gcPercentFor is the ratio for a live heap of live bytes.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return GCPercentDefault
	}
	p := int(uint64(GCHeadroom) * 100 / live)
	return max(GCPercentFloor, min(GCPercentDefault, p))
}

// tuneGC reads the live heap (as of the last collection) every period and
// sets the ratio for it, changing it only when it moves by a tenth or more
// (SetGCPercent stops the world briefly).
//
// It also hands memory back to the OS once a burst is over: when the
// process has gone idle (less than idleAllocRate allocated since the last
// reading) and holds more than GCHeadroom/4 of free heap and garbage
// together (free heap, which the runtime's background scavenger returns
// only slowly: 40 MiB was still resident 8 s after a 100,000-key job in
// bench/memory; garbage, which an idle process allocates too little to
// collect until the runtime's forced collection two minutes later), it
// collects and releases at once (debug.FreeOSMemory), at most every
// releaseEvery. Never while busy: a release holds allocations up while it
// returns memory, which would show in the latency of events in flight.
func tuneGC(period time.Duration) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	t := gcTuner{percent: GCPercentDefault}
	for now := range time.Tick(period) {
		metrics.Read(samples)
		var r heapReading
		for i, v := range []*uint64{&r.live, &r.free, &r.objects, &r.allocs} {
			if samples[i].Value.Kind() != metrics.KindUint64 {
				return // not supported by this runtime: keep the default
			}
			*v = samples[i].Value.Uint64()
		}
		setPercent, release := t.step(now, period, r)
		if setPercent != 0 {
			debug.SetGCPercent(setPercent)
		}
		if release {
			debug.FreeOSMemory()
		}
	}
}

// heapReading is one reading of the runtime's heap metrics, in bytes.
type heapReading struct {
	live    uint64 // live heap as of the last collection
	free    uint64 // free heap still mapped
	objects uint64 // heap objects, live and garbage
	allocs  uint64 // cumulative bytes allocated
}

// gcTuner holds tuneGC's decisions between readings.
type gcTuner struct {
	percent     int
	lastRelease time.Time
	lastAllocs  uint64
}

// step takes a reading made at now, period after the previous one, and
// returns the ratio to set (0: keep it) and whether to release memory.
func (t *gcTuner) step(now time.Time, period time.Duration, r heapReading) (setPercent int, release bool) {
	if p := gcPercentFor(r.live); (p-t.percent)*10 >= t.percent || (t.percent-p)*10 >= t.percent {
		t.percent, setPercent = p, p
	}
	idle := t.lastAllocs != 0 && float64(r.allocs-t.lastAllocs) < idleAllocRate*period.Seconds()
	t.lastAllocs = r.allocs
	// The slack an idle process holds: free heap not yet returned and
	// garbage not yet collected, together (either alone may stay under
	// a bound while their sum does not: 23 MiB free and 12 MiB of garbage
	// in one bench/memory run).
	slack := r.free
	if r.objects > r.live {
		slack += r.objects - r.live
	}
	if idle && slack > GCHeadroom/4 && now.Sub(t.lastRelease) >= releaseEvery {
		t.lastRelease = now
		return setPercent, true
	}
	return setPercent, false
}

// idleAllocRate is the allocation rate (bytes/s) below which tuneGC deems
// the process idle: a busy worker allocates tens of megabytes a second,
// and an idle one (pull heartbeats, quota and presence heartbeats, the
// embedded server's housekeeping) about one; below 4 MiB/s the next
// collection of a heap with 16 MiB of garbage or more is seconds away at
// best.
const idleAllocRate = 4 << 20

// releaseEvery bounds how often tuneGC releases memory.
const releaseEvery = 10 * time.Second
