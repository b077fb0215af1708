package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/internal/tracing"
)

// TestTracePublishInjects: Publish, PublishAsync and PublishAsyncContext
// each make one producer span and carry its trace context in the stored
// message's headers; Publish and PublishAsyncContext continue the caller's
// trace, PublishAsync starts one.
func TestTracePublishInjects(t *testing.T) {
	srv := testenv.StartNATS(t)
	_, js := testenv.ConnectJetStream(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: client.EventsStream,
		Subjects: []string{events.EventsPrefix + ".>", events.SettingsPrefix + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	pub := client.NewPublisher(js, client.WithTracerProvider(tp))
	pctx, parent := tp.Tracer("gateway").Start(ctx, "gateway.request")
	defer parent.End()

	ev := func(key string) *events.Event {
		return &events.Event{SpecVersion: events.SpecVersion, ID: "ev-" + key, Type: events.KeyDeleted, Time: time.Now().UTC(),
			TeamID: "team-a", KeyID: key, Generation: 1}
	}
	if _, err := pub.Publish(pctx, ev("sync")); err != nil {
		t.Fatal(err)
	}
	for key, publish := range map[string]func(*events.Event) (jetstream.PubAckFuture, error){
		"async":     pub.PublishAsync,
		"async-ctx": func(e *events.Event) (jetstream.PubAckFuture, error) { return pub.PublishAsyncContext(pctx, e) },
	} {
		f, err := publish(ev(key))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}

	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if a.Key == tracing.EventID && s.Name() == tracing.SpanPublish {
				spans[a.Value.AsString()] = s
			}
		}
	}
	for _, key := range []string{"sync", "async", "async-ctx"} {
		s := spans["ev-"+key]
		if s == nil {
			t.Fatalf("no publish span for %s", key)
		}
		if s.SpanKind() != trace.SpanKindProducer {
			t.Errorf("%s: kind %s", key, s.SpanKind())
		}
		continues := s.Parent().SpanID() == parent.SpanContext().SpanID()
		if want := key != "async"; continues != want {
			t.Errorf("%s: child of the caller's span: %v, want %v", key, continues, want)
		}
		m, err := st.GetLastMsgForSubject(ctx, ev(key).Subject())
		if err != nil {
			t.Fatal(err)
		}
		got := trace.SpanContextFromContext(tracing.Extract(context.Background(), m.Header))
		if got.SpanID() != s.SpanContext().SpanID() || got.TraceID() != s.SpanContext().TraceID() {
			t.Errorf("%s: message carries %s/%s, want its publish span %s/%s", key, got.TraceID(), got.SpanID(),
				s.SpanContext().TraceID(), s.SpanContext().SpanID())
		}
	}
}
