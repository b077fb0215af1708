package worker

import "testing"

// The ledger writes an unsafe keyrelay_ceiling build may skip
// (bench/ceilings) are never skipped by the build that is tested and
// shipped.
func TestCeilingSkipsNothingOutsideItsBuild(t *testing.T) {
	if v := CeilingVariant(); v != "" || skipClaimWrite || skipCommitWrite || appendIntents {
		t.Fatalf("this build skips ledger writes (%q): it was built with the keyrelay_ceiling tag", v)
	}
}
