package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
)

// Headers on dead letters.
const (
	HdrReason    = "Keyrelay-Reason"
	HdrStatus    = "Keyrelay-Status"
	HdrAttempts  = "Keyrelay-Attempts"
	HdrStreamSeq = "Keyrelay-Stream-Seq"
	HdrSubject   = "Keyrelay-Subject"
	HdrEventID   = "Keyrelay-Event-Id"
	HdrFailedAt  = "Keyrelay-Failed-At"
	HdrRedacted  = "Keyrelay-Redacted"
	// HdrClaimedEventID is the id an invalid message claimed (never trusted).
	HdrClaimedEventID = "Keyrelay-Claimed-Event-Id"
)

// DeadLetter is one entry of the DLQ stream.
type DeadLetter struct {
	// Seq is the entry's sequence in the DLQ stream (the handle for retry).
	Seq uint64 `json:"seq"`
	// Subject and StreamSeq locate the original event.
	Subject   string `json:"subject"`
	StreamSeq uint64 `json:"stream_seq"`
	EventID   string `json:"event_id,omitempty"`
	// ClaimedEventID is the id an invalid message claimed (not trusted).
	ClaimedEventID string        `json:"claimed_event_id,omitempty"`
	Status         events.Status `json:"status"`
	Reason         string        `json:"reason"`
	Attempts       uint64        `json:"attempts"`
	FailedAt       time.Time     `json:"failed_at"`
	// Redacted is true when the stored copy is a summary of the original
	// (see redactedCopy): its bytes could not be proven sealed.
	Redacted bool `json:"redacted,omitempty"`
	// Data is the original event, still sealed, or the redacted summary
	// (not shown by `dlq list`).
	Data []byte `json:"-"`
}

type deadLetterIn struct {
	subject   string
	streamSeq uint64
	eventID   string
	claimedID string
	team, key string
	status    events.Status
	reason    string
	attempts  uint64
	data      []byte
	redacted  bool
}

func publishDeadLetter(ctx context.Context, js jetstream.JetStream, d deadLetterIn) error {
	team, key := d.team, d.key
	if events.ValidateID("team_id", team) != nil {
		team = ""
	}
	if events.ValidateID("key_id", key) != nil {
		key = ""
	}
	m := &nats.Msg{Subject: events.DLQSubject(team, key), Data: d.data, Header: nats.Header{}}
	seq := strconv.FormatUint(d.streamSeq, 10)
	// One dead letter per stream message: a crash between storing it and
	// terminating the message must not store a second one on redelivery.
	// (A `dlq retry` republishes the event as a new stream message.)
	id := "dlq-" + seq
	if events.LaneOf(d.subject) == events.LaneBulk {
		id = "dlq-bulk-" + seq // the two lanes' sequences overlap
	}
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(HdrReason, d.reason)
	m.Header.Set(HdrStatus, string(d.status))
	m.Header.Set(HdrAttempts, strconv.FormatUint(d.attempts, 10))
	m.Header.Set(HdrStreamSeq, seq)
	m.Header.Set(HdrSubject, d.subject)
	m.Header.Set(HdrFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	if d.eventID != "" && events.ValidateID("id", d.eventID) == nil {
		m.Header.Set(HdrEventID, d.eventID)
	}
	if d.claimedID != "" && events.ValidateID("id", d.claimedID) == nil {
		m.Header.Set(HdrClaimedEventID, d.claimedID)
	}
	if d.redacted {
		m.Header.Set(HdrRedacted, "true")
	}
	if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectStream(DLQStream)); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	return nil
}

func deadLetterFrom(m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	d := DeadLetter{Seq: m.Sequence, Subject: h.Get(HdrSubject), EventID: h.Get(HdrEventID), ClaimedEventID: h.Get(HdrClaimedEventID),
		Status: events.Status(h.Get(HdrStatus)), Reason: h.Get(HdrReason), Data: m.Data,
		Redacted: h.Get(HdrRedacted) == "true"}
	d.StreamSeq, _ = strconv.ParseUint(h.Get(HdrStreamSeq), 10, 64)
	d.Attempts, _ = strconv.ParseUint(h.Get(HdrAttempts), 10, 64)
	d.FailedAt, _ = time.Parse(time.RFC3339Nano, h.Get(HdrFailedAt))
	return d
}

// dlqStream returns the DLQ stream and its info.
func dlqStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, *jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, DLQStream)
	if err != nil {
		return nil, nil, fmt.Errorf("dlq: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("dlq: %w", err)
	}
	return s, info, nil
}

// ListDeadLetters returns up to limit dead letters (0: all), oldest first.
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, limit int) ([]DeadLetter, error) {
	s, info, err := dlqStream(ctx, js)
	if err != nil {
		return nil, err
	}
	out := []DeadLetter{}
	if info.State.Msgs == 0 {
		return out, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		if limit > 0 && len(out) >= limit {
			break
		}
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("dlq: read %d: %w", seq, err)
		}
		out = append(out, deadLetterFrom(m))
	}
	return out, nil
}

// RetryDeadLetter sends one dead letter back through the pipeline: it
// removes the event's failed or rejected confirmation (so the event ends
// with exactly one confirmation, its new outcome), republishes the original
// event to its original subject with a fresh Nats-Msg-Id, and deletes the
// dead letter.
//
// Only an entry that holds the original of a valid event can be retried:
// a redacted entry (the message was invalid, or its value was not proven
// sealed: it did not open, or it was plaintext) is refused, and so is an
// entry whose data does not decode as a valid event or whose event does
// not belong on its recorded subject (Keyrelay-Subject) under its recorded
// event id (Keyrelay-Event-Id). Those are publishers' problems: the event
// is published again, valid and sealed. An event without a generation is
// also refused once a newer event of its key was published or applied
// (refuseOverNewer): republished, it would be ordered after it.
func RetryDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	s, err := js.Stream(ctx, DLQStream)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return fmt.Errorf("dlq: entry %d: %w", seq, err)
	}
	d := deadLetterFrom(m)
	if d.Redacted {
		return fmt.Errorf("dlq: entry %d is a redacted summary (the message was invalid, or its value was not proven sealed); publish the event again, valid and sealed", seq)
	}
	if d.Subject == "" {
		return fmt.Errorf("dlq: entry %d has no original subject", seq)
	}
	ev, err := events.Decode(d.Data)
	if err != nil {
		// The decoder's error names fields, never their values.
		return fmt.Errorf("dlq: entry %d does not hold a valid event (%s); not retrying", seq, sanitize(err))
	}
	if want := ev.SubjectIn(events.LaneOf(d.Subject)); want != d.Subject {
		return fmt.Errorf("dlq: entry %d: its event's team, key and type belong on %q, not on its recorded subject %q; not retrying", seq, want, d.Subject)
	}
	if d.EventID != ev.ID {
		return fmt.Errorf("dlq: entry %d: its event's id %q is not its recorded event id %q; not retrying", seq, ev.ID, d.EventID)
	}
	if why := unsealedValue(ev); why != "" {
		// Stored by a version before the DLQ redacted such values, or
		// written by someone else: not proven sealed, never republished.
		return fmt.Errorf("dlq: entry %d: %s, so it is not kept as an original (`keyrelay dlq redact` replaces it by its summary); publish the event again, sealed; not retrying", seq, why)
	}
	if err := refuseOverNewer(ctx, js, seq, ev, d); err != nil {
		return err
	}
	// The confirmation under the recorded subject's team and key
	// (checked equal to the event's).
	cs, err := js.Stream(ctx, ConfirmationsStream)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	subj := events.ConfirmationSubject(ev.TeamID, ev.KeyID, ev.ID)
	last, err := cs.GetLastMsgForSubject(ctx, subj)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return fmt.Errorf("dlq: read confirmation: %w", err)
	default:
		var c events.Confirmation
		if json.Unmarshal(last.Data, &c) == nil && c.Status != events.StatusFailed && c.Status != events.StatusRejected {
			return fmt.Errorf("dlq: event %s is already confirmed %s; not retrying", ev.ID, c.Status)
		}
		// Only the confirmation read: a retry running at once (or the
		// worker, already done with this one's copy) may have stored a
		// newer one, which must stay. When it is gone, someone else is
		// retrying this entry.
		if err := cs.DeleteMsg(ctx, last.Sequence); err != nil {
			return fmt.Errorf("dlq: entry %d: clear confirmation %d (cleared meanwhile: is the entry being retried elsewhere?): %w; not retrying", seq, last.Sequence, err)
		}
	}
	out := &nats.Msg{Subject: d.Subject, Data: d.Data, Header: nats.Header{}}
	out.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-retry-%d", d.EventID, seq))
	// Back to the lane it came from (a bulk job's event stays bulk).
	ack, err := js.PublishMsg(ctx, out, jetstream.WithExpectStream(StreamOf(events.LaneOf(d.Subject))))
	if err != nil {
		return fmt.Errorf("dlq: republish: %w", err)
	}
	if ack.Duplicate {
		// Republished already (another retry of this entry, within the
		// duplicate window): that copy is the one handled.
		return fmt.Errorf("dlq: entry %d: already republished by another retry (stream sequence %d)", seq, ack.Sequence)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("dlq: remove entry %d: %w", seq, err)
	}
	return nil
}

// refuseOverNewer refuses the retry of dead letter seq when its event was
// published without a generation and a later event of its key (its team,
// for settings) was published or applied since. The worker orders such an
// event by its stream sequence, and the retry republishes it at a new,
// higher one: it would put the old value (or delete, or settings) back
// over the newer one. An event with a generation is ordered by it, and the
// worker never applies it over a newer one.
func refuseOverNewer(ctx context.Context, js jetstream.JetStream, seq uint64, ev *events.Event, d DeadLetter) error {
	if ev.Generation != 0 {
		return nil
	}
	if d.StreamSeq == 0 {
		return fmt.Errorf("dlq: entry %d: its event has no generation and the entry no original stream sequence, so a newer event of its key cannot be ruled out; not retrying (publish it again with a generation)", seq)
	}
	var filter string
	var applied uint64
	if ev.Type.IsSettings() {
		filter = ev.Subject()
		kv, err := js.KeyValue(ctx, TeamsBucket)
		if err != nil {
			return fmt.Errorf("dlq: %w", err)
		}
		e, err := kv.Get(ctx, kvToken(ev.TeamID))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			return fmt.Errorf("dlq: read team settings: %w", err)
		default:
			var st TeamState
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				return fmt.Errorf("dlq: entry %d: the team's settings record does not decode; not retrying", seq)
			}
			applied = st.Generation
		}
	} else {
		filter = events.EventsPrefix + "." + ev.TeamID + "." + ev.KeyID + ".>"
		kv, err := js.KeyValue(ctx, LedgerBucket)
		if err != nil {
			return fmt.Errorf("dlq: %w", err)
		}
		e, _, err := NewLedger(kv).Get(ctx, ev.TeamID, ev.KeyID)
		if err != nil {
			return fmt.Errorf("dlq: read ledger: %w", err)
		}
		if e != nil {
			applied = max(e.Generation, e.MetaGeneration)
		}
	}
	if applied > d.StreamSeq {
		return fmt.Errorf("dlq: entry %d: its event has no generation and a newer event of its key was applied since (generation %d, after stream sequence %d); retrying would put it over the newer one; not retrying", seq, applied, d.StreamSeq)
	}
	ls, err := js.Stream(ctx, StreamOf(events.LaneOf(d.Subject)))
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	last, err := ls.GetLastMsgForSubject(ctx, filter)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return fmt.Errorf("dlq: read the lane: %w", err)
	case last.Sequence > d.StreamSeq:
		return fmt.Errorf("dlq: entry %d: its event has no generation and a newer event of its key was published since (stream sequence %d, after %d); retrying would put it over the newer one; not retrying", seq, last.Sequence, d.StreamSeq)
	}
	return nil
}

// unsealedValue says why ev, a key event carrying a value, does not carry
// it sealed ("" when it does, or carries none). Only the algorithm is
// checked: a value under a sealed algorithm that does not open is
// rejected again by the worker, and its new dead letter is redacted.
func unsealedValue(ev *events.Event) string {
	if ev.Type != events.KeyCreated && ev.Type != events.KeyRotated {
		return ""
	}
	kd, err := ev.KeyData()
	if err != nil {
		return "its key data does not decode"
	}
	if kd.Value == nil || kd.Value.Alg == events.AlgPlaintext {
		return "its value is not sealed"
	}
	return ""
}
