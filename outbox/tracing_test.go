package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/internal/tracing"
	"github.com/keyrelay/keyrelay/outbox"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// TestTraceOutboxToConfirmation: one trace per outbox row, from the
// relay's span through the worker's delivery span and its provider call to
// the traceparent of the event's confirmation. The relay's span continues
// the trace of the transaction that enqueued the row when the row stored
// it (Enqueue under a span), and is a root otherwise, also when the stored
// trace context is garbage or oversized (the row is published all the
// same). The value sealed in the row appears in no span.
func TestTraceOutboxToConfirmation(t *testing.T) {
	const sentinel = "SENTINEL-0b5e93-outbox-do-not-trace"
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	// A worker on the local provider, its spans recorded.
	kr, err := events.NewKeyring("t1", map[string][]byte{"t1": bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := providers.NewRegistry()
	reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return store, nil })
	w, err := worker.New(ctx, worker.Config{Concurrency: 4, AckWait: 30 * time.Second, MaxDeliver: 5, CallTimeout: time.Second,
		ClaimLease: 3 * time.Second, ShutdownGrace: 2 * time.Second},
		worker.Deps{JS: js, Settings: settings.Default(), Registry: reg, Opener: kr, Logger: zap.NewNop(), TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(ctx)
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { stopWorker(); <-wdone }()

	// The relay, its spans recorded.
	r, err := outbox.NewRelay(testConfig(dsnFor(db)), js, zap.NewNop(), nil, outbox.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRelay := context.WithCancel(ctx)
	rdone := make(chan struct{})
	go func() { defer close(rdone); _ = r.Run(rctx) }()
	defer func() { stopRelay(); <-rdone }()

	// A key created with a sealed value (its generation drawn first), and
	// another deleted (its generation filled in by the relay).
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := outbox.NextGeneration(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	created, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "team-a", "key-1", gen, []byte(sentinel), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	// Enqueued by a gateway that traces: the row records its span.
	gwCtx, gwSpan := tp.Tracer("gateway").Start(ctx, "gateway.create_key")
	if err := outbox.Enqueue(gwCtx, tx, created); err != nil {
		t.Fatal(err)
	}
	gwSpan.End()
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	deleted := &events.Event{SpecVersion: events.SpecVersion, ID: "del-" + created.ID, Type: events.KeyDeleted, Time: time.Now().UTC(),
		TeamID: "team-a", KeyID: "key-2"}
	enqueue(t, conn, deleted)
	// Rows whose stored trace context is not one (garbage; a valid
	// traceparent made oversized): ignored, and the rows published. A
	// valid traceparent with an oversized tracestate keeps its parent.
	remote := "00-" + strings.Repeat("a", 32) + "-" + strings.Repeat("b", 16) + "-01"
	var hostile []*events.Event
	for i, tc := range [][2]string{
		{"not-a-traceparent", "x=y"},
		{remote + strings.Repeat("-00", 200), ""},
		{remote, strings.Repeat("k=v,", 200)},
	} {
		ev := &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("bad-trace-%d-%s", i, created.ID), Type: events.KeyDeleted,
			Time: time.Now().UTC(), TeamID: "team-a", KeyID: fmt.Sprintf("key-%d", 3+i)}
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO "+outbox.DefaultSchema+".keyrelay_outbox (payload, traceparent, tracestate) VALUES ($1::jsonb, $2, $3)",
			string(b), tc[0], tc[1]); err != nil {
			t.Fatal(err)
		}
		hostile = append(hostile, ev)
	}

	// All confirmed.
	confs := map[string]*events.Confirmation{}
	headers := map[string]trace.SpanContext{}
	testenv.Eventually(t, 30*time.Second, "five confirmations", func() bool {
		s, err := js.Stream(ctx, worker.ConfirmationsStream)
		if err != nil {
			return false
		}
		for seq := uint64(1); seq <= 5; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				return false
			}
			var c events.Confirmation
			if err := json.Unmarshal(m.Data, &c); err != nil {
				t.Fatal(err)
			}
			confs[c.EventID] = &c
			headers[c.EventID] = trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), tracing.HeaderCarrier(m.Header)))
		}
		return true
	})
	if c := confs[created.ID]; c == nil || c.Status != events.StatusStored {
		t.Fatalf("created: %+v", c)
	}
	if c := confs[deleted.ID]; c == nil || c.Status != events.StatusDeleted {
		t.Fatalf("deleted: %+v", c)
	}

	find := func(name string, parent trace.SpanID, k attribute.Key, v string) sdktrace.ReadOnlySpan {
		t.Helper()
		var found sdktrace.ReadOnlySpan
		testenv.Eventually(t, 10*time.Second, name+" span", func() bool {
			for _, s := range rec.Ended() {
				if s.Name() != name || (parent.IsValid() && s.Parent().SpanID() != parent) {
					continue
				}
				for _, a := range s.Attributes() {
					if k == "" || a.Key == k && a.Value.Emit() == v {
						found = s
						return true
					}
				}
			}
			return false
		})
		return found
	}
	traces := map[trace.TraceID]bool{}
	for _, c := range []struct {
		ev *events.Event
		op string
	}{{created, "put"}, {deleted, "delete"}, {hostile[0], "delete"}, {hostile[1], "delete"}, {hostile[2], "delete"}} {
		relay := find(tracing.SpanOutboxRelay, trace.SpanID{}, tracing.EventID, c.ev.ID)
		if relay.SpanKind() != trace.SpanKindProducer {
			t.Errorf("%s: relay span kind %s, want producer", c.ev.ID, relay.SpanKind())
		}
		if c.ev == created {
			if p := relay.Parent(); p.SpanID() != gwSpan.SpanContext().SpanID() || p.TraceID() != gwSpan.SpanContext().TraceID() || !p.IsRemote() {
				t.Errorf("%s: relay span's parent %v, want the enqueuing transaction's span %v", c.ev.ID, p, gwSpan.SpanContext())
			}
		} else if c.ev == hostile[2] {
			if p := relay.Parent(); p.SpanID().String() != strings.Repeat("b", 16) || !p.IsRemote() || p.TraceState().Len() != 0 {
				t.Errorf("%s: relay span's parent %v, want the stored traceparent without its oversized tracestate", c.ev.ID, p)
			}
		} else if relay.Parent().IsValid() {
			t.Errorf("%s: relay span has parent %v; want a root (no valid trace context stored)", c.ev.ID, relay.Parent().SpanID())
		}
		tid := relay.SpanContext().TraceID()
		traces[tid] = true
		got := map[attribute.Key]string{}
		for _, a := range relay.Attributes() {
			got[a.Key] = a.Value.Emit()
		}
		if got[tracing.OutboxSeq] == "" || got[tracing.StreamSeq] != fmt.Sprint(confs[c.ev.ID].StreamSeq) ||
			got[tracing.EventType] != string(c.ev.Type) || got[tracing.TeamID] != "team-a" || got[tracing.KeyID] != c.ev.KeyID {
			t.Errorf("%s: relay span attributes %v", c.ev.Type, got)
		}
		ev := find(tracing.SpanEvent, relay.SpanContext().SpanID(), tracing.EventID, c.ev.ID)
		call := find(tracing.SpanProviderCall, ev.SpanContext().SpanID(), tracing.Op, c.op)
		for _, s := range []sdktrace.ReadOnlySpan{ev, call} {
			if s.SpanContext().TraceID() != tid {
				t.Errorf("%s: %s in trace %s, want the relay's %s", c.ev.Type, s.Name(), s.SpanContext().TraceID(), tid)
			}
		}
		if h := headers[c.ev.ID]; h.TraceID() != tid || h.SpanID() != ev.SpanContext().SpanID() {
			t.Errorf("%s: confirmation traceparent %s/%s, want %s/%s", c.ev.Type, h.TraceID(), h.SpanID(), tid, ev.SpanContext().SpanID())
		}
	}
	if len(traces) != 5 {
		t.Errorf("%d traces for five rows, want one each", len(traces))
	}
	for _, s := range rec.Ended() {
		all := s.Name() + s.Status().Description + fmt.Sprint(s.Attributes()) + fmt.Sprint(s.Events()) + fmt.Sprint(s.Links())
		if strings.Contains(all, sentinel) {
			t.Errorf("sentinel value found in span %s", s.Name())
		}
	}
}

// TestRelayBeforeTraceMigration: a relay on a schema that predates the
// trace-context columns (migration 2 not run yet) still publishes every
// row; Enqueue under a span there fails with an error that names the fix,
// and works once the migration has run.
func TestRelayBeforeTraceMigration(t *testing.T) {
	db := migratedDB(t)
	conn := connect(t, dsnFor(db))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := conn.Exec(ctx, `ALTER TABLE `+outbox.DefaultSchema+`.keyrelay_outbox DROP COLUMN traceparent, DROP COLUMN tracestate;
		DELETE FROM `+outbox.DefaultSchema+`.keyrelay_schema_migrations WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	_, js := startNATS(t)
	startRelay(t, testConfig(dsnFor(db)), js, nil)

	first := updated("team-m", "key-m", 1, 0)
	enqueue(t, conn, first)
	testenv.Eventually(t, 20*time.Second, "the row published", func() bool { return count(t, conn, "state = 'sent'") == 1 })

	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	spanCtx, span := tp.Tracer("gateway").Start(ctx, "gateway.update_key")
	defer span.End()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = outbox.Enqueue(spanCtx, tx, updated("team-m", "key-m", 2, 1))
	_ = tx.Rollback(ctx)
	if err == nil || !strings.Contains(err.Error(), "keyrelay outbox migrate") {
		t.Fatalf("Enqueue under a span before migration 2: %v, want an error naming `keyrelay outbox migrate`", err)
	}

	if applied, err := outbox.Migrate(ctx, conn, outbox.DefaultSchema); err != nil || len(applied) != 1 || applied[0] != 2 {
		t.Fatalf("migrate: applied %v, %v; want [2]", applied, err)
	}
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(spanCtx, tx, updated("team-m", "key-m", 3, 2)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "both rows published", func() bool { return count(t, conn, "state = 'sent'") == 2 })
	if got := readStream(t, js); len(got) != 2 || got[0].ev.ID != first.ID {
		t.Fatalf("stream holds %d events", len(got))
	}
}
