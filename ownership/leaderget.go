package ownership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	stream := "KV_" + bucket
	body, err := json.Marshal(struct {
		LastBySubj string `json:"last_by_subj"`
	}{"$KV." + bucket + "." + key})
	if err != nil {
		return leaderEntry{}, err
	}
	m, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return leaderEntry{}, fmt.Errorf("ownership: stream %s: no leader answered: %w", stream, err)
		}
		return leaderEntry{}, fmt.Errorf("ownership: stream %s: message get: %w", stream, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq    uint64 `json:"seq"`
			Header []byte `json:"hdrs"`
			Data   []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return leaderEntry{}, fmt.Errorf("ownership: stream %s: message get: unreadable reply: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return leaderEntry{}, jetstream.ErrKeyNotFound
	case resp.Error != nil:
		return leaderEntry{}, fmt.Errorf("ownership: stream %s: message get: %w", stream, resp.Error)
	case resp.Message == nil:
		return leaderEntry{}, fmt.Errorf("ownership: stream %s: message get: reply without a message", stream)
	}
	if len(resp.Message.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return leaderEntry{}, fmt.Errorf("ownership: bucket %s: message headers: %w", bucket, err)
		}
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return leaderEntry{}, jetstream.ErrKeyNotFound
		}
	}
	return leaderEntry{value: resp.Message.Data, rev: resp.Message.Seq}, nil
}
