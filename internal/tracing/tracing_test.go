package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyrelay/keyrelay/internal/tracing"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestTraceConfigFromEnv(t *testing.T) {
	tests := map[string]struct {
		env      map[string]string
		exporter string
		endpoint string
		err      string
	}{
		"unset: off":         {env: nil, exporter: "none"},
		"none":               {env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, exporter: "none"},
		"sdk disabled":       {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, exporter: "none"},
		"otlp default":       {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, exporter: "otlp", endpoint: "https://localhost:4318/v1/traces"},
		"otlp base endpoint": {env: map[string]string{"OTEL_TRACES_EXPORTER": "OTLP", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, exporter: "otlp", endpoint: "http://collector:4318/v1/traces"},
		"credentials dropped": {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp",
			"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:hunter2@collector.example:4318/base?token=hunter3"},
			exporter: "otlp", endpoint: "https://collector.example:4318/base/v1/traces"},
		"per-signal endpoint as is": {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:1",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/custom"}, exporter: "otlp", endpoint: "http://collector:4318/custom"},
		"insecure": {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318",
			"OTEL_EXPORTER_OTLP_INSECURE": "true"}, exporter: "otlp", endpoint: "http://c:4318/v1/traces"},
		"http/protobuf": {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
			exporter: "otlp", endpoint: "https://localhost:4318/v1/traces"},
		"unknown exporter": {env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: "OTEL_TRACES_EXPORTER"},
		"grpc refused":     {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		"per-signal protocol wins": {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, exporter: "otlp", endpoint: "https://localhost:4318/v1/traces"},
		"not a URL": {env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:hunter2@x"}, err: "OTEL_EXPORTER_OTLP_ENDPOINT"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := tracing.FromEnv(envOf(tc.env))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one naming %s", err, tc.err)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error quotes a credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Exporter != tc.exporter || c.Endpoint != tc.endpoint {
				t.Fatalf("got %+v, want exporter %s endpoint %q", c, tc.exporter, tc.endpoint)
			}
		})
	}
}

// TestTraceOffByDefault: without OTEL_TRACES_EXPORTER the provider records
// nothing and says "off".
func TestTraceOffByDefault(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	p, err := tracing.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p.Enabled() || p.String() != "off" {
		t.Fatalf("enabled %v, %q", p.Enabled(), p.String())
	}
	_, span := p.TracerProvider().Tracer("x").Start(context.Background(), "s")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Fatal("a span recorded while tracing is off")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestTraceShutdownFlushes: with OTLP on, spans wait in the batcher (its
// delay is an hour here) and Shutdown posts them to the collector, with
// service.name keyrelay, before it returns. The description names the
// endpoint without its credentials.
func TestTraceShutdownFlushes(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if r.URL.Path == "/v1/traces" {
			bodies = append(bodies, b)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	ep := strings.Replace(srv.URL, "http://", "http://u:secret-pw@", 1)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ep)
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000")
	t.Setenv("OTEL_SERVICE_NAME", "")
	p, err := tracing.New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled() || p.String() != "otlp http/protobuf to "+srv.URL+"/v1/traces" || strings.Contains(p.String(), "secret-pw") {
		t.Fatalf("enabled %v, %q", p.Enabled(), p.String())
	}
	_, span := tracing.Tracer(p.TracerProvider()).Start(context.Background(), "flush-me")
	span.End()
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	early := len(bodies)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d exports before Shutdown; the batch delay should hold them", early)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 || !strings.Contains(string(bodies[0]), "flush-me") || !strings.Contains(string(bodies[0]), "keyrelay") {
		t.Fatalf("%d exports after Shutdown, want one holding the span and service name", len(bodies))
	}
}

// TestTraceHeaderCarrier: trace context survives a round trip through NATS
// headers; other spellings of traceparent are read; a message without it
// gives no parent.
func TestTraceHeaderCarrier(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	h := nats.Header{}
	h.Set("Nats-Msg-Id", "e1")
	tracing.Inject(trace.ContextWithSpanContext(context.Background(), sc), h)
	if got := h.Get("traceparent"); got != "00-01020300000000000000000000000000-0405000000000000-01" {
		t.Fatalf("traceparent %q", got)
	}
	got := trace.SpanContextFromContext(tracing.Extract(context.Background(), h))
	if got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsRemote() || !got.IsSampled() {
		t.Fatalf("extracted %+v", got)
	}
	other := nats.Header{"Traceparent": h["traceparent"]}
	if got := trace.SpanContextFromContext(tracing.Extract(context.Background(), other)); got.TraceID() != sc.TraceID() {
		t.Fatal("Traceparent not read")
	}
	tracing.HeaderCarrier(other).Set("traceparent", "x")
	if len(other) != 1 || other["traceparent"][0] != "x" {
		t.Fatalf("Set kept another spelling: %v", other)
	}
	for _, hh := range []nats.Header{nil, {"Nats-Msg-Id": {"e1"}}, {"traceparent": {"garbage"}}} {
		if trace.SpanContextFromContext(tracing.Extract(context.Background(), hh)).IsValid() {
			t.Fatalf("a parent from %v", hh)
		}
	}
	// Nothing is injected without a span.
	empty := nats.Header{}
	tracing.Inject(context.Background(), empty)
	if len(empty) != 0 {
		t.Fatalf("injected %v", empty)
	}
}
