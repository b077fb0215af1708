package ownership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/gopool"
	"github.com/keyrelay/keyrelay/internal/jsonw"
	"github.com/keyrelay/keyrelay/internal/jsread"
)

// Intents: what a claim records besides exclusion. A claim in the key's
// ledger entry says two things: nobody else writes the key now, and this
// event may be writing it. The lease replaces the first. The second is
// what a holder taking over after a crash needs: an event whose provider
// write happened but whose commit did not leaves the ledger at the older
// generation, and an older event handled before that event's redelivery
// would put an older value over the newer one (docs/architecture.md,
// "Writer leases"). So a claimless holder records each write's intent
// before the provider call, in a log instead of the entry: one stored
// message carries every intent appended while the previous one was being
// stored (group commit), so the log costs a fraction of a write per event.

// Intent says that an event may be writing a key: the fields of a claim.
type Intent struct {
	// Key is the ledger key (team and key id).
	Key        string `json:"key"`
	EventID    string `json:"event_id"`
	StreamSeq  uint64 `json:"stream_seq"`
	Lane       string `json:"lane"`
	Generation uint64 `json:"generation"`
	// Until is when the write's deadline ends (wall clock, for the
	// bounds other processes compute from it, as from a claim's).
	Until time.Time `json:"until"`
	// Taken is the holder's clock when it took the intent (zero: an
	// intent of an older version). Until − Taken is the write's time as
	// the holder counted it, which a reader counts from Stored, the
	// server's time, so that a holder whose clock runs behind the
	// servers' does not write intents that end early for its successor.
	Taken time.Time `json:"taken,omitzero"`
	// Stored is the server's time at which the batch carrying the intent
	// was stored (set by ReadIntents; never encoded).
	Stored time.Time `json:"-"`
}

// maxBatchesInFlight bounds the batches being stored at once: an intent
// appended while fewer are in flight goes out at once (about one round
// trip, as a claim), and under load the rest wait and share a message.
const maxBatchesInFlight = 4

// Limits of one batch.
const (
	MaxIntentsPerBatch = 512
	MaxBatchBytes      = 256 << 10
	// maxIntentBytes bounds one intent's encoding.
	maxIntentBytes = 1024
)

// ErrIntentTooLarge: an intent's encoding exceeds maxIntentBytes.
var ErrIntentTooLarge = errors.New("ownership: intent too large")

// Publisher stores data as one message under subject and returns once
// the stream has acknowledged it (or ctx ends).
type Publisher func(ctx context.Context, subject string, data []byte) error

// IntentLogOption configures an IntentLog.
type IntentLogOption func(*IntentLog)

// WithPublisher stores the batches through p instead of the JetStream
// client's Publish (the worker passes its own request path, which reads
// the acknowledgement without reflection).
func WithPublisher(p Publisher) IntentLogOption {
	return func(l *IntentLog) {
		if p != nil {
			l.publish = p
		}
	}
}

// flushers run the flushes on reused goroutines: a fresh one grew its
// stack through the publish for every batch.
var flushers = gopool.New(0)

// IntentLog appends intents to a stream subject by group commit.
type IntentLog struct {
	publish Publisher
	subject string

	mu sync.Mutex
	// queue holds the batches not yet taken by a flusher, oldest first;
	// appends go into the last one until it is full.
	queue    []*intentBatch
	inflight int // flushers running (each stores one batch at a time)
	appends  uint64
	batches  uint64
}

// intentBatch is one stored message's worth of intents: encoded straight
// into the message's bytes, and one channel that every appender of the
// batch waits on (no allocation per intent beyond the buffer's growth).
type intentBatch struct {
	buf  []byte // "[" and the intents, comma-separated; "]" at the flush
	n    int
	done chan struct{}
	err  error // set before done is closed
}

// Stats returns how many intents were stored and in how many messages.
func (l *IntentLog) Stats() (intents, messages uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appends, l.batches
}

// NewIntentLog appends to subject (a subject of a stream the caller
// created; its max age bounds how long intents are kept).
func NewIntentLog(js jetstream.JetStream, subject string, opts ...IntentLogOption) *IntentLog {
	l := &IntentLog{subject: subject, publish: func(ctx context.Context, subject string, data []byte) error {
		_, err := js.Publish(ctx, subject, data)
		return err
	}}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Append stores in and returns once it is stored (or ctx ends: then it
// may or may not be stored). Concurrent appends share stored messages.
func (l *IntentLog) Append(ctx context.Context, in Intent) error {
	l.mu.Lock()
	b, err := l.add(in)
	if err != nil {
		l.mu.Unlock()
		return err
	}
	if l.inflight < maxBatchesInFlight {
		l.inflight++
		flushers.Go(l.flush)
	}
	l.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// add encodes in into the open batch, or a new one when it would not fit.
// l.mu is held.
func (l *IntentLog) add(in Intent) (*intentBatch, error) {
	var b *intentBatch
	if len(l.queue) > 0 {
		b = l.queue[len(l.queue)-1]
	}
	if b == nil || b.n >= MaxIntentsPerBatch || len(b.buf)+maxIntentBytes+2 > MaxBatchBytes {
		b = &intentBatch{buf: make([]byte, 1, 4096), done: make(chan struct{})}
		b.buf[0] = '['
		l.queue = append(l.queue, b)
	}
	mark := len(b.buf)
	buf := b.buf
	if b.n > 0 {
		buf = append(buf, ',')
	}
	buf, err := in.appendJSON(buf)
	if err == nil && len(buf)-mark > maxIntentBytes+1 {
		err = ErrIntentTooLarge
	}
	if err != nil {
		if b.n == 0 && len(l.queue) > 0 && l.queue[len(l.queue)-1] == b {
			l.queue = l.queue[:len(l.queue)-1] // a batch of none is never stored
		}
		b.buf = b.buf[:mark]
		if !errors.Is(err, ErrIntentTooLarge) {
			err = fmt.Errorf("ownership: encode intent: %w", err)
		}
		return nil, err
	}
	b.buf = buf
	b.n++
	return b, nil
}

// appendJSON encodes in as encoding/json would, without reflection.
func (in Intent) appendJSON(b []byte) ([]byte, error) {
	o := jsonw.Begin(b)
	o.String("key", in.Key)
	o.String("event_id", in.EventID)
	o.Uint("stream_seq", in.StreamSeq)
	o.String("lane", in.Lane)
	o.Uint("generation", in.Generation)
	o.Time("until", in.Until)
	if !in.Taken.IsZero() {
		o.Time("taken", in.Taken)
	}
	return o.End()
}

// flush stores the queue, a batch at a time, until it is empty.
func (l *IntentLog) flush() {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.inflight--
			l.mu.Unlock()
			return
		}
		b := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		l.mu.Unlock()

		b.buf = append(b.buf, ']')
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := l.publish(ctx, l.subject, b.buf)
		cancel()
		if err != nil {
			b.err = fmt.Errorf("ownership: store intents: %w", err)
		} else {
			l.mu.Lock()
			l.appends += uint64(b.n)
			l.batches++
			l.mu.Unlock()
		}
		close(b.done)
	}
}

// ReadIntents returns the intents stored under subject since the given
// time (the stream's max age bounds what is left). bad counts stored
// messages that are not valid batches: their intents are unknown, so a
// caller that finds any must treat every key as possibly being written
// until the bound a lost intent would have had.
//
// It reads with jsread: every step is bounded, and a read that stops
// making progress (the stream between leaders, a consumer lost with its
// node) fails with an error wrapping jsread.ErrStalled within seconds
// instead of waiting out ctx; its caller tries again.
func ReadIntents(ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time) (intents []Intent, bad int, err error) {
	err = jsread.Read(ctx, js, jsread.Config{Stream: stream, FilterSubjects: []string{subject}, StartTime: since},
		func(m jetstream.Msg, md *jetstream.MsgMetadata) bool {
			var ins []Intent
			if len(m.Data()) > MaxBatchBytes || json.Unmarshal(m.Data(), &ins) != nil || !validIntents(ins) {
				bad++
				return true
			}
			if md != nil {
				for i := range ins {
					ins[i].Stored = md.Timestamp
				}
			}
			intents = append(intents, ins...)
			return true
		})
	if err != nil {
		return nil, 0, fmt.Errorf("ownership: read intents: %w", err)
	}
	return intents, bad, nil
}

// ClampIntents cuts to latest the deadline (Until) of every intent in ins
// that ends after it, and returns how many it cut. A holder writes an
// intent with its lease's deadline, never further than one lease TTL
// after the write, so a reader passes its own time plus the lease TTL: a
// later deadline was not written by a holder (a forged or corrupt batch,
// or a clock far ahead), and would otherwise keep its key waiting for as
// long as it says (an Until in the year 9999: forever). Clamped rather
// than dropped: a genuine intent written by a holder whose clock runs
// ahead still keeps its key for a full lease, so exclusion holds, while
// no intent keeps a key longer than one lease after it is loaded (plus
// the bound the dead-claim rule gives every intent).
func ClampIntents(ins []Intent, latest time.Time) int {
	n := 0
	for i := range ins {
		if ins[i].Until.After(latest) {
			ins[i].Until = latest
			n++
		}
	}
	return n
}

// ClampIntentLeases cuts to ttl the time an intent in ins gives its write
// (Until − Taken, counted by a reader from Stored) where it is longer, by
// moving Taken later, and returns how many it cut. A holder's write never
// has more than one lease TTL from when it took the intent to its
// deadline, so a longer one was not written by a holder (a forged or
// corrupt batch), and would keep its key waiting for as long as it says;
// as with ClampIntents, no intent then keeps a key longer than one lease
// after it is loaded.
func ClampIntentLeases(ins []Intent, ttl time.Duration) int {
	n := 0
	for i := range ins {
		if in := &ins[i]; !in.Taken.IsZero() && in.Until.Sub(in.Taken) > ttl {
			in.Taken = in.Until.Add(-ttl)
			n++
		}
	}
	return n
}

func validIntents(ins []Intent) bool {
	if len(ins) == 0 || len(ins) > MaxIntentsPerBatch {
		return false
	}
	for _, in := range ins {
		if in.Key == "" || in.EventID == "" || in.Generation == 0 || in.Until.IsZero() {
			return false
		}
	}
	return true
}
