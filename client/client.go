// Package client is the Go side of keyrelay's contract for gateways and
// tools: publish key and team-settings events to JetStream with the right
// subject and Nats-Msg-Id, and follow the confirmations keyrelay answers
// with.
//
// # Guarantees
//
//   - Publish validates the event before it leaves the process and returns
//     only after JetStream has stored it (PubAck).
//   - Re-publishing the same event id within the stream's duplicate window
//     is a no-op on the server; keyrelay's ledger makes it a no-op after the
//     window too.
//   - A lane stream full of events not yet handled (streams.events_max_bytes)
//     refuses the publish rather than drop an accepted event: the error
//     wraps ErrStreamFull, and the event was not stored; publish it again
//     later (IsStreamFull tells the same of a PublishAsync future's error).
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/tracing"
)

// Stream names (kept in step with package worker).
const (
	EventsStream        = "KEYRELAY_EVENTS"
	BulkStream          = "KEYRELAY_BULK"
	ConfirmationsStream = "KEYRELAY_CONFIRMATIONS"
)

// ErrStreamFull is wrapped by Publish and PublishIn when the lane stream
// refused the event because it is full: it holds streams.events_max_bytes
// (default 1 GiB) of events, and the workers trim only events they have
// handled (workers down, or far behind). The event was not stored.
// Publish it again later (the same event id: a copy that was stored after
// all is dropped as a duplicate within the stream's duplicate window).
var ErrStreamFull = errors.New("keyrelay stream full of events not yet handled (streams.events_max_bytes); publish again later")

// jsErrCodeStreamStoreFailed is the JetStream error code of a message the
// stream did not store (nats-server's JSStreamStoreFailedF); its
// description says why.
const jsErrCodeStreamStoreFailed jetstream.ErrorCode = 10077

// IsStreamFull reports whether err is a stream's refusal of a message
// because the stream holds its MaxBytes or MaxMsgs and discards new
// messages: a *jetstream.APIError with code 10077 ("maximum bytes
// exceeded", "maximum messages exceeded"), or an error wrapping
// ErrStreamFull. Use it on the error of a PublishAsync future.
func IsStreamFull(err error) bool {
	if errors.Is(err, ErrStreamFull) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jsErrCodeStreamStoreFailed {
		return false
	}
	d := apiErr.Description
	return strings.Contains(d, "maximum bytes exceeded") || strings.Contains(d, "maximum messages exceeded")
}

// laneStream names the stream of lane l.
func laneStream(l events.Lane) string {
	if l == events.LaneBulk {
		return BulkStream
	}
	return EventsStream
}

// Publisher publishes events.
type Publisher struct {
	js     jetstream.JetStream
	tracer trace.Tracer
}

// PublisherOption adjusts a Publisher.
type PublisherOption func(*Publisher)

// WithTracerProvider makes the publisher's spans with tp. Default: the
// process-wide provider (otel.GetTracerProvider), a no-op one unless the
// program installed another.
func WithTracerProvider(tp trace.TracerProvider) PublisherOption {
	return func(p *Publisher) { p.tracer = tracing.Tracer(tp) }
}

// NewPublisher wraps a JetStream context.
//
// Every publish opens a producer span ("keyrelay.publish", a child of the
// span in ctx, if any) and carries its W3C trace context in the message's
// traceparent and tracestate headers, so the worker's span for the event
// continues the caller's trace.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js}
	for _, o := range opts {
		o(p)
	}
	if p.tracer == nil {
		p.tracer = tracing.Tracer(nil)
	}
	return p
}

// startSpan opens the publish span of ev and injects it into m.
func (p *Publisher) startSpan(ctx context.Context, l events.Lane, ev *events.Event, m *nats.Msg) (context.Context, trace.Span) {
	ctx, span := p.tracer.Start(ctx, tracing.SpanPublish, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(tracing.MessagingSystem.String("nats"), tracing.EventID.String(ev.ID), tracing.EventType.String(string(ev.Type)),
			tracing.TeamID.String(ev.TeamID), tracing.KeyID.String(ev.KeyID), tracing.Lane.String(l.String()))
	}
	tracing.Inject(ctx, m.Header)
	return ctx, span
}

// endSpan ends a publish span with the stream sequence or the failure. The
// error's message is left out (only that the publish failed).
func endSpan(span trace.Span, seq uint64, err error) {
	if err != nil {
		span.SetStatus(codes.Error, "publish failed")
	} else if seq > 0 {
		span.SetAttributes(tracing.StreamSeq.Int64(int64(seq)))
	}
	span.End()
}

// Publish validates ev and publishes it with Nats-Msg-Id = ev.ID. It
// returns the stream sequence. When the stream is full of events not yet
// handled the error wraps ErrStreamFull (errors.Is) and the event was not
// stored: publish it again later.
func (p *Publisher) Publish(ctx context.Context, ev *events.Event) (uint64, error) {
	return p.PublishIn(ctx, events.LaneInteractive, ev)
}

// PublishIn is Publish on lane l. Bulk tools (a rotation of thousands of
// keys) publish on events.LaneBulk, so that the gateway's own events are
// never queued behind theirs; bulk events must carry a generation.
func (p *Publisher) PublishIn(ctx context.Context, l events.Lane, ev *events.Event) (uint64, error) {
	b, err := ev.Encode()
	if err != nil {
		return 0, err
	}
	if err := ev.ValidateLane(l); err != nil {
		return 0, err
	}
	m := &nats.Msg{Subject: ev.SubjectIn(l), Data: b, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, ev.ID)
	ctx, span := p.startSpan(ctx, l, ev, m)
	pa, err := p.js.PublishMsg(ctx, m, jetstream.WithExpectStream(laneStream(l)))
	if err != nil {
		endSpan(span, 0, err)
		if IsStreamFull(err) {
			return 0, fmt.Errorf("publish %s %s: %w: %w", ev.Type, ev.ID, ErrStreamFull, err)
		}
		return 0, fmt.Errorf("publish %s %s: %w", ev.Type, ev.ID, err)
	}
	endSpan(span, pa.Sequence, nil)
	return pa.Sequence, nil
}

// PublishAsync publishes without waiting; the returned future resolves
// with the PubAck. Use it for bulk loads, then wait on the futures. Its
// span has no parent: PublishAsyncContext continues the caller's trace.
// A future's error is nats.go's own: IsStreamFull tells a full stream.
func (p *Publisher) PublishAsync(ev *events.Event) (jetstream.PubAckFuture, error) {
	return p.PublishAsyncContext(context.Background(), ev)
}

// PublishAsyncContext is PublishAsync with its publish span a child of the
// span in ctx. The span covers handing the message to the connection, not
// the PubAck; ctx does not bound the publish.
func (p *Publisher) PublishAsyncContext(ctx context.Context, ev *events.Event) (jetstream.PubAckFuture, error) {
	b, err := ev.Encode()
	if err != nil {
		return nil, err
	}
	m := &nats.Msg{Subject: ev.Subject(), Data: b, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, ev.ID)
	_, span := p.startSpan(ctx, events.LaneInteractive, ev, m)
	f, err := p.js.PublishMsgAsync(m, jetstream.WithExpectStream(EventsStream))
	endSpan(span, 0, err)
	return f, err
}

// FollowConfirmations calls fn for every confirmation from the given
// stream sequence (0: only new ones) until ctx ends or fn returns an error.
// pending is how many matching confirmations the stream held after this one
// when it was delivered (0: caught up). It uses an ordered consumer:
// nothing is left behind on the server.
func FollowConfirmations(ctx context.Context, js jetstream.JetStream, fromSeq uint64, filter string, fn func(seq, pending uint64, c *events.Confirmation) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if fromSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, fromSeq
	}
	if filter != "" {
		cfg.FilterSubjects = []string{filter}
	}
	cons, err := js.OrderedConsumer(ctx, ConfirmationsStream, cfg)
	if err != nil {
		return fmt.Errorf("follow confirmations: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow confirmations: %w", err)
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		md, _ := m.Metadata()
		var c events.Confirmation
		if err := json.Unmarshal(m.Data(), &c); err != nil {
			continue
		}
		var seq, pending uint64
		if md != nil {
			seq, pending = md.Sequence.Stream, md.NumPending
		}
		if err := fn(seq, pending, &c); err != nil {
			return err
		}
	}
}

// Listing limits. The listing restarts its ordered consumer after the
// last confirmation shown when it sees a transient error (no responders
// during an election, a timeout, a lost consumer); it gives up after
// ListRetriesDefault restarts in a row without progress.
const (
	// ListRetriesDefault is how many restarts in a row without a new
	// confirmation shown the listing tolerates before it fails.
	ListRetriesDefault = 8
	// ListIdleDefault is how long the listing waits for the next
	// confirmation while the server says more are pending before it
	// restarts its consumer.
	ListIdleDefault = 10 * time.Second
)

// ListConfirmations calls fn for every confirmation matching filter
// (empty: all) that the stream held when the listing started, oldest
// first, each exactly once, and returns once it has shown them all.
//
// It reads with an ordered consumer (an ephemeral, replica-1 consumer in
// memory that nats.go re-creates after a lost heartbeat or a gap): on a
// cluster the stream's leader may change or its node die during the
// listing. Transient errors (no responders, timeouts, a lost consumer)
// restart the listing after the last confirmation shown, with backoff;
// ListRetriesDefault restarts in a row without progress make it fail. A
// missing stream, a closed connection, fn's error and ctx's end are
// returned at once.
func ListConfirmations(ctx context.Context, js jetstream.JetStream, filter string, fn func(seq uint64, c *events.Confirmation) error) error {
	l := &lister{js: js, filter: filter, fn: fn, idle: ListIdleDefault}
	var info *jetstream.StreamInfo
	err := l.retry(ctx, func() (bool, error) {
		s, err := js.Stream(ctx, ConfirmationsStream)
		if err != nil {
			return false, err
		}
		info = s.CachedInfo()
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("list confirmations: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	l.last = info.State.LastSeq
	if err := l.retry(ctx, func() (bool, error) { return l.listFrom(ctx) }); err != nil {
		return fmt.Errorf("list confirmations (after stream sequence %d): %w", l.shown, err)
	}
	return nil
}

// lister is one listing: the stream sequence it ends at and the last one
// it has shown.
type lister struct {
	js     jetstream.JetStream
	filter string
	fn     func(seq uint64, c *events.Confirmation) error
	idle   time.Duration
	// last is the stream's last sequence when the listing started: later
	// confirmations are not listed.
	last uint64
	// shown is the stream sequence of the last confirmation passed to fn.
	shown uint64
}

// errFn marks fn's error: returned as it is, never retried.
type errFn struct{ err error }

func (e *errFn) Error() string { return e.err.Error() }
func (e *errFn) Unwrap() error { return e.err }

// retry runs attempt until it reports progress-and-done or a permanent
// error, restarting it with capped exponential backoff after transient
// errors; the count of restarts resets whenever attempt made progress.
func (l *lister) retry(ctx context.Context, attempt func() (done bool, err error)) error {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(250*time.Millisecond), backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0))
	failures := 0
	for {
		before := l.shown
		done, err := attempt()
		if done && err == nil {
			return nil
		}
		var fe *errFn
		if errors.As(err, &fe) {
			return fe.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !transient(err) {
			return err
		}
		if l.shown != before {
			failures = 0
			b.Reset()
		}
		failures++
		if failures > ListRetriesDefault {
			return fmt.Errorf("%d attempts in a row without progress: %w", failures, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(b.NextBackOff()):
		}
	}
}

// transient reports whether err may go away by itself: anything but a
// missing stream, a closed connection or a bad request.
func transient(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, jetstream.ErrInvalidOption), errors.Is(err, nats.ErrBadSubject):
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 && apiErr.Code != 408 {
		return false
	}
	return true
}

// listFrom lists from the confirmation after l.shown with a new ordered
// consumer until l.last. It returns done when the listing is complete.
func (l *lister) listFrom(ctx context.Context) (bool, error) {
	cfg := jetstream.OrderedConsumerConfig{MaxResetAttempts: 3}
	if l.shown > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, l.shown+1
	}
	if l.filter != "" {
		cfg.FilterSubjects = []string{l.filter}
	}
	cons, err := l.js.OrderedConsumer(ctx, ConfirmationsStream, cfg)
	if err != nil {
		return false, err
	}
	// Heartbeats every 2 s: a consumer lost with its node is noticed (and
	// re-created) after about 4 s rather than nats.go's default 30 s.
	it, err := cons.Messages(jetstream.PullMaxMessages(512), jetstream.PullExpiry(10*time.Second), jetstream.PullHeartbeat(2*time.Second))
	if err != nil {
		return false, err
	}
	defer it.Stop()
	// The consumer's creation answer counts what matched between its start
	// and the stream's end then: nothing means nothing is left to list.
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 && info.Delivered.Consumer == 0 {
		return true, nil
	}
	for {
		nctx, cancel := context.WithTimeout(ctx, l.idle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, err
		}
		md, err := m.Metadata()
		if err != nil {
			return false, err
		}
		seq := md.Sequence.Stream
		if seq > l.last {
			return true, nil
		}
		if seq > l.shown {
			var c events.Confirmation
			if json.Unmarshal(m.Data(), &c) == nil {
				if err := l.fn(seq, &c); err != nil {
					return false, &errFn{err}
				}
			}
			l.shown = seq
		}
		if seq == l.last || md.NumPending == 0 {
			return true, nil
		}
	}
}
