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
package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
)

// Stream names (kept in step with package worker).
const (
	EventsStream        = "KEYRELAY_EVENTS"
	ConfirmationsStream = "KEYRELAY_CONFIRMATIONS"
)

// Publisher publishes events.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher wraps a JetStream context.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// Publish validates ev and publishes it with Nats-Msg-Id = ev.ID. It
// returns the stream sequence.
func (p *Publisher) Publish(ctx context.Context, ev *events.Event) (uint64, error) {
	b, err := ev.Encode()
	if err != nil {
		return 0, err
	}
	m := &nats.Msg{Subject: ev.Subject(), Data: b, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, ev.ID)
	pa, err := p.js.PublishMsg(ctx, m, jetstream.WithExpectStream(EventsStream))
	if err != nil {
		return 0, fmt.Errorf("publish %s %s: %w", ev.Type, ev.ID, err)
	}
	return pa.Sequence, nil
}

// PublishAsync publishes without waiting; the returned future resolves
// with the PubAck. Use it for bulk loads, then wait on the futures.
func (p *Publisher) PublishAsync(ev *events.Event) (jetstream.PubAckFuture, error) {
	b, err := ev.Encode()
	if err != nil {
		return nil, err
	}
	m := &nats.Msg{Subject: ev.Subject(), Data: b, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, ev.ID)
	return p.js.PublishMsgAsync(m, jetstream.WithExpectStream(EventsStream))
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

// ListConfirmations calls fn for every retained confirmation matching
// filter (empty: all), oldest first, and returns once it has seen them all.
func ListConfirmations(ctx context.Context, js jetstream.JetStream, filter string, fn func(seq uint64, c *events.Confirmation) error) error {
	cfg := jetstream.OrderedConsumerConfig{}
	if filter != "" {
		cfg.FilterSubjects = []string{filter}
	}
	cons, err := js.OrderedConsumer(ctx, ConfirmationsStream, cfg)
	if err != nil {
		return fmt.Errorf("list confirmations: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("list confirmations: %w", err)
	}
	remaining := info.NumPending
	for remaining > 0 {
		batch, err := cons.Fetch(int(min(remaining, 256)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("list confirmations: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			var c events.Confirmation
			if json.Unmarshal(m.Data(), &c) == nil {
				if err := fn(md.Sequence.Stream, &c); err != nil {
					return err
				}
			}
			remaining = md.NumPending
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("list confirmations: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
	return nil
}
