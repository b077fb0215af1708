package worker

import (
	"math"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/settings"
)

// TestRetireGracePeriodSaturates: a grace period too large for a
// time.Duration (MaxInt64 seconds, a gateway's "forever"; anything from
// 9223372037 s on) keeps the previous version for the longest grace
// period, never retires it at once. Validation refuses such an event;
// this is the worker's own defence should one get through.
func TestRetireGracePeriodSaturates(t *testing.T) {
	now := time.Now()
	for _, g := range []int64{math.MaxInt64 / int64(time.Second), math.MaxInt64/int64(time.Second) + 1, math.MaxInt64, events.MaxGracePeriodSeconds + 1} {
		kw := &keyWork{ev: &events.Event{Type: events.KeyRotated, ID: "evt-1", TeamID: "team-a", KeyID: "k1"},
			res: settings.Resolved{Backend: "local"}, keyData: &events.KeyData{GracePeriodSeconds: g}}
		prev := &LedgerEntry{Status: events.StatusStored, Provider: "local", SecretRef: "ref", ProviderVersion: "1"}
		pv, r := (&Worker{}).retirement(kw, prev, "ref", "2", "", now)
		if pv == nil || r == nil {
			t.Fatalf("grace %d: no previous version or retirement", g)
		}
		if want := now.Add(events.MaxGracePeriodSeconds * time.Second); !pv.Until.Equal(want) || !r.Due.Equal(want) {
			t.Errorf("grace %d: previous until %v, retirement due %v; want both %v (the longest grace period)", g, pv.Until, r.Due, want)
		}
	}
	if got := graceDuration(86400); got != 24*time.Hour {
		t.Errorf("graceDuration(86400) = %v, want 24h", got)
	}
}
