package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// leaderGetRequest is the body of a stream message get: by sequence, the
// last message of a subject, or the first message of a subject at or
// after a sequence.
type leaderGetRequest struct {
	Seq        uint64 `json:"seq,omitempty"`
	LastBySubj string `json:"last_by_subj,omitempty"`
	NextBySubj string `json:"next_by_subj,omitempty"`
}

// leaderMsg is a message as the leader returned it.
type leaderMsg struct {
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Header  []byte `json:"hdrs"`
	Data    []byte `json:"data"`
}

// headers decodes the message's headers (nil when it has none).
func (m *leaderMsg) headers() (nats.Header, error) {
	if len(m.Header) == 0 {
		return nil, nil
	}
	return nats.DecodeHeadersMsg(m.Header)
}

// leaderGet asks stream's leader for one message. It returns
// jetstream.ErrMsgNotFound when there is none.
func leaderGet(ctx context.Context, nc *nats.Conn, stream string, req leaderGetRequest) (*leaderMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	m, err := requestMsg(ctx, nc, &nats.Msg{Subject: "$JS.API.STREAM.MSG.GET." + stream, Data: body})
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("stream %s: no leader answered: %w", stream, err)
		}
		return nil, fmt.Errorf("stream %s: message get: %w", stream, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *leaderMsg          `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("stream %s: message get: unreadable reply: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		// An *APIError, so that a 5xx (no leader during an election) is
		// waited out like other infrastructure trouble (isInfraTransient).
		return nil, fmt.Errorf("stream %s: message get: %w", stream, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("stream %s: message get: reply without a message", stream)
	}
	return resp.Message, nil
}

// leaderKVGet reads key's latest entry in bucket from the bucket stream's
// leader. It returns jetstream.ErrMsgNotFound when the key has no entry or
// its latest one is a delete or purge marker.
func leaderKVGet(ctx context.Context, nc *nats.Conn, bucket, key string) (*leaderMsg, error) {
	m, err := leaderGet(ctx, nc, "KV_"+bucket, leaderGetRequest{LastBySubj: "$KV." + bucket + "." + key})
	if err != nil {
		return nil, err
	}
	h, err := m.headers()
	if err != nil {
		return nil, fmt.Errorf("bucket %s: message headers: %w", bucket, err)
	}
	if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, jetstream.ErrMsgNotFound
	}
	return m, nil
}
