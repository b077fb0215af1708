package lookup

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSlotsBookkeeping: a load holds one backend's slots at a time, a load
// waiting for a busy backend's share holds no pool slot, a refusal says
// which bound it met (errNoSlot), and once the loads end no slot and no
// backend's share is left behind (the map of shares stays bounded by the
// loads in flight).
func TestSlotsBookkeeping(t *testing.T) {
	s := newSlots(Config{MaxLoads: 3, MaxLoadsPerBackend: 1, BackendTimeout: 50 * time.Millisecond}, NewMetrics(nil))
	a, b := providerBackend("p", map[string]string{"region": "a"}), providerBackend("p", map[string]string{"region": "b"})
	if a.id == b.id || a.id != providerBackend("p", map[string]string{"region": "a"}).id {
		t.Fatal("a backend's identity must follow its provider and options")
	}
	ctx := context.Background()

	first := s.begin(ctx)
	if _, err := claim(first.base, ledgerBackend); err != nil {
		t.Fatal(err)
	}
	if _, err := claim(first.base, a); err != nil { // moves on: the ledger's slots go
		t.Fatal(err)
	}
	if s.inFlight() != 1 || s.tracked() != 1 {
		t.Fatalf("one load on a: %d pool slots, %d shares; want 1 and 1", s.inFlight(), s.tracked())
	}
	if _, err := claim(first.base, a); err != nil || s.inFlight() != 1 {
		t.Fatalf("claiming the held backend again: %v, %d pool slots", err, s.inFlight())
	}

	// a's share (1) is taken: a second load waits, holding no pool slot,
	// and gives up at backend_timeout.
	second := s.begin(ctx)
	waited := make(chan error, 1)
	go func() { _, err := claim(second.base, a); waited <- err }()
	time.Sleep(20 * time.Millisecond)
	if s.inFlight() != 1 {
		t.Fatalf("a load waiting for a's share holds a pool slot (%d in flight)", s.inFlight())
	}
	err := <-waited
	var le *Error
	if !errors.Is(err, errNoSlot) || !errors.As(err, &le) || le.Status != ErrUnavailable.Status {
		t.Fatalf("waiting for a's share: %v, want a 503 matching errNoSlot", err)
	}
	second.release()

	// b has a share of its own.
	third := s.begin(ctx)
	if _, err := claim(third.base, b); err != nil {
		t.Fatalf("b while a is busy: %v", err)
	}
	// Outside a Service load, claim does nothing.
	if got, err := claim(ctx, a); err != nil || got != ctx {
		t.Fatalf("claim outside a load: %v", err)
	}

	first.release()
	third.release()
	if s.inFlight() != 0 || s.tracked() != 0 {
		t.Fatalf("after the loads: %d pool slots, %d shares left", s.inFlight(), s.tracked())
	}
}
