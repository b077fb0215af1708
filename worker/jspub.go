package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
)

// The worker publishes three messages per event (claim, commit,
// confirmation) and waits for each PubAck. nats.go decodes every PubAck
// with reflection, which measured as a fifth of the worker's CPU; these
// helpers send the same JetStream publish (a request to the subject, with
// the expectation headers) and read the PubAck with a byte scan, falling
// back to a full decode only for errors.

// Headers of the JetStream publish protocol.
const (
	hdrMsgID               = "Nats-Msg-Id"
	hdrExpectedStream      = "Nats-Expected-Stream"
	hdrExpectedLastSubjSeq = "Nats-Expected-Last-Subject-Sequence"
)

// JetStream API error codes the worker branches on.
const (
	errCodeWrongLastSequence         = 10071
	errCodeWrongLastSequenceReplicas = 10164
)

// pubAckError is a JetStream publish refused by the server.
type pubAckError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *pubAckError) Error() string {
	return fmt.Sprintf("jetstream publish refused: %s (code %d, err_code %d)", e.Description, e.Code, e.ErrCode)
}

type pubAck struct {
	seq       uint64
	duplicate bool
}

// jsPublish publishes m and waits for the PubAck, at most
// infraAttemptTimeout (requestMsg).
func jsPublish(ctx context.Context, nc *nats.Conn, m *nats.Msg) (pubAck, error) {
	resp, err := requestMsg(ctx, nc, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return pubAck{}, fmt.Errorf("jetstream publish to %s: no stream answered: %w", m.Subject, err)
		}
		return pubAck{}, fmt.Errorf("jetstream publish to %s: %w", m.Subject, err)
	}
	return parsePubAck(resp.Data)
}

// parsePubAck reads {"stream":"S","seq":N[,"duplicate":true]} or an error.
func parsePubAck(b []byte) (pubAck, error) {
	if bytes.Contains(b, []byte(`"error"`)) {
		var r struct {
			Error *pubAckError `json:"error"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Error == nil {
			return pubAck{}, fmt.Errorf("jetstream publish: unreadable reply")
		}
		return pubAck{}, r.Error
	}
	i := bytes.Index(b, []byte(`"seq":`))
	if i < 0 {
		return pubAck{}, fmt.Errorf("jetstream publish: reply without a sequence")
	}
	i += len(`"seq":`)
	for i < len(b) && b[i] == ' ' {
		i++
	}
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	seq, err := strconv.ParseUint(string(b[i:j]), 10, 64)
	if err != nil {
		return pubAck{}, fmt.Errorf("jetstream publish: bad sequence in reply")
	}
	return pubAck{seq: seq, duplicate: bytes.Contains(b, []byte(`"duplicate":true`))}, nil
}

// isWrongLastSequence reports a failed compare-and-set.
func isWrongLastSequence(err error) bool {
	var pe *pubAckError
	return errors.As(err, &pe) && (pe.ErrCode == errCodeWrongLastSequence || pe.ErrCode == errCodeWrongLastSequenceReplicas)
}

// bufs holds encoding buffers for the messages the worker publishes. A
// publish copies its data into the connection's buffer before it returns
// (also while reconnecting), so a buffer goes back to the pool as soon as
// the publish has returned.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// getBuf returns an empty buffer from the pool.
func getBuf() *[]byte { b := bufs.Get().(*[]byte); *b = (*b)[:0]; return b }

// putBuf returns b, grown to hold data, to the pool; b must no longer be
// used. Buffers grown past 64 KiB are left to the collector.
func putBuf(b *[]byte, data []byte) {
	if cap(data) <= 64<<10 {
		*b = data[:0]
		bufs.Put(b)
	}
}
