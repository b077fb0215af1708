package worker

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/internal/jsleader"
)

// Reads a decision depends on go to the stream's leader.
//
// A stream with AllowDirect answers direct gets from every replica, and on
// a cluster a replica may not yet hold the newest messages: right after a
// publish's acknowledgement, about one direct get in ten was answered with
// an older message in a loaded 3-node cluster, and one settings lookup in
// 300 to one in 20 (TestTeamsCurrentSeesEverySettingsMessageOnACluster); a
// client is served by the replica on its own server first. Where a read must include every message
// stored before something the worker has already seen (the team's last
// settings message before a key event; the ledger entry a decision is
// taken on without a compare-and-set), it is a stream message get
// ($JS.API.STREAM.MSG.GET), which only the stream's leader answers.

// leaderGetRequest and leaderMsg are jsleader's, under the names the
// worker's code uses.
type (
	leaderGetRequest = jsleader.Request
	leaderMsg        = jsleader.Msg
)

// leaderGet asks stream's leader for one message, through the worker's
// request path (requestMsg). It returns jetstream.ErrMsgNotFound when
// there is none.
func leaderGet(ctx context.Context, nc *nats.Conn, stream string, req leaderGetRequest) (*leaderMsg, error) {
	return jsleader.Get(ctx, workerRequester(nc), stream, req)
}

// leaderKVGet reads key's latest entry in bucket from the bucket stream's
// leader. It returns jetstream.ErrMsgNotFound when the key has no entry or
// its latest one is a delete or purge marker.
func leaderKVGet(ctx context.Context, nc *nats.Conn, bucket, key string) (*leaderMsg, error) {
	return jsleader.KVGet(ctx, workerRequester(nc), bucket, key)
}

// workerRequester sends through requestMsg on nc.
func workerRequester(nc *nats.Conn) jsleader.Requester {
	return func(ctx context.Context, m *nats.Msg) (*nats.Msg, error) { return requestMsg(ctx, nc, m) }
}
