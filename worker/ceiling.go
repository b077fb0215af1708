//go:build !keyrelay_ceiling

package worker

import (
	"context"

	"github.com/keyrelay/keyrelay/ownership"
)

// The ledger writes on an event's path are always made. A build with the
// keyrelay_ceiling tag (bench/ceilings only, never a deployment) can skip
// them to measure what a ledger without them would reach; see
// ceiling_unsafe.go.
const skipClaimWrite, skipCommitWrite, appendIntents = false, false, false

// ceilingIntent exists in keyrelay_ceiling builds only; never called here.
func ceilingIntent(context.Context, *Worker, ownership.Intent) error { return nil }

// CeilingVariant names the ledger writes this build skips: "" always,
// outside a keyrelay_ceiling build.
func CeilingVariant() string { return "" }
