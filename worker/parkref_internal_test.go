package worker

import (
	"testing"

	"github.com/keyrelay/keyrelay/events"
)

// A parked subject reads back as the reference it was made of, a pin's
// included, and only its two kinds and the ".pin" ending are read.
func TestParkedSubjectsReadBack(t *testing.T) {
	copyRef := parkedRef{lane: events.LaneBulk, team: "team-a", key: "key-1", seq: 42}
	pinRef := copyRef
	pinRef.pinned = true
	for _, ref := range []parkedRef{copyRef, pinRef} {
		for _, kind := range []string{parkedAtToken, parkedDueToken} {
			got, ok := parseParked(kind, ref.subject(kind))
			if !ok || got != ref {
				t.Errorf("%s: read back %+v (%v), want %+v", ref.subject(kind), got, ok, ref)
			}
		}
	}
	if got := pinRef.subject(parkedDueToken); got != "keyrelay.parked.due.bulk.team-a.key-1.42.pin" {
		t.Errorf("a pin's due subject: %s", got)
	}
	for _, subj := range []string{
		"keyrelay.parked.due.bulk.team-a.key-1.42.pins",
		"keyrelay.parked.due.bulk.team-a.key-1.42.pin.pin",
		"keyrelay.parked.due.bulk.team-a.key-1.pin",
		"keyrelay.parked.due.bulk.team-a.key-1.42.",
		"keyrelay.parked.at.bulk.team-a.key-1.42.pin", // another kind
	} {
		if ref, ok := parseParked(parkedDueToken, subj); ok {
			t.Errorf("%s read as %+v", subj, ref)
		}
	}
}
