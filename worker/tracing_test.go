package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/tracing"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/providertest"
	"github.com/keyrelay/keyrelay/worker"
)

// traced is a tracer provider recording every span in memory.
type traced struct {
	tp  *sdktrace.TracerProvider
	rec *tracetest.SpanRecorder
}

func newTraced(t *testing.T) *traced {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &traced{tp: tp, rec: rec}
}

// ended returns the ended spans named name whose attribute k is v (any
// when k is "").
func (tr *traced) ended(name string, k attribute.Key, v string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tr.rec.Ended() {
		if s.Name() == name && (k == "" || spanAttrs(s)[k].Emit() == v) {
			out = append(out, s)
		}
	}
	return out
}

// waitEnded waits until n spans match (see ended).
func (tr *traced) waitEnded(t *testing.T, n int, name string, k attribute.Key, v string) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := tr.ended(name, k, v); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s spans with %s=%s, want %d", len(tr.ended(name, k, v)), name, k, v, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, a := range s.Attributes() {
		m[a.Key] = a.Value
	}
	return m
}

// startTracedWorker is startWorker with the worker's spans made by tp.
func (b *bundle) startTracedWorker(tp trace.TracerProvider) {
	b.t.Helper()
	wc := worker.Config{Concurrency: 8, AckWait: b.topo.AckWait, MaxDeliver: b.topo.MaxDeliver, CallTimeout: time.Second,
		ClaimLease: 3 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, ShutdownGrace: 2 * time.Second}
	w, err := worker.New(b.ctx, wc, worker.Deps{JS: b.js, Settings: b.cfg, Registry: b.reg, Opener: b.kr, Logger: b.log, Metrics: b.metrics,
		TracerProvider: tp})
	if err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for !w.Ready() {
		select {
		case err := <-done:
			b.t.Fatalf("worker stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	var once sync.Once
	b.t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				b.t.Errorf("worker: %v", err)
			}
		})
	})
}

// confirmationTrace returns the trace context the confirmation of eventID
// carries in its headers.
func (b *bundle) confirmationTrace(eventID string) trace.SpanContext {
	b.t.Helper()
	for _, m := range b.rawMessages(worker.ConfirmationsStream) {
		if strings.HasSuffix(m.Subject, "."+eventID) {
			return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), tracing.HeaderCarrier(m.Header)))
		}
	}
	b.t.Fatalf("no confirmation for %s", eventID)
	return trace.SpanContext{}
}

// TestTraceClientToConfirmation: one trace from the gateway's span through
// client.Publisher, the worker's delivery span and its provider call, to
// the confirmation's traceparent; each span with its attributes.
func TestTraceClientToConfirmation(t *testing.T) {
	b := setup(t, setupOptions{})
	tr := newTraced(t)
	b.startTracedWorker(tr.tp)
	pub := client.NewPublisher(b.js, client.WithTracerProvider(tr.tp))

	ctx, root := tr.tp.Tracer("gateway").Start(b.ctx, "gateway.create_key")
	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-traced")
	seq, err := pub.Publish(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	root.End()
	if c := byEventID(b.confirmations(1, 20*time.Second))[ev.ID]; c == nil || c.Status != events.StatusStored {
		t.Fatalf("confirmation %+v, want stored", c)
	}
	traceID := root.SpanContext().TraceID()

	pubSpan := tr.waitEnded(t, 1, tracing.SpanPublish, tracing.EventID, ev.ID)[0]
	evSpan := tr.waitEnded(t, 1, tracing.SpanEvent, tracing.EventID, ev.ID)[0]
	calls := tr.waitEnded(t, 1, tracing.SpanProviderCall, "", "")
	if pubSpan.Parent().SpanID() != root.SpanContext().SpanID() || pubSpan.SpanKind() != trace.SpanKindProducer {
		t.Errorf("publish span: parent %s kind %s; want the gateway's span, producer", pubSpan.Parent().SpanID(), pubSpan.SpanKind())
	}
	if evSpan.Parent().SpanID() != pubSpan.SpanContext().SpanID() || !evSpan.Parent().IsRemote() || evSpan.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("event span: parent %s (remote %v) kind %s; want the publish span, remote, consumer", evSpan.Parent().SpanID(), evSpan.Parent().IsRemote(), evSpan.SpanKind())
	}
	if len(calls) != 1 || calls[0].Parent().SpanID() != evSpan.SpanContext().SpanID() {
		t.Fatalf("%d provider call spans; want one, child of the event span", len(calls))
	}
	for _, s := range []sdktrace.ReadOnlySpan{pubSpan, evSpan, calls[0]} {
		if s.SpanContext().TraceID() != traceID {
			t.Errorf("%s is in trace %s, want %s", s.Name(), s.SpanContext().TraceID(), traceID)
		}
	}
	if sc := b.confirmationTrace(ev.ID); sc.TraceID() != traceID || sc.SpanID() != evSpan.SpanContext().SpanID() {
		t.Errorf("confirmation traceparent %s/%s, want %s/%s (the event span)", sc.TraceID(), sc.SpanID(), traceID, evSpan.SpanContext().SpanID())
	}

	want := map[string]map[attribute.Key]string{
		"publish": {tracing.EventID: ev.ID, tracing.EventType: "key.created", tracing.TeamID: "team-a", tracing.KeyID: "key-1",
			tracing.Lane: "interactive", tracing.StreamSeq: fmt.Sprint(seq), tracing.MessagingSystem: "nats"},
		"event": {tracing.EventID: ev.ID, tracing.EventType: "key.created", tracing.TeamID: "team-a", tracing.KeyID: "key-1",
			tracing.Backend: "local", tracing.Lane: "interactive", tracing.Status: "stored", tracing.Outcome: "stored",
			tracing.Attempts: "1", tracing.StreamSeq: fmt.Sprint(seq)},
		"call": {tracing.Op: "put", tracing.Backend: "local", tracing.Try: "1"},
	}
	for which, s := range map[string]sdktrace.ReadOnlySpan{"publish": pubSpan, "event": evSpan, "call": calls[0]} {
		got := spanAttrs(s)
		for k, v := range want[which] {
			if got[k].Emit() != v {
				t.Errorf("%s span: %s = %q, want %q", which, k, got[k].Emit(), v)
			}
		}
	}
	if _, ok := spanAttrs(calls[0])[tracing.ErrorKind]; ok || calls[0].Status().Code == codes.Error {
		t.Errorf("successful call marked failed: %v", calls[0].Status())
	}
}

// flakyOnce fails the first Put of every name ending in /flaky with a
// retryable error.
type flakyOnce struct {
	providers.Provider
	mu   sync.Mutex
	seen map[string]bool
}

func (f *flakyOnce) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	f.mu.Lock()
	first := strings.HasSuffix(req.Name, "/flaky") && !f.seen[req.Name]
	f.seen[req.Name] = true
	f.mu.Unlock()
	if first {
		return providers.PutResult{}, providers.NewError("local", "put", req.Name, providers.Retryable, providers.ErrUnavailable)
	}
	return f.Provider.Put(ctx, req)
}

// TestTraceSentinelNeverLeaks is TestSentinelNeverLeaks for spans: a value
// planted in events that succeed, fail for good, fail once and are
// retried, are refused as plaintext or rejected as read_only appears in no
// span name, attribute, event, link or status of any recorded span, nor in
// a traceparent header; and the failures are told by their kind.
func TestTraceSentinelNeverLeaks(t *testing.T) {
	const sentinel = "SENTINEL-7a41d2-do-not-trace"
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		faulty := providertest.NewFaulty(p, providertest.FaultConfig{Permanent: func(n string) bool { return strings.HasSuffix(n, "/perm") }})
		return &flakyOnce{Provider: faulty, seen: map[string]bool{}}
	}}})
	tr := newTraced(t)
	b.startTracedWorker(tr.tp)
	b.pub = client.NewPublisher(b.js, client.WithTracerProvider(tr.tp))

	ro := events.AccessReadOnly
	meta := events.KeyData{Metadata: map[string]string{"note": sentinel}}
	withMeta := func(key string) *events.Event {
		ev, err := events.NewKeyEvent(b.ctx, b.kr, events.KeyCreated, "team-a", key, 1, []byte(sentinel), meta)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	ok, perm, flaky := withMeta("key-1"), withMeta("perm"), withMeta("flaky")
	plain := &events.Event{SpecVersion: events.SpecVersion, ID: "plain-1", Type: events.KeyCreated, Time: time.Now().UTC(),
		TeamID: "team-a", KeyID: "key-plain", Generation: 1}
	plain.Data = []byte(`{"value":{"alg":"plaintext","ct":"` + b64(sentinel) + `"}}`)
	settingsRO := b.settingsEvent("team-ro", 1, &events.TeamSettings{AccessMode: ro})
	roKey := b.keyEvent(events.KeyCreated, "team-ro", "key-1", 1, sentinel)
	b.publish(ok, perm, flaky, plain, settingsRO, roKey)
	bc := byEventID(b.confirmations(6, 20*time.Second))
	if bc[ok.ID].Status != events.StatusStored || bc[perm.ID].Status != events.StatusFailed || bc[flaky.ID].Status != events.StatusStored ||
		bc[plain.ID].Status != events.StatusRejected || bc[roKey.ID].Status != events.StatusRejected {
		t.Fatalf("unexpected outcomes: %+v %+v %+v %+v %+v", bc[ok.ID], bc[perm.ID], bc[flaky.ID], bc[plain.ID], bc[roKey.ID])
	}
	if b.value("local", name("team-a", "key-1")) != sentinel {
		t.Fatal("the value itself was not stored")
	}
	for _, ev := range []*events.Event{ok, perm, flaky, plain, settingsRO, roKey} {
		tr.waitEnded(t, 1, tracing.SpanEvent, tracing.EventID, ev.ID)
	}

	// The failures, by kind: the permanent one, the retried one.
	kinds := map[string]int{}
	for _, s := range tr.ended(tracing.SpanProviderCall, "", "") {
		if k, ok := spanAttrs(s)[tracing.ErrorKind]; ok {
			kinds[k.Emit()]++
			if s.Status().Code != codes.Error {
				t.Errorf("call span with error kind %s has status %v", k.Emit(), s.Status())
			}
		}
	}
	if kinds["permanent"] != 1 || kinds["retryable"] != 1 {
		t.Errorf("error kinds %v, want one permanent and one retryable", kinds)
	}
	if s := tr.ended(tracing.SpanEvent, tracing.EventID, perm.ID)[0]; s.Status().Code != codes.Error || spanAttrs(s)[tracing.Status].Emit() != "failed" {
		t.Errorf("failed event's span: status %v, attributes %v", s.Status(), s.Attributes())
	}

	check := func(where, s string) {
		if strings.Contains(s, sentinel) || strings.Contains(s, b64(sentinel)) {
			t.Errorf("sentinel value found in %s", where)
		}
	}
	spans := tr.rec.Ended()
	attrs := 0
	for _, s := range spans {
		where := "span " + s.Name()
		check(where+" name", s.Name())
		check(where+" status", s.Status().Description)
		for _, a := range s.Attributes() {
			attrs++
			check(where+" attribute "+string(a.Key), string(a.Key)+"="+a.Value.Emit())
		}
		for _, e := range s.Events() {
			check(where+" event", e.Name+fmt.Sprint(e.Attributes))
		}
		for _, l := range s.Links() {
			check(where+" link", fmt.Sprint(l.Attributes))
		}
		check(where+" resource", fmt.Sprint(s.Resource().Attributes()))
	}
	for _, m := range b.rawMessages(worker.ConfirmationsStream) {
		check("confirmation headers", fmt.Sprint(m.Header))
	}
	if len(spans) < 12 || attrs < 60 {
		t.Fatalf("only %d spans with %d attributes recorded: the check above would prove little", len(spans), attrs)
	}
}

// TestTraceWithoutProvider: a worker that records nothing (the no-op
// provider serve installs when tracing is off, or the process-wide default)
// still passes the publisher's trace context on to the confirmation, so a
// gateway's trace is not cut by it.
func TestTraceWithoutProvider(t *testing.T) {
	for name, tp := range map[string]trace.TracerProvider{"noop": noop.NewTracerProvider(), "global default": nil} {
		t.Run(name, func(t *testing.T) {
			b := setup(t, setupOptions{})
			b.startTracedWorker(tp)
			tr := newTraced(t)
			pub := client.NewPublisher(b.js, client.WithTracerProvider(tr.tp))
			ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-x")
			if _, err := pub.Publish(b.ctx, ev); err != nil {
				t.Fatal(err)
			}
			b.confirmations(1, 20*time.Second)
			ps := tr.waitEnded(t, 1, tracing.SpanPublish, tracing.EventID, ev.ID)[0]
			if sc := b.confirmationTrace(ev.ID); sc.TraceID() != ps.SpanContext().TraceID() || sc.SpanID() != ps.SpanContext().SpanID() {
				t.Errorf("confirmation trace %s/%s, want the publisher's %s/%s", sc.TraceID(), sc.SpanID(), ps.SpanContext().TraceID(), ps.SpanContext().SpanID())
			}
			if n := len(tr.rec.Ended()); n != 1 {
				t.Errorf("%d spans recorded, want the publisher's only", n)
			}
		})
	}
}
