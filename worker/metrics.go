package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrelay/keyrelay/providers"
)

// Metrics are the worker's Prometheus metrics. Labels never carry ids,
// names or values: only types, outcomes, providers and operations.
type Metrics struct {
	Events        *prometheus.CounterVec
	EventDuration *prometheus.HistogramVec
	// handled caches the children of Events and EventDuration that every
	// event updates (eventHandled): finding a child by its label values
	// hashes and checks them each time.
	handledMu       sync.RWMutex
	handled         map[[2]string]handledMetrics
	ProviderCalls   *prometheus.CounterVec
	ProviderLatency *prometheus.HistogramVec
	Retries         *prometheus.CounterVec
	DeadLetters     *prometheus.CounterVec
	Pending         *prometheus.GaugeVec
	AckPending      *prometheus.GaugeVec
	InFlight        prometheus.Gauge
	// BreakerOpen is 1 while a backend's circuit breaker is open or
	// half-open, by provider.
	BreakerOpen *prometheus.GaugeVec
	// Contradictions counts confirmations refused because the event id
	// already had a confirmation saying something else.
	Contradictions prometheus.Counter
	// Retirements counts previous versions' retirements by outcome
	// (retired, retry, refused, invalid, unknown_backend, and rearmed: a
	// schedule found overdue and stored again, retire_rearm.go).
	Retirements *prometheus.CounterVec
	// RetirementsOverdue is how many retirement schedules this process
	// last found past their time by more than RetireOverdueMargin, not
	// fired (retire_rearm.go); each was armed again.
	RetirementsOverdue prometheus.Gauge
	// Parked counts key events handed back for worker.park_after or
	// longer, by lane and outcome (park.go).
	Parked *prometheus.CounterVec
	// StreamMsgs, StreamBytes and StreamDiscarded describe keyrelay's
	// streams: messages and bytes held, and messages dropped from the
	// head by age or size limits (first sequence - 1).
	StreamMsgs      *prometheus.GaugeVec
	StreamBytes     *prometheus.GaugeVec
	StreamLimit     *prometheus.GaugeVec
	StreamDiscarded *prometheus.GaugeVec
	// Trimmed counts, by lane stream, the handled events this process
	// purged from its head to keep it under TrimLowWater of its MaxBytes
	// (trim.go).
	Trimmed *prometheus.CounterVec
	// TrimBlocked is 1 while a lane stream holds more than TrimHighWater
	// of its MaxBytes and its oldest message is not handled yet
	// (unacknowledged): nothing can be trimmed, and at MaxBytes
	// (streams.events_max_bytes) the server refuses new publishes. A
	// round that fails (NATS trouble, no consumer) leaves it as it was.
	TrimBlocked *prometheus.GaugeVec
	// ParkedOverdue is, by lane, how many parked events' schedules this
	// process last found past their time by more than
	// ParkedOverdueMargin, not fired (parkrearm.go); each was armed again.
	ParkedOverdue *prometheus.GaugeVec
	// Redelivered is, by lane, the events delivered more than once and
	// not acknowledged yet (the consumer's NumRedelivered).
	Redelivered *prometheus.GaugeVec
	// OldestUnacked is, by lane, the age of the oldest event delivered and
	// not acknowledged yet, counted from its publication (0 when none);
	// see OldestUnackedAge.
	OldestUnacked *prometheus.GaugeVec
	// ClaimExpiries counts ledger claims taken over after their lease ran
	// out: the claimant's process stopped (or overran the lease) without
	// committing or releasing the key.
	ClaimExpiries prometheus.Counter
	// DeadClaims counts decisions of an event that found an expired claim
	// of another event of its generation or a newer one, by what the
	// stream told of that event: "written" (confirmed with a write: the
	// event is superseded at once), "over" (finished without a write, or
	// acknowledged: it goes ahead at once) or "waited" (unknown: it waits
	// for that event's redelivery).
	DeadClaims *prometheus.CounterVec
	// WriterLease is 1 while this process holds the writer lease and
	// consumes (worker.ownership exclusive), 0 otherwise.
	WriterLease prometheus.Gauge
	// CorruptEntries counts reads of an entry of a keyrelay KV bucket
	// that cannot be used (it does not decode, or a teams entry names
	// another team than its key), by bucket. The events that need such an
	// entry wait until an operator repairs or deletes it.
	CorruptEntries *prometheus.CounterVec
	// IntentsClamped counts intents loaded by a new writer-lease holder
	// whose deadline lay further ahead than one lease TTL: cut to now +
	// TTL (exclusive.prepare).
	IntentsClamped prometheus.Counter
}

// NewMetrics registers the worker metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_events_total", Help: "Events handled, by event type and outcome (confirmation status, or nak).",
		}, []string{"type", "outcome"}),
		EventDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyrelay_event_duration_seconds", Help: "Time from delivery to ack of one event, by type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"type"}),
		ProviderCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_provider_calls_total", Help: "Provider calls by provider, operation and status (ok, not_found, retryable, throttled, permanent).",
		}, []string{"provider", "op", "status"}),
		ProviderLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyrelay_provider_call_duration_seconds", Help: "Provider call latency by provider and operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"provider", "op"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_retries_total", Help: "Retries: in_process (backoff within one delivery), redelivery (NakWithDelay after a provider failure, spends the event's retry budget) and wait (handed back because NATS, the key's claim or the backend's slots were busy; spends nothing).",
		}, []string{"kind"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyrelay_dlq_entries_total", Help: "Events sent to the DLQ, by status (failed, rejected).",
		}, []string{"status"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_consumer_pending", Help: "Events in a lane's stream not yet delivered to its shared consumer, by lane (interactive, bulk; interactive-parked and bulk-parked: parked events due and not yet delivered again).",
		}, []string{"lane"}),
		AckPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keyrelay_consumer_ack_pending", Help: "Events of a lane delivered and not yet acknowledged, by lane.",
		}, []string{"lane"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyrelay_events_in_flight", Help: "Events this process is handling now.",
		}),
	}
	m.BreakerOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyrelay_backend_breaker_open", Help: "1 while a backend's circuit breaker is open or half-open (its events are handed back without a call).",
	}, []string{"provider"})
	m.Retirements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrelay_retirements_total", Help: "Retirements of previous versions after their grace period, by outcome (retired, retry, refused, invalid: a message that failed validation, unknown_backend: its backend cannot be opened; rearmed: a schedule found overdue, stored again to fire now).",
	}, []string{"outcome"})
	m.RetirementsOverdue = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keyrelay_retirements_overdue", Help: "Retirement schedules in KEYRELAY_RETIRE past their time by over a minute without firing when this process last looked (every 10 minutes, every schedule). Each was armed again; one that stays overdue is not being stored (the server's storage full, or its publishes refused), and its previous version stays valid past its grace period.",
	})
	m.Parked = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrelay_parked_total", Help: "Key events handed back for the worker's ParkAfter (default 10 s) or longer, by lane and outcome (parked: stored as a message schedule in KEYRELAY_PARKED, out of the lane consumer's pending set; fallback: the park failed, handed back to the consumer; invalid: a parked message that names no event of its lane, terminated; rearmed: a schedule found overdue, stored again to fire now).",
	}, []string{"lane", "outcome"})
	m.Contradictions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyrelay_confirmation_contradictions_total", Help: "Confirmations refused because the event id already had a confirmation with another outcome (a reused event id).",
	})
	m.StreamMsgs = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyrelay_stream_messages", Help: "Messages held by a keyrelay stream."}, []string{"stream"})
	m.StreamBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyrelay_stream_bytes", Help: "Bytes held by a keyrelay stream."}, []string{"stream"})
	m.StreamLimit = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "keyrelay_stream_limit", Help: "A keyrelay stream's configured limits (-1: none), by kind (bytes, msgs)."}, []string{"stream", "kind"})
	m.StreamDiscarded = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyrelay_stream_discarded_messages", Help: "Messages a keyrelay stream dropped from its head by its age or size limits, or (the lane streams) handled events trimmed by the workers (its first sequence - 1); alert when it grows for the DLQ.",
	}, []string{"stream"})
	m.Trimmed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrelay_stream_trimmed_messages_total", Help: "Handled events this process purged from the head of a lane stream (KEYRELAY_EVENTS, KEYRELAY_BULK) above 90% of streams.events_max_bytes (or with less room left than the largest event), down toward 80%; never an event not yet handled.",
	}, []string{"stream"})
	m.ParkedOverdue = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyrelay_parked_overdue", Help: "Parked key events whose schedule in KEYRELAY_PARKED was past its time by over a minute without firing when this process last looked (every minute; at most 1,024 of the oldest per lane), by lane. Each was armed again; one that stays overdue is not being stored (the server's storage full, or its publishes refused).",
	}, []string{"lane"})
	m.TrimBlocked = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyrelay_stream_trim_blocked", Help: "1 while a lane stream holds more than 90% of streams.events_max_bytes (or has less room left than the largest event) and its oldest event is not acknowledged yet, so nothing can be trimmed: at events_max_bytes the server refuses new publishes (polled every 5 s).",
	}, []string{"stream"})
	m.Redelivered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyrelay_consumer_redelivered", Help: "Events of a lane delivered more than once and not yet acknowledged, by lane (polled every 5 s).",
	}, []string{"lane"})
	m.OldestUnacked = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "keyrelay_consumer_oldest_unacked_age_seconds", Help: "Age, since it was published, of a lane's oldest event delivered and not yet acknowledged (the first stream message after the consumer's ack floor; 0 when none), by lane (polled every 5 s).",
	}, []string{"lane"})
	m.ClaimExpiries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyrelay_claim_lease_expiries_total", Help: "Ledger claims taken over after their lease (worker.claim_lease) ran out: the claimant stopped or overran its lease without committing or releasing the key.",
	})
	m.DeadClaims = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrelay_dead_claim_decisions_total", Help: "Events that found an expired claim of another event of their generation or a newer one, by what the confirmation and the consumer's ack floor told of that event: written (superseded at once), over (went ahead at once), waited (handed back until its redelivery).",
	}, []string{"outcome"})
	m.WriterLease = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "keyrelay_writer_lease_held", Help: "1 while this process holds the writer lease and consumes the event lanes (worker.ownership exclusive); 0 while it stands by or runs in claims mode.",
	})
	m.CorruptEntries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyrelay_corrupt_entries_total", Help: "Reads of an entry of a keyrelay KV bucket that cannot be used (it does not decode, or a teams entry names another team than its key), by bucket. The events that need it wait until it is repaired (docs/architecture.md); the error log names the key.",
	}, []string{"bucket"})
	m.IntentsClamped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keyrelay_intents_clamped_total", Help: "Stored intents whose deadline lay further ahead than one writer lease TTL when a new holder loaded them (forged or corrupt): their deadline was cut to the load time + TTL.",
	})
	if reg != nil {
		reg.MustRegister(m.CorruptEntries, m.IntentsClamped, m.Parked, m.ParkedOverdue, m.RetirementsOverdue, m.Trimmed, m.TrimBlocked)
		reg.MustRegister(m.Events, m.EventDuration, m.ProviderCalls, m.ProviderLatency, m.Retries,
			m.DeadLetters, m.Pending, m.AckPending, m.InFlight, m.BreakerOpen, m.Contradictions, m.Retirements,
			m.StreamMsgs, m.StreamBytes, m.StreamLimit, m.StreamDiscarded, m.Redelivered, m.OldestUnacked, m.ClaimExpiries, m.DeadClaims, m.WriterLease)
	}
	return m
}

// observeConsumer exports a lane's consumer state from its info: pending,
// ack pending, redelivered and the age of its oldest unacknowledged event.
func (m *Metrics) observeConsumer(ctx context.Context, js jetstream.JetStream, lane string, info *jetstream.ConsumerInfo) {
	m.Pending.WithLabelValues(lane).Set(float64(info.NumPending))
	m.AckPending.WithLabelValues(lane).Set(float64(info.NumAckPending))
	m.Redelivered.WithLabelValues(lane).Set(float64(info.NumRedelivered))
	if age, err := OldestUnackedAge(ctx, js, info, time.Now()); err == nil {
		m.OldestUnacked.WithLabelValues(lane).Set(age.Seconds())
	}
}

// observeParked exports a lane's parked consumer (lane "<lane>-parked"):
// pending and ack pending. Its oldest unacknowledged age would be a
// schedule's, not an event's: not exported.
func (m *Metrics) observeParked(lane string, info *jetstream.ConsumerInfo) {
	m.Pending.WithLabelValues(lane).Set(float64(info.NumPending))
	m.AckPending.WithLabelValues(lane).Set(float64(info.NumAckPending))
	m.Redelivered.WithLabelValues(lane).Set(float64(info.NumRedelivered))
}

// OldestUnackedAge returns how long ago the oldest message a consumer has
// delivered and not yet acknowledged was published (0 when it has none).
// The consumer's info does not say; the stream does: every message up to
// the consumer's ack floor is acknowledged, and an unfiltered consumer
// delivers in stream order, so the first message stored after the floor
// is the oldest unacknowledged one (waiting out a NakWithDelay, in a
// handler, or with a dead worker until AckWait). It costs two requests
// (stream info and a direct get), and none when nothing is ack pending.
func OldestUnackedAge(ctx context.Context, js jetstream.JetStream, info *jetstream.ConsumerInfo, now time.Time) (time.Duration, error) {
	if info.NumAckPending == 0 {
		return 0, nil
	}
	s, err := js.Stream(ctx, info.Stream)
	if err != nil {
		return 0, err
	}
	msg, err := s.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(">"))
	if err != nil {
		return 0, err
	}
	return max(now.Sub(msg.Time), 0), nil
}

// InstrumentProvider wraps p so every call is counted and timed. The
// wrapper implements Versioner and TagUpdater exactly when p does, so
// callers discovering capabilities by type assertion see the truth.
func (m *Metrics) InstrumentProvider(name string, p providers.Provider) providers.Provider {
	base := &instrumented{Provider: p, name: name, m: m}
	_, tags := p.(providers.TagUpdater)
	_, vers := p.(providers.Versioner)
	switch {
	case tags && vers:
		return &struct {
			*instrumented
			withTags
			withVersions
		}{base, withTags{base}, withVersions{base}}
	case tags:
		return &struct {
			*instrumented
			withTags
		}{base, withTags{base}}
	case vers:
		return &struct {
			*instrumented
			withVersions
		}{base, withVersions{base}}
	}
	return base
}

type instrumented struct {
	providers.Provider
	name string
	m    *Metrics
}

func (i *instrumented) observe(op string, start time.Time, err error) {
	i.m.ProviderLatency.WithLabelValues(i.name, op).Observe(time.Since(start).Seconds())
	status := "ok"
	switch {
	case err == nil:
	case errors.Is(err, providers.ErrNotFound):
		status = "not_found"
	default:
		var pe *providers.Error
		if errors.As(err, &pe) {
			status = pe.Kind.String()
		} else if providers.IsRetryable(err) {
			status = "retryable"
		} else {
			status = "permanent"
		}
	}
	i.m.ProviderCalls.WithLabelValues(i.name, op, status).Inc()
}

func (i *instrumented) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	start := time.Now()
	r, err := i.Provider.Put(ctx, req)
	i.observe("put", start, err)
	return r, err
}

func (i *instrumented) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	start := time.Now()
	s, err := i.Provider.Get(ctx, name, version)
	i.observe("get", start, err)
	return s, err
}

func (i *instrumented) Delete(ctx context.Context, req providers.DeleteRequest) error {
	start := time.Now()
	err := i.Provider.Delete(ctx, req)
	i.observe("delete", start, err)
	return err
}

// Unwrap returns the wrapped provider.
func (i *instrumented) Unwrap() providers.Provider { return i.Provider }

// AsLister returns a Lister that counts listing as op "list", when the
// wrapped provider can list (providers.AsLister asks it).
func (i *instrumented) AsLister() (providers.Lister, bool) {
	l, ok := providers.AsLister(i.Provider)
	if !ok {
		return nil, false
	}
	return instrumentedLister{i: i, l: l}, true
}

type instrumentedLister struct {
	i *instrumented
	l providers.Lister
}

func (w instrumentedLister) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	start := time.Now()
	err := w.l.List(ctx, req, fn)
	w.i.observe("list", start, err)
	return err
}

// Close passes through.
func (i *instrumented) Close() error {
	if c, ok := i.Provider.(providers.Closer); ok {
		return c.Close()
	}
	return nil
}

type withTags struct{ i *instrumented }

func (w withTags) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	start := time.Now()
	err := w.i.Provider.(providers.TagUpdater).UpdateTags(ctx, req)
	w.i.observe("update_tags", start, err)
	return err
}

type withVersions struct{ i *instrumented }

func (w withVersions) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	start := time.Now()
	v, err := w.i.Provider.(providers.Versioner).Versions(ctx, name)
	w.i.observe("versions", start, err)
	return v, err
}

type handledMetrics struct {
	events   prometheus.Counter
	duration prometheus.Observer
}

// eventHandled counts one event of type label typ that ended with
// outcome, and its handling time.
func (m *Metrics) eventHandled(typ, outcome string, d time.Duration) {
	k := [2]string{typ, outcome}
	m.handledMu.RLock()
	h, ok := m.handled[k]
	m.handledMu.RUnlock()
	if !ok {
		h = handledMetrics{events: m.Events.WithLabelValues(typ, outcome), duration: m.EventDuration.WithLabelValues(typ)}
		m.handledMu.Lock()
		if m.handled == nil {
			m.handled = map[[2]string]handledMetrics{}
		}
		m.handled[k] = h
		m.handledMu.Unlock()
	}
	h.events.Inc()
	h.duration.Observe(d.Seconds())
}
