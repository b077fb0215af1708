package worker

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/ownership"
)

// A claims-mode worker's claims request lives as long as the longer of
// the writer lease's TTL and a claim, within what a record may ask: with
// the defaults a provider call may still take its whole call_timeout.
func TestClaimsRequestTTL(t *testing.T) {
	cases := []struct {
		lease, claim, want time.Duration
	}{
		{ownership.DefaultTTL, ClaimLeaseDefault, ClaimLeaseDefault},
		{time.Minute, ClaimLeaseDefault, time.Minute},
		{time.Second, 4 * time.Second, 4 * time.Second},
		{ownership.DefaultTTL, 20 * time.Minute, ownership.MaxRecordTTL},
	}
	for _, c := range cases {
		if got := claimsRequestTTL(Config{LeaseTTL: c.lease, ClaimLease: c.claim}); got != c.want {
			t.Errorf("lease_ttl %v, claim_lease %v: %v, want %v", c.lease, c.claim, got, c.want)
		}
	}
	// The defaults leave a provider call its call timeout: the request's
	// deadline is at least 0.65 of its TTL ahead when a key is claimed,
	// and the work stops claim_lease/10 before it.
	var d Config
	d.setDefaults()
	if left := leaseWriteWindow(claimsRequestTTL(d)) - d.ClaimLease/10; left < d.CallTimeout {
		t.Fatalf("with the defaults a key's work may have only %v, under call_timeout %v", left, d.CallTimeout)
	}
}
