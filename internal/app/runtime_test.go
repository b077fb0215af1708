package app

import (
	"testing"
	"time"
)

func TestGCPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name string
		live uint64
		want int
	}{
		{"unknown", 0, GCPercentDefault},
		{"small heap keeps the latency ratio", 8 * mib, GCPercentDefault},
		{"at 16 MiB 400% is exactly the headroom", 16 * mib, 400},
		{"32 MiB: 64 MiB of garbage is 200%", 32 * mib, 200},
		{"64 MiB: 100%", 64 * mib, 100},
		{"100 MiB: 64%", 100 * mib, 64},
		{"200 MiB: 32%", 200 * mib, 32},
		{"full caches: the floor", 400 * mib, GCPercentFloor},
		{"huge heap: still the floor", 4096 * mib, GCPercentFloor},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gcPercentFor(tc.live); got != tc.want {
				t.Fatalf("gcPercentFor(%d MiB) = %d, want %d", tc.live/mib, got, tc.want)
			}
		})
	}
}

func TestGCTunerReleases(t *testing.T) {
	const mib = 1 << 20
	period := 2 * time.Second
	t0 := time.Unix(1_000_000, 0)
	busy := func(i int) uint64 { return uint64(i) * 100 * mib } // 50 MiB/s
	type reading struct {
		r           heapReading
		wantPercent int
		wantRelease bool
	}
	for _, tc := range []struct {
		name     string
		readings []reading
	}{
		{"a small busy heap: nothing to do", []reading{
			{heapReading{live: 8 * mib, free: 4 * mib, objects: 20 * mib, allocs: busy(1)}, 0, false},
			{heapReading{live: 8 * mib, free: 4 * mib, objects: 30 * mib, allocs: busy(2)}, 0, false},
		}},
		{"a large live heap lowers the ratio, once", []reading{
			{heapReading{live: 200 * mib, objects: 210 * mib, allocs: busy(1)}, 32, false},
			{heapReading{live: 205 * mib, objects: 230 * mib, allocs: busy(2)}, 0, false},
			{heapReading{live: 8 * mib, objects: 9 * mib, allocs: busy(3)}, GCPercentDefault, false},
		}},
		{"free heap while busy: left to the scavenger", []reading{
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1)}, 0, false},
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(2)}, 0, false},
		}},
		{"free heap once idle: released, not again within releaseEvery", []reading{
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1)}, 0, false},
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1) + 100}, 0, true},
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1) + 200}, 0, false},
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1) + 300}, 0, false},
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1) + 400}, 0, false},
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1) + 500}, 0, false},
			{heapReading{live: 8 * mib, free: 40 * mib, objects: 9 * mib, allocs: busy(1) + 600}, 0, true},
		}},
		{"idle with garbage after a burst: collected", []reading{
			{heapReading{live: 150 * mib, objects: 190 * mib, allocs: busy(1)}, 42, false},
			{heapReading{live: 150 * mib, objects: 190 * mib, allocs: busy(1) + 100}, 0, true},
		}},
		{"busy with garbage: left to the collector", []reading{
			{heapReading{live: 150 * mib, objects: 190 * mib, allocs: busy(1)}, 42, false},
			{heapReading{live: 150 * mib, objects: 190 * mib, allocs: busy(2)}, 0, false},
		}},
		{"idle, free heap and garbage each under the bound, together over it: released", []reading{
			{heapReading{live: 190 * mib, free: 12 * mib, objects: 198 * mib, allocs: busy(1)}, GCPercentFloor + 8, false},
			{heapReading{live: 190 * mib, free: 12 * mib, objects: 198 * mib, allocs: busy(1) + 100}, 0, true},
		}},
		{"idle, a little of both: nothing", []reading{
			{heapReading{live: 190 * mib, free: 6 * mib, objects: 198 * mib, allocs: busy(1)}, GCPercentFloor + 8, false},
			{heapReading{live: 190 * mib, free: 6 * mib, objects: 198 * mib, allocs: busy(1) + 100}, 0, false},
		}},
		{"idle without garbage: nothing", []reading{
			{heapReading{live: 150 * mib, objects: 155 * mib, allocs: busy(1)}, 42, false},
			{heapReading{live: 150 * mib, objects: 155 * mib, allocs: busy(1)}, 0, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := gcTuner{percent: GCPercentDefault}
			for i, r := range tc.readings {
				p, rel := g.step(t0.Add(time.Duration(i+1)*period), period, r.r)
				if p != r.wantPercent || rel != r.wantRelease {
					t.Fatalf("reading %d: step = (%d, %v), want (%d, %v)", i, p, rel, r.wantPercent, r.wantRelease)
				}
			}
		})
	}
}
