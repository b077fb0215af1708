// Package jsread reads a range of a JetStream stream once, in order,
// through an ephemeral consumer, so that a reader that must see every
// message of the range (a new writer-lease holder loading its
// predecessors' intents, a point-in-time replay) either sees all of them
// or fails with an error; it never ends early on a stall, and never waits
// out its context behind a lost node.
//
// nats.go's ordered consumer does not fit: its Fetch recreates the
// consumer on every call, and when a create fails it retries with backoff
// and without a context; a read behind a killed node sat for 30 s that
// way. Here every API call is bounded by Config.Stall, a consumer that
// fails, or delivers nothing for Stall while messages are pending, is
// replaced by a new one starting after the last message read, and a read
// that makes no progress for Config.GiveUp fails with ErrStalled.
package jsread

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
)

// Config selects the range. The zero start is the stream's first message.
type Config struct {
	// Stream is the stream's name.
	Stream string
	// FilterSubjects limits the read to these subjects (default: all).
	FilterSubjects []string
	// StartSeq starts at this stream sequence; StartTime at the first
	// message stored at or after it. At most one is set.
	StartSeq  uint64
	StartTime time.Time
	// Stall bounds each API call and each wait for a pending message.
	// Default 3s.
	Stall time.Duration
	// GiveUp: a read that has read nothing for this long (through as
	// many new consumers as it took) fails with ErrStalled. Default 30s:
	// a cluster that lost its meta leader with the stream's can refuse
	// consumers for ten seconds and more.
	GiveUp time.Duration
	// Batch is the most messages asked for at once. Default 256.
	Batch int
}

// ErrStalled: nothing was read for Config.GiveUp although messages were
// pending (or no consumer could be made), through one or more new
// consumers.
var ErrStalled = errors.New("jsread: no progress reading the stream")

// Config's defaults.
const (
	DefaultStall  = 3 * time.Second
	DefaultGiveUp = 30 * time.Second
)

// Read calls fn for each message of the range, in stream order, each once,
// until fn returns false or no message is pending after the last one
// delivered (so messages stored while the read runs are read too, up to
// the moment it catches up; a caller with a fixed end stops at it). It
// returns fn's stop as nil.
func Read(ctx context.Context, js jetstream.JetStream, cfg Config, fn func(jetstream.Msg, *jetstream.MsgMetadata) bool) error {
	if cfg.Stall <= 0 {
		cfg.Stall = DefaultStall
	}
	if cfg.GiveUp <= 0 {
		cfg.GiveUp = DefaultGiveUp
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.StartSeq > 0 && !cfg.StartTime.IsZero() {
		return errors.New("jsread: both a start sequence and a start time")
	}
	r := &reader{js: js, cfg: cfg}
	defer r.drop(ctx)
	var (
		last    uint64 // the last sequence read
		lastErr error  // the last failure, for ErrStalled
	)
	progress := time.Now()
	// retry drops the consumer after a failure, or gives up once nothing
	// was read for GiveUp.
	retry := func(err error) error {
		lastErr = err
		r.drop(ctx)
		r.cons = nil
		if time.Since(progress) > cfg.GiveUp {
			return fmt.Errorf("%w (%s, after sequence %d): %w", ErrStalled, cfg.Stream, last, lastErr)
		}
		return ctxtime.Sleep(ctx, cfg.Stall/10)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.cons == nil {
			if err := r.create(ctx, last); err != nil {
				if err := retry(err); err != nil {
					return err
				}
				continue
			}
		}
		if r.pending == 0 {
			return nil
		}
		batch, err := r.cons.FetchNoWait(int(min(r.pending, uint64(cfg.Batch))))
		if err != nil {
			// No responders: the consumer went with its node.
			if err := retry(fmt.Errorf("jsread: fetch from %s: %w", cfg.Stream, err)); err != nil {
				return err
			}
			continue
		}
		got := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("jsread: message metadata: %w", err)
			}
			if md.Sequence.Stream <= last {
				continue // a recreated consumer never redelivers; be safe
			}
			got++
			last, r.pending = md.Sequence.Stream, md.NumPending
			if !fn(m, md) {
				return nil
			}
		}
		now := time.Now()
		if got > 0 {
			progress, r.since = now, now
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			if err := retry(fmt.Errorf("jsread: fetch from %s: %w", cfg.Stream, err)); err != nil {
				return err
			}
			continue
		}
		if got > 0 {
			continue
		}
		if now.Sub(r.since) > cfg.Stall {
			// The consumer (the stream between leaders, its node lost)
			// delivers nothing though messages are pending: a new one,
			// where this one stopped.
			if err := retry(fmt.Errorf("jsread: %d messages pending on %s and none delivered for %v", r.pending, cfg.Stream, cfg.Stall)); err != nil {
				return err
			}
			continue
		}
		if err := ctxtime.Sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

type reader struct {
	js      jetstream.JetStream
	cfg     Config
	stream  jetstream.Stream
	cons    jetstream.Consumer
	pending uint64
	// since is when the current consumer was created or last delivered.
	since time.Time
}

// create makes a consumer starting after sequence last (at the configured
// start when last is 0).
func (r *reader) create(ctx context.Context, last uint64) error {
	actx, cancel := context.WithTimeout(ctx, r.cfg.Stall)
	defer cancel()
	if r.stream == nil {
		s, err := r.js.Stream(actx, r.cfg.Stream)
		if err != nil {
			return fmt.Errorf("jsread: stream %s: %w", r.cfg.Stream, err)
		}
		r.stream = s
	}
	cc := jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, Replicas: 1, InactiveThreshold: time.Minute}
	if len(r.cfg.FilterSubjects) == 1 {
		cc.FilterSubject = r.cfg.FilterSubjects[0]
	} else {
		cc.FilterSubjects = r.cfg.FilterSubjects
	}
	switch {
	case last > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	case r.cfg.StartSeq > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.cfg.StartSeq
	case !r.cfg.StartTime.IsZero():
		t := r.cfg.StartTime
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	c, err := r.stream.CreateConsumer(actx, cc)
	if err != nil {
		return fmt.Errorf("jsread: consumer on %s: %w", r.cfg.Stream, err)
	}
	r.cons, r.pending, r.since = c, c.CachedInfo().NumPending, time.Now()
	return nil
}

// drop deletes the current consumer, best effort (its inactive threshold
// removes it otherwise).
func (r *reader) drop(ctx context.Context) {
	if r.cons == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(r.cfg.Stall, 2*time.Second))
	_ = r.stream.DeleteConsumer(dctx, r.cons.CachedInfo().Name)
	cancel()
}
