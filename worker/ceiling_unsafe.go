//go:build keyrelay_ceiling

package worker

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/ownership"
)

// UNSAFE, for bench/ceilings only: a keyrelay_ceiling build skips the
// ledger writes KEYRELAY_CEILING_SKIP names ("claim", "commit" or
// "both"), to measure the throughput a ledger without them would reach.
// Such a worker gives up the ordering and crash guarantees of
// docs/architecture.md: a skipped claim excludes no other worker, a
// skipped commit records nothing. A skipped commit leaves the entry in
// this process's cache at the claim's revision, so the next claim of the
// key still compares against the revision the bucket holds. "intent"
// skips the claim's write and appends the claim's fields to an intent log
// instead (ownership.IntentLog), as a claimless lease holder would.
var skipClaimWrite, skipCommitWrite = ceilingSkips(os.Getenv("KEYRELAY_CEILING_SKIP"))

var appendIntents = os.Getenv("KEYRELAY_CEILING_SKIP") == "intent"

var (
	intentOnce sync.Once
	intentLog  *ownership.IntentLog
	intentErr  error
)

// ceilingIntent appends in to the ceiling build's intent log, a stream
// made on first use with the ledger bucket's replicas.
func ceilingIntent(ctx context.Context, w *Worker, in ownership.Intent) error {
	intentOnce.Do(func() {
		js := w.d.JS
		s, err := js.Stream(ctx, "KV_"+LedgerBucket)
		if err != nil {
			intentErr = err
			return
		}
		_, intentErr = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "KEYRELAY_CEILING_INTENTS",
			Subjects: []string{"keyrelay.ceiling.intents.>"}, Storage: jetstream.FileStorage,
			Replicas: s.CachedInfo().Config.Replicas, MaxAge: 10 * time.Minute})
		intentLog = ownership.NewIntentLog(js, "keyrelay.ceiling.intents.1")
	})
	if intentErr != nil {
		return intentErr
	}
	return intentLog.Append(ctx, in)
}

func ceilingSkips(v string) (claim, commit bool) {
	switch v {
	case "claim", "intent":
		return true, false
	case "commit":
		return false, true
	case "both":
		return true, true
	case "", "none":
		return false, false
	}
	panic("KEYRELAY_CEILING_SKIP must be none, claim, intent, commit or both, not " + v)
}

// CeilingVariant names the ledger writes this build skips ("none" when it
// skips nothing).
func CeilingVariant() string {
	switch {
	case skipClaimWrite && skipCommitWrite:
		return "both"
	case appendIntents:
		return "intent"
	case skipClaimWrite:
		return "claim"
	case skipCommitWrite:
		return "commit"
	}
	return "none"
}
