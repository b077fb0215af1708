package worker

import (
	"context"
	"fmt"

	"github.com/keyrelay/keyrelay/events"
)

// claimOutcome is what became of the event that holds an expired claim,
// as far as the stream can tell.
type claimOutcome int

const (
	// outcomeUnknown: no confirmation and not acknowledged; the event is
	// still pending on its consumer, so its redelivery will finish it.
	outcomeUnknown claimOutcome = iota
	// outcomeWritten: the event is confirmed with a write (stored,
	// rotated or deleted): its value is in the backend. Its commit is what
	// is missing; the event was handed back for it, and its redelivery
	// commits it.
	outcomeWritten
	// outcomeOver: the event is finished without a write (confirmed
	// skipped, superseded, rejected or failed), or its lane's consumer
	// has acknowledged or terminated it (at or below the acknowledgement
	// floor) and no confirmation says it wrote. No delivery of it is
	// coming back for the claim.
	outcomeOver
)

// outcomeOf tells what became of the event that took claim c on team's
// key, from the two records that outlive a worker: the event's
// confirmation (one subject per event id), then its lane consumer's
// acknowledgement floor. The consumers redeliver without limit
// (MaxDeliver -1) and keyrelay terminates a message only after its dead
// letter and confirmation are stored, so a message at or below the floor
// was acknowledged or terminated and will not be delivered again, unless
// it was acknowledged because it was parked: a message at or below the
// floor with a schedule or a fired schedule in ParkedStream is unknown.
//
// Claims that name no stream message (recovery's, and those written
// before StreamSeq existed) are only ever unknown or decided by a
// confirmation. A NATS error makes the outcome unknown: the caller waits,
// as it would have without asking.
func (w *Worker) outcomeOf(ctx context.Context, c *Claim, team, key string) (claimOutcome, *events.Confirmation, error) {
	if c == nil || events.ValidateID("id", c.EventID) != nil {
		return outcomeUnknown, nil, nil
	}
	conf, err := w.readConfirmation(ctx, events.ConfirmationSubject(team, key, c.EventID))
	if err != nil {
		return outcomeUnknown, nil, fmt.Errorf("confirmation of event %s: %w", c.EventID, err)
	}
	if conf != nil && conf.Generation == c.Generation {
		switch conf.Status {
		case events.StatusStored, events.StatusRotated, events.StatusDeleted:
			return outcomeWritten, conf, nil
		default:
			return outcomeOver, conf, nil
		}
	}
	if c.StreamSeq == 0 {
		return outcomeUnknown, conf, nil
	}
	floor, err := w.ackFloor(ctx, c.Lane)
	if err != nil {
		return outcomeUnknown, conf, err
	}
	if c.StreamSeq <= floor {
		// Acknowledged on its lane, but perhaps parked (ParkedPrefix):
		// then its parked copy comes back for the claim.
		parked, err := w.parkedPending(ctx, c.Lane, team, key, c.StreamSeq)
		if err != nil || parked {
			return outcomeUnknown, conf, err
		}
		return outcomeOver, conf, nil
	}
	return outcomeUnknown, conf, nil
}

// ackFloor is the stream sequence up to which lane's consumer has every
// message acknowledged or terminated.
func (w *Worker) ackFloor(ctx context.Context, lane events.Lane) (uint64, error) {
	cons, err := w.d.JS.Consumer(ctx, StreamOf(lane), ConsumerOf(lane))
	if err != nil {
		return 0, fmt.Errorf("consumer of lane %s: %w", lane, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer of lane %s: %w", lane, err)
	}
	return info.AckFloor.Stream, nil
}
