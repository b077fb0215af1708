package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/settings"
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

// TestLedgerClockEndsACorruptClaim: a claim read from the server ends,
// by the server's time, settings.MaxClaimLease after it was stored at the
// latest, whatever its recorded times say. No writer takes a longer lease,
// so only a corrupt or forged entry reaches the bound: an Until in 9999 or
// a Taken in 1970 used to hold the key for ever. A genuine claim, its
// dead-claim bound and a claim whose stored time is not known are read as
// before.
func TestLedgerClockEndsACorruptClaim(t *testing.T) {
	const lease = 30 * time.Second
	var k ledgerClock
	now := time.Now()
	k.observe(now) // the server's time is now
	longAgo := now.Add(-settings.MaxClaimLease - time.Second)
	recent := now.Add(-time.Minute)
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	epoch := time.Unix(1, 0)
	cases := map[string]struct {
		c      *Claim
		stands bool
	}{
		"Until in 9999, stored past the bound":       {&Claim{Until: far, read: true, stored: longAgo}, false},
		"Until in 9999 with Taken, past the bound":   {&Claim{Until: far, Taken: now, read: true, stored: longAgo}, false},
		"Taken in 1970, stored past the bound":       {&Claim{Until: now.Add(-time.Minute), Taken: epoch, read: true, stored: longAgo}, false},
		"Until in 9999, stored a minute ago":         {&Claim{Until: far, read: true, stored: recent}, true},
		"Taken in 1970, stored a minute ago":         {&Claim{Until: now.Add(-time.Minute), Taken: epoch, read: true, stored: recent}, true},
		"genuine claim, stored now":                  {&Claim{Until: now.Add(lease), Taken: now, read: true, stored: now}, true},
		"Until in 9999, stored time not known":       {&Claim{Until: far, read: true}, true},
		"this process's own, Until in 9999":          {&Claim{Until: far, stored: longAgo}, true},
		"genuine claim of a writer an hour ahead":    {&Claim{Until: now.Add(time.Hour + lease), Taken: now.Add(time.Hour), read: true, stored: now}, true},
		"writer two hours ahead, stored long ago":    {&Claim{Until: now.Add(2*time.Hour + lease), Taken: now.Add(2 * time.Hour), read: true, stored: longAgo}, false},
		"Taken in 1970, stored past the bound minus": {&Claim{Until: now, Taken: epoch, read: true, stored: now.Add(-settings.MaxClaimLease + time.Minute)}, true},
	}
	for name, tc := range cases {
		if got := k.stands(tc.c, now, 0); got != tc.stands {
			left, known := k.left(tc.c, now, 0)
			t.Errorf("%s: stands %v (left %v, known %v), want %v", name, got, left, known, tc.stands)
		}
	}
	// A claim cut by the bound still gets the dead-claim wait after it.
	c := &Claim{Until: far, read: true, stored: now.Add(-settings.MaxClaimLease)}
	if left, _ := k.left(c, now, 8*time.Second); left < 7*time.Second || left > 9*time.Second {
		t.Errorf("%v left to the dead-claim bound of a claim at its bound, want about 8s", left)
	}
	// Writers cannot take a longer lease: configuration refuses it.
	cfg := settings.Default()
	cfg.Keyrelay.Worker.ClaimLease = settings.MaxClaimLease + time.Second
	cfg.Keyrelay.Worker.AckWait = 2 * settings.MaxClaimLease
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "claim_lease") {
		t.Errorf("claim_lease over MaxClaimLease: %v, want a claim_lease error", err)
	}
}
