package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishError is a transient publish failure: the rows stay pending.
type publishError struct{ err error }

func (e *publishError) Error() string { return "publish: " + e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

type rowFailure struct {
	seq    int64
	reason string
}

type wavePublishError struct {
	err  error
	seqs []int64
}

// publish sends items in waves: wave w holds the w-th item of every key,
// published asynchronously; the next wave starts once every PubAck of this
// one arrived. So at most one message per key is in flight, and a row is
// never stored before an earlier row of its key. A transient error stops
// after the wave (the rows behind stay pending); a permanent one fails
// that row only.
func (r *Relay) publish(items []*item) (acked []*item, failed []rowFailure, perr *wavePublishError) {
	if len(items) == 0 {
		return nil, nil, nil
	}
	byKey := map[string][]*item{}
	var order []string
	for _, it := range items {
		if _, ok := byKey[it.key]; !ok {
			order = append(order, it.key)
		}
		byKey[it.key] = append(byKey[it.key], it)
	}
	futs := make([]jetstream.PubAckFuture, 0, min(len(order), maxInFlight))
	wave := make([]*item, 0, len(order))
	for w := 0; ; w++ {
		wave = wave[:0]
		for _, k := range order {
			if g := byKey[k]; w < len(g) {
				wave = append(wave, g[w])
			}
		}
		if len(wave) == 0 {
			return acked, failed, nil
		}
		for len(wave) > maxInFlight {
			// Order across keys is free: publish a long wave in chunks, to
			// stay below the client's async publish limit.
			a, f, perr := r.publishWave(wave[:maxInFlight], futs)
			acked, failed = append(acked, a...), append(failed, f...)
			if perr != nil {
				return acked, failed, perr
			}
			wave = wave[maxInFlight:]
		}
		a, f, perr := r.publishWave(wave, futs)
		acked, failed = append(acked, a...), append(failed, f...)
		if perr != nil {
			return acked, failed, perr
		}
	}
}

// maxInFlight bounds the PubAcks one relay waits for at once (the client's
// async publish limit defaults to 4000).
const maxInFlight = 1024

// publishWave publishes items, which are of distinct keys, asynchronously
// and waits for every PubAck.
func (r *Relay) publishWave(wave []*item, futs []jetstream.PubAckFuture) (acked []*item, failed []rowFailure, perr *wavePublishError) {
	futs = futs[:0]
	if c := r.pub.Conn(); c != nil && !c.IsConnected() {
		// While disconnected the client would keep the messages in its
		// reconnect buffer and send them whenever the connection returns:
		// maybe long after another relay published these rows and later
		// ones of their keys, and past the duplicate window, so stored
		// again out of order. Publish nothing; the rows stay pending.
		return nil, nil, &wavePublishError{err: &publishError{err: fmt.Errorf("NATS connection %s", c.Status())}}
	}
	var transient error
	var tseqs []int64
	for _, it := range wave {
		r.startSpan(it)
		f, err := r.pub.PublishMsgAsync(it.msg, jetstream.WithExpectStream(r.cfg.Stream))
		if err != nil {
			if errors.Is(err, nats.ErrMaxPayload) {
				failed = append(failed, rowFailure{it.seq, "message larger than the NATS server's max_payload"})
				futs = append(futs, nil)
				it.endSpan("message too large", false)
				continue
			}
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				r.dropLostAcks()
			}
			transient = err
			it.endSpan("publish failed", false)
			break
		}
		futs = append(futs, f)
	}
	timer := time.NewTimer(r.cfg.PublishTimeout)
	for i, f := range futs {
		if f == nil {
			continue
		}
		it := wave[i]
		select {
		case pa := <-f.Ok():
			it.sseq = pa.Sequence
			if pa.Duplicate {
				r.m.duplicates.Inc()
			}
			r.m.published.Inc()
			acked = append(acked, it)
			it.endSpan("", pa.Duplicate)
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
				failed = append(failed, rowFailure{it.seq, "message larger than the stream's max_msg_size"})
				it.endSpan("message too large", false)
				continue
			}
			// Anything else is transient, a full stream included
			// (client.IsStreamFull: KEYRELAY_EVENTS holds
			// streams.events_max_bytes of events not yet handled and
			// refuses new ones until the workers trim handled ones): the
			// rows stay pending (TestFullStreamKeepsRowsPending).
			if transient == nil {
				transient = err
			}
			tseqs = append(tseqs, it.seq)
			it.endSpan("publish failed", false)
		case <-timer.C:
			if transient == nil {
				transient = fmt.Errorf("no PubAck within %v", r.cfg.PublishTimeout)
			}
			tseqs = append(tseqs, it.seq)
			it.endSpan("no PubAck in time", false)
			// Drain the rest without waiting.
			timer.Reset(0)
		}
	}
	timer.Stop()
	if transient != nil {
		if len(futs) < len(wave) && len(tseqs) == 0 {
			tseqs = append(tseqs, wave[len(futs)].seq)
		}
		return acked, failed, &wavePublishError{err: &publishError{err: transient}, seqs: tseqs}
	}
	return acked, failed, nil
}

// dropLostAcks makes the JetStream client forget the PubAcks it still
// waits for. It is called when the client refuses new async publishes
// because too many are pending: the relay waits for (or gives up on) every
// PubAck of a wave before the next, so those are PubAcks that never came
// (a leader election, a network blip without a reconnect) and never will;
// the client keeps them until a reconnect, so without this the relay
// would be stuck until one. Their rows are still pending and published
// again (the stream drops copies it already holds).
func (r *Relay) dropLostAcks() {
	if c, ok := r.pub.(interface{ CleanupPublisher() }); ok {
		r.log.Warn("outbox relay: the JetStream client holds too many PubAcks that never arrived; dropping them")
		c.CleanupPublisher()
	}
}
