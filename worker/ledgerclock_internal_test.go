package worker

import (
	"testing"
	"time"
)

// TestLedgerClockReadsClaimsByTheEarlierClock: a claim this process holds
// is read by its own clock; one read from the server stands while either
// this process's clock or the server's time (the largest stored time
// observed, advanced since) has not passed its deadline, and counts as
// standing while no server time is known.
func TestLedgerClockReadsClaimsByTheEarlierClock(t *testing.T) {
	var k ledgerClock
	if _, ok := k.server(); ok {
		t.Fatal("a server time known before any was observed")
	}
	now := time.Now()
	ahead := now.Add(10 * time.Minute)
	own := &Claim{Until: now.Add(time.Second)}
	read := &Claim{Until: now.Add(time.Second), read: true}
	if k.stands(own, ahead, 0) {
		t.Error("this process's own claim stands past its deadline by its own clock")
	}
	if !k.stands(read, ahead, 0) {
		t.Error("a claim read from the server ended before any server time was known")
	}

	k.observe(now.Add(-time.Minute)) // an old entry
	k.observe(now)                   // a fresh one
	k.observe(now.Add(-time.Hour))   // older again: does not move it back
	srv, ok := k.server()
	if !ok || srv.Before(now) || srv.After(time.Now()) {
		t.Fatalf("server time %v (%v), want between %v and now", srv, ok, now)
	}
	if left, _ := k.left(read, ahead, 0); !k.stands(read, ahead, 0) || left < 900*time.Millisecond {
		t.Errorf("a clock ten minutes ahead ended a claim the server's time has %v to go on", read.Until.Sub(srv))
	}
	if left, _ := k.left(read, now, 5*time.Second); left < 5*time.Second {
		t.Errorf("%v left to the bound, want about 6s", left)
	}
	if !k.stands(read, now.Add(2*time.Second), 0) {
		// The server's time is still before Until: it stands.
		t.Error("a claim ended by this process's clock alone")
	}
	past := &Claim{Until: now.Add(-time.Millisecond), read: true}
	if k.stands(past, now, 0) {
		t.Error("a claim past its deadline by both clocks still stands")
	}
	if !k.stands(past, now.Add(-time.Minute), 0) {
		t.Error("a claim ended by the server's time while this process's clock (behind) says it stands")
	}
}
