//go:build keyrelay_ceiling

package worker

import "os"

// UNSAFE, for bench/ceilings only: a keyrelay_ceiling build skips the
// ledger writes KEYRELAY_CEILING_SKIP names ("claim", "commit" or
// "both"), to measure the throughput a ledger without them would reach.
// Such a worker gives up the ordering and crash guarantees of
// docs/architecture.md: a skipped claim excludes no other worker, a
// skipped commit records nothing. A skipped commit leaves the entry in
// this process's cache at the claim's revision, so the next claim of the
// key still compares against the revision the bucket holds.
var skipClaimWrite, skipCommitWrite = ceilingSkips(os.Getenv("KEYRELAY_CEILING_SKIP"))

func ceilingSkips(v string) (claim, commit bool) {
	switch v {
	case "claim":
		return true, false
	case "commit":
		return false, true
	case "both":
		return true, true
	case "", "none":
		return false, false
	}
	panic("KEYRELAY_CEILING_SKIP must be none, claim, commit or both, not " + v)
}

// CeilingVariant names the ledger writes this build skips ("none" when it
// skips nothing).
func CeilingVariant() string {
	switch {
	case skipClaimWrite && skipCommitWrite:
		return "both"
	case skipClaimWrite:
		return "claim"
	case skipCommitWrite:
		return "commit"
	}
	return "none"
}
