// Package jsleader reads messages from a JetStream stream's leader.
//
// A stream with AllowDirect (every KV bucket has it) answers direct gets
// from every replica, and a client is served by the replica on its own
// server first; on a cluster a replica may not yet hold the newest
// messages. Where a read must include every message stored before
// something the reader has already seen (a decision taken without a
// compare-and-set to catch a stale read), it is a stream message get
// ($JS.API.STREAM.MSG.GET), which only the stream's leader answers.
package jsleader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Request is the body of a stream message get: by sequence, the last
// message of a subject, or the first message of a subject at or after a
// sequence.
type Request struct {
	Seq        uint64 `json:"seq,omitempty"`
	LastBySubj string `json:"last_by_subj,omitempty"`
	NextBySubj string `json:"next_by_subj,omitempty"`
}

// Msg is a message as the leader returned it.
type Msg struct {
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Header  []byte `json:"hdrs"`
	Data    []byte `json:"data"`
	// Time is when the stream stored the message, by the server's clock
	// (the reply's "time"; zero if a server left it out).
	Time time.Time `json:"time"`
}

// Headers decodes the message's headers (nil when it has none).
func (m *Msg) Headers() (nats.Header, error) {
	if len(m.Header) == 0 {
		return nil, nil
	}
	return nats.DecodeHeadersMsg(m.Header)
}

// Requester sends one request and returns its reply: the caller's own
// request path (a connection's RequestMsgWithContext, or a multiplexed
// one with its own timeouts).
type Requester func(ctx context.Context, m *nats.Msg) (*nats.Msg, error)

// Conn is the Requester of nc.
func Conn(nc *nats.Conn) Requester { return nc.RequestMsgWithContext }

// Get asks stream's leader for one message. It returns
// jetstream.ErrMsgNotFound when there is none. A server's refusal is a
// *jetstream.APIError, so that a 5xx (no leader during an election) can
// be waited out like other infrastructure trouble.
func Get(ctx context.Context, do Requester, stream string, req Request) (*Msg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	m, err := do(ctx, &nats.Msg{Subject: "$JS.API.STREAM.MSG.GET." + stream, Data: body})
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("stream %s: no leader answered: %w", stream, err)
		}
		return nil, fmt.Errorf("stream %s: message get: %w", stream, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *Msg                `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("stream %s: message get: unreadable reply: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return nil, fmt.Errorf("stream %s: message get: %w", stream, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("stream %s: message get: reply without a message", stream)
	}
	return resp.Message, nil
}

// KVGet reads key's latest entry in bucket from the bucket stream's
// leader; the message's Seq is the entry's revision. It returns
// jetstream.ErrMsgNotFound when the key has no entry or its latest one is
// a delete or purge marker.
func KVGet(ctx context.Context, do Requester, bucket, key string) (*Msg, error) {
	m, err := Get(ctx, do, "KV_"+bucket, Request{LastBySubj: "$KV." + bucket + "." + key})
	if err != nil {
		return nil, err
	}
	h, err := m.Headers()
	if err != nil {
		return nil, fmt.Errorf("bucket %s: message headers: %w", bucket, err)
	}
	if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return nil, jetstream.ErrMsgNotFound
	}
	return m, nil
}
