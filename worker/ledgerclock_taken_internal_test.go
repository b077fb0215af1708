package worker

import (
	"testing"
	"time"
)

// TestLedgerClockGivesAClaimItsWritersLease: a claim read from the server
// that records its writer's clock (Taken) stands until its lease as the
// writer counted it (Until − Taken) has run from the server's time it was
// stored, whatever the writer's clock said: a writer ten minutes behind
// writes an Until long past, and its claim stands all the same. The rule
// only ever adds time: a claim without Taken (an older version's) or
// without a known stored time, and one this process holds, read as
// before; one whose Until is later stands until then.
func TestLedgerClockGivesAClaimItsWritersLease(t *testing.T) {
	const lease = 5 * time.Second
	var k ledgerClock
	now := time.Now()
	k.observe(now) // the entry's stored time: the server's time is now
	behind := now.Add(-10 * time.Minute)
	claim := func(taken time.Time, read bool, stored time.Time) *Claim {
		return &Claim{Until: taken.Add(lease), Taken: taken, read: read, stored: stored}
	}
	cases := map[string]struct {
		c    *Claim
		left time.Duration // after now, within a second
	}{
		"writer behind":                   {c: claim(behind, true, now), left: lease},
		"writer behind, stored earlier":   {c: claim(behind, true, now.Add(-2*time.Second)), left: lease - 2*time.Second},
		"writer right":                    {c: claim(now, true, now), left: lease},
		"writer ahead: Until rules":       {c: claim(now.Add(time.Minute), true, now), left: time.Minute + lease},
		"older version: no Taken":         {c: &Claim{Until: behind.Add(lease), read: true, stored: now}, left: behind.Add(lease).Sub(now)},
		"stored time not known":           {c: claim(behind, true, time.Time{}), left: behind.Add(lease).Sub(now)},
		"this process's own (by its own)": {c: claim(behind, false, now), left: behind.Add(lease).Sub(now)},
	}
	for name, tc := range cases {
		left, known := k.left(tc.c, now, 0)
		if !known || left < tc.left-time.Second || left > tc.left+time.Second {
			t.Errorf("%s: %v left (known %v), want about %v", name, left, known, tc.left)
		}
		if want := tc.left > time.Second; k.stands(tc.c, now, 0) != want {
			t.Errorf("%s: stands %v, want %v", name, !want, want)
		}
	}
	// The dead-claim bound runs from the lease's end too.
	if left, _ := k.left(claim(behind, true, now), now, 8*time.Second); left < lease+7*time.Second {
		t.Errorf("%v left to the bound, want about %v", left, lease+8*time.Second)
	}
	// And the server's time ends it: past its lease after it was stored.
	if c := claim(behind, true, now.Add(-lease-time.Second)); k.stands(c, now, 0) {
		t.Error("a claim stands past its writer's lease after it was stored, by every clock")
	}
}
