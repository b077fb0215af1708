package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/tracing"
)

// ConfirmationSubjectFor returns the subject of conf. A validated event's
// confirmation is filed under its event id:
// keyrelay.confirmations.<team>.<key or _>.<event_id>. The rejection of a
// message that failed validation never is (its event_id is empty): it goes
// to keyrelay.confirmations.<team or _>.<key or _>._seq-<stream sequence>,
// with the team and key of the subject it was published on. "_seq-" cannot
// be an event id, which starts with a letter or digit.
func ConfirmationSubjectFor(c *events.Confirmation) string {
	team, key := c.TeamID, c.KeyID
	if events.ValidateID("team_id", team) != nil {
		team = ""
	}
	if key != "" && events.ValidateID("key_id", key) != nil {
		key = ""
	}
	if c.EventID == "" || events.ValidateID("id", c.EventID) != nil || team == "" {
		if team == "" {
			team = events.NoKey
		}
		return events.ConfirmationSubject(team, key, InvalidConfirmationToken(c.Lane, c.StreamSeq))
	}
	return events.ConfirmationSubject(team, key, c.EventID)
}

// InvalidConfirmationToken is the last subject token of the rejection of the
// invalid message at stream sequence seq of lane l's stream.
func InvalidConfirmationToken(l events.Lane, seq uint64) string {
	if l == events.LaneBulk {
		return "_bulkseq-" + strconv.FormatUint(seq, 10)
	}
	return "_seq-" + strconv.FormatUint(seq, 10)
}

// errAlreadyConfirmed is returned by publishConfirmation when the event
// already has its confirmation (the stream holds one message per event).
var errAlreadyConfirmed = errors.New("event already confirmed")

// publishConfirmation publishes conf and waits for the PubAck. Every
// confirmation is published with Nats-Expected-Last-Subject-Sequence: 0, so
// the server refuses a second one for the same event, even after the
// duplicate window; that case returns errAlreadyConfirmed.
func publishConfirmation(ctx context.Context, js jetstream.JetStream, conf *events.Confirmation) error {
	buf := getBuf()
	b, err := conf.AppendJSON(*buf)
	if err != nil {
		return err
	}
	defer putBuf(buf, b)
	subj := ConfirmationSubjectFor(conf)
	// No Nats-Msg-Id: the expected last-subject sequence 0 already refuses
	// every second confirmation of the subject, a redelivery's inside the
	// duplicate window as well as a copy's after it (except after `dlq
	// retry` has cleared the failed confirmation). A message id would
	// only have made the server keep an id per confirmation for the whole
	// window (10 minutes by default): about 15 MB per 100,000 events.
	// (Header keys in their canonical form.)
	m := &nats.Msg{Subject: subj, Data: b, Header: nats.Header{
		"Keyrelay-Status":      {string(conf.Status)},
		hdrExpectedStream:      {ConfirmationsStream},
		hdrExpectedLastSubjSeq: {"0"},
	}}
	// The delivery's trace context (traceparent, tracestate): a gateway
	// following confirmations continues the event's trace.
	tracing.Inject(ctx, m.Header)
	pa, err := jsPublish(ctx, js.Conn(), m)
	if err != nil {
		if isPerSubjectLimit(err) || isWrongLastSequence(err) {
			return errAlreadyConfirmed
		}
		return fmt.Errorf("publish confirmation: %w", err)
	}
	if pa.duplicate {
		return errAlreadyConfirmed
	}
	return nil
}

// confirm publishes conf. When the event already has a confirmation, the
// first one stands; it is read back and compared, and a contradiction (the
// same event id confirmed with another outcome or for another event) is
// reported, never dropped silently.
func (w *Worker) confirm(ctx context.Context, conf *events.Confirmation) error {
	err := publishConfirmation(ctx, w.d.JS, conf)
	if !errors.Is(err, errAlreadyConfirmed) || conf.EventID == "" {
		return err
	}
	// Called through infraDoBounded: this read bounds its own attempt.
	rctx, cancel := context.WithTimeout(ctx, infraAttemptTimeout)
	prev, rerr := w.readConfirmation(rctx, ConfirmationSubjectFor(conf))
	cancel()
	if rerr != nil {
		if isInfraTransient(rerr) {
			return rerr
		}
		w.log.Warn("event already confirmed; the first confirmation could not be read to compare", zap.String("event_id", conf.EventID), zap.Error(rerr))
		return err
	}
	if prev != nil && contradicts(prev, conf) {
		w.m.Contradictions.Inc()
		w.log.Error("event id already confirmed with another outcome; the first confirmation stands and this one was refused",
			zap.String("event_id", conf.EventID), zap.String("team", conf.TeamID), zap.String("key", conf.KeyID),
			zap.String("first_status", string(prev.Status)), zap.Uint64("first_stream_seq", prev.StreamSeq), zap.Uint64("first_generation", prev.Generation),
			zap.String("refused_status", string(conf.Status)), zap.Uint64("refused_stream_seq", conf.StreamSeq), zap.Uint64("refused_generation", conf.Generation),
			zap.String("refused_reason", conf.Reason))
	}
	return err
}

func (w *Worker) readConfirmation(ctx context.Context, subj string) (*events.Confirmation, error) {
	s, err := w.d.JS.Stream(ctx, ConfirmationsStream)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c events.Confirmation
	if err := json.Unmarshal(m.Data, &c); err != nil {
		return nil, fmt.Errorf("confirmation on %s is unreadable: %w", subj, err)
	}
	return &c, nil
}

// contradicts reports whether cur, refused because prev already confirms
// the same event id, says something prev does not: another event (type,
// team, key or generation) under the same id, or failure against success.
// The same stream message handled again never contradicts itself.
func contradicts(prev, cur *events.Confirmation) bool {
	if prev.StreamSeq == cur.StreamSeq {
		return false
	}
	if prev.EventType != cur.EventType || prev.TeamID != cur.TeamID || prev.KeyID != cur.KeyID || prev.Generation != cur.Generation {
		return true
	}
	bad := func(s events.Status) bool { return s == events.StatusRejected || s == events.StatusFailed }
	return bad(prev.Status) != bad(cur.Status)
}

// isPerSubjectLimit recognises the server's refusal of a second message on
// a subject of a DiscardNewPerSubject stream (streams created by older
// keyrelay versions).
func isPerSubjectLimit(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return strings.Contains(strings.ToLower(apiErr.Description), "maximum messages per subject")
	}
	var pe *pubAckError
	if errors.As(err, &pe) {
		return strings.Contains(strings.ToLower(pe.Description), "maximum messages per subject")
	}
	return strings.Contains(strings.ToLower(err.Error()), "maximum messages per subject")
}
