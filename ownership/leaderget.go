package ownership

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/jsleader"
)

// Reads a grant depends on go to the bucket stream's leader.
//
// A bucket has AllowDirect, so its Get is a direct get that every replica
// answers, and a client is served by the replica on its own server first:
// on a cluster one that lags answers with an older record (a holder that
// has just acquired shown as released, an old revision shown as standing
// still). A claims request is granted on what that read shows, with no
// compare-and-set to catch a stale one, so it reads the record with a
// stream message get ($JS.API.STREAM.MSG.GET), which only the stream's
// leader answers (as worker/leaderget.go does for the ledger). Without a
// connection (RequestConfig.Conn) it checks the replica instead
// (Request.currentRecord), as a holder checks its reads of the requests
// (Lease.readRequests).

// leaderEntry is a key's latest value and revision as the leader has it.
type leaderEntry struct {
	value []byte
	rev   uint64
}

// leaderKVGet reads key's latest entry in bucket from the bucket stream's
// leader. It returns jetstream.ErrKeyNotFound when the key has no entry or
// its latest one is a delete or purge marker.
func leaderKVGet(ctx context.Context, nc *nats.Conn, bucket, key string) (leaderEntry, error) {
	m, err := jsleader.KVGet(ctx, jsleader.Conn(nc), bucket, key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return leaderEntry{}, jetstream.ErrKeyNotFound
	}
	if err != nil {
		return leaderEntry{}, fmt.Errorf("ownership: %w", err)
	}
	return leaderEntry{value: m.Data, rev: m.Seq}, nil
}
