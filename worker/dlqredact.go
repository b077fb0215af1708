package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

// RedactedDeadLetter is one entry RedactDeadLetters replaced by its
// redacted summary: Seq was the original's sequence in the DLQ stream,
// NewSeq is the summary's (0 in a dry run).
type RedactedDeadLetter struct {
	Seq     uint64 `json:"seq"`
	NewSeq  uint64 `json:"new_seq,omitempty"`
	Subject string `json:"subject"`
	EventID string `json:"event_id,omitempty"`
	// Why says why the original could not be kept; never a value.
	Why string `json:"why"`
}

// RedactReport is what RedactDeadLetters found and did.
type RedactReport struct {
	// Checked counts the entries that held an original (not already a
	// redacted summary); Kept those proven safe to keep (an event without
	// a value, or whose value opened as a sealed envelope).
	Checked int `json:"checked"`
	Kept    int `json:"kept"`
	// Redacted lists the originals replaced by their summary.
	Redacted []RedactedDeadLetter `json:"redacted"`
	// Undecided lists the entries whose value could not be opened for a
	// reason that may pass (a KMS outage, throttling): left as they are;
	// run again.
	Undecided []RedactedDeadLetter `json:"undecided,omitempty"`
}

// RedactDeadLetters applies today's rule for what the DLQ may keep to the
// entries already in it: an original is kept only when the event carries
// no value (key.updated, key.deleted) or its value opens with opener as a
// sealed envelope. Every other original (it does not decode, its value is
// plaintext, or it does not open: a plaintext key under a sealed
// algorithm's name fails authentication) is replaced by its redacted
// summary: the summary is stored under the entry's subject and headers,
// marked redacted, and then the original is deleted with its bytes
// overwritten (SecureDeleteMsg). Entries written before keyrelay redacted
// unproven values (the eighteenth session) need it; later ones pass
// unchanged. A dry run reports and changes nothing. Run again after a
// crash: the summary's message id makes its second store a duplicate.
func RedactDeadLetters(ctx context.Context, js jetstream.JetStream, opener events.Opener, dryRun bool) (*RedactReport, error) {
	s, info, err := dlqStream(ctx, js)
	if err != nil {
		return nil, err
	}
	rep := &RedactReport{Redacted: []RedactedDeadLetter{}}
	if info.State.Msgs == 0 {
		return rep, nil
	}
	// Summaries are appended after LastSeq: the walk stops before them.
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("dlq: read %d: %w", seq, err)
		}
		d := deadLetterFrom(m)
		if d.Redacted {
			continue
		}
		rep.Checked++
		why, undecided := unproven(ctx, opener, m.Data)
		row := RedactedDeadLetter{Seq: seq, Subject: d.Subject, EventID: d.EventID, Why: why}
		switch {
		case why == "":
			rep.Kept++
			continue
		case undecided:
			rep.Undecided = append(rep.Undecided, row)
			continue
		}
		if !dryRun {
			if row.NewSeq, err = replaceWithSummary(ctx, js, s, m, why); err != nil {
				return rep, err
			}
		}
		rep.Redacted = append(rep.Redacted, row)
	}
	return rep, nil
}

// unproven says why data may not be kept as a dead letter's original ("":
// it may), and whether that is only for now (the value could not be
// opened for a retryable reason).
func unproven(ctx context.Context, opener events.Opener, data []byte) (why string, undecided bool) {
	ev, err := events.Decode(data)
	if err != nil {
		return "not a valid event", false
	}
	switch ev.Type {
	case events.KeyUpdated, events.KeyDeleted:
		return "", false
	case events.KeyCreated, events.KeyRotated:
	default:
		return "not a key event", false
	}
	kd, err := ev.KeyData()
	if err != nil {
		return "its key data does not decode", false
	}
	if kd.Value == nil || kd.Value.Alg == events.AlgPlaintext {
		return "its value is not sealed", false
	}
	pt, err := opener.Open(ctx, kd.Value, events.BindingOf(ev))
	if err != nil {
		if providers.IsRetryable(err) {
			return "its value could not be opened now: " + sanitize(err), true
		}
		return "its value does not open as a sealed envelope: " + sanitize(err), false
	}
	clear(pt)
	return "", false
}

// replaceWithSummary stores the redacted summary of DLQ entry m, then
// deletes m with its bytes overwritten. It returns the summary's sequence.
func replaceWithSummary(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, m *jetstream.RawStreamMsg, why string) (uint64, error) {
	out := &nats.Msg{Subject: m.Subject, Header: nats.Header{},
		Data: redactedBytes(m.Header.Get(HdrSubject), nil, m.Data, m.Header.Get(HdrReason)+" (redacted after the fact: "+why+")")}
	// keyrelay's own headers only: a direct get's reply also carries the
	// server's (Nats-Sequence, Nats-Subject, ...), which must not be
	// stored again as the summary's.
	for name, vals := range m.Header {
		if strings.HasPrefix(name, "Keyrelay-") {
			out.Header[name] = vals
		}
	}
	out.Header.Set(HdrRedacted, "true")
	out.Header.Set(jetstream.MsgIDHeader, "dlq-redacted-"+strconv.FormatUint(m.Sequence, 10))
	ack, err := js.PublishMsg(ctx, out, jetstream.WithExpectStream(DLQStream))
	if err != nil {
		return 0, fmt.Errorf("dlq: store the summary of entry %d: %w", m.Sequence, err)
	}
	if err := s.SecureDeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, fmt.Errorf("dlq: remove entry %d after storing its summary (entry %d): %w", m.Sequence, ack.Sequence, err)
	}
	return ack.Sequence, nil
}
