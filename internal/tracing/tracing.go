package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ServiceName is the service.name of keyrelay's spans unless
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) is set.
const ServiceName = "keyrelay"

// InstrumentationName names the tracer of keyrelay's own instrumentation.
const InstrumentationName = "github.com/keyrelay/keyrelay"

// Exporters OTEL_TRACES_EXPORTER may name.
const (
	// ExporterNone: tracing off (also the default when the variable is unset).
	ExporterNone = "none"
	// ExporterOTLP: OTLP over HTTP with protobuf.
	ExporterOTLP = "otlp"
)

// DefaultEndpoint is where OTLP/HTTP spans go when no endpoint variable is
// set (the exporter's default).
const DefaultEndpoint = "https://localhost:4318/v1/traces"

// Config is what the environment asks for.
type Config struct {
	// Exporter is ExporterNone or ExporterOTLP.
	Exporter string
	// Endpoint is the URL spans are posted to, without user information or
	// query (for logs; the exporter reads the variables itself).
	Endpoint string
}

// FromEnv reads the OTEL_* variables that decide whether and where keyrelay
// exports spans. It reports the first variable it cannot honour.
func FromEnv(getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Config{Exporter: ExporterNone}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return c, nil
	}
	exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	switch exp {
	case "", ExporterNone:
		return c, nil
	case ExporterOTLP:
	default:
		return c, fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q: want %q or %q", exp, ExporterOTLP, ExporterNone)
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		p := strings.TrimSpace(getenv(v))
		if p == "" {
			continue
		}
		if p != "http/protobuf" {
			return c, fmt.Errorf("tracing: %s=%q: this build exports OTLP over HTTP only; want http/protobuf (port 4318)", v, p)
		}
		break // the per-signal variable wins
	}
	ep, err := endpoint(getenv)
	if err != nil {
		return c, err
	}
	c.Exporter, c.Endpoint = ExporterOTLP, ep
	return c, nil
}

// endpoint works out the URL the OTLP/HTTP exporter posts to, the way the
// exporter does, for the log line.
func endpoint(getenv func(string) string) (string, error) {
	raw, name, perSignal := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", true
	if raw == "" {
		raw, name, perSignal = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")), "OTEL_EXPORTER_OTLP_ENDPOINT", false
	}
	var u *url.URL
	if raw == "" {
		u, _ = url.Parse(DefaultEndpoint)
	} else {
		var err error
		if u, err = url.Parse(raw); err != nil || u.Host == "" {
			// url's errors quote the input, which may hold a password.
			return "", fmt.Errorf("tracing: %s is not a URL with a host", name)
		}
		switch {
		case perSignal && u.Path == "":
			u.Path = "/"
		case !perSignal:
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		}
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"} {
		switch strings.ToLower(strings.TrimSpace(getenv(v))) {
		case "true":
			u.Scheme = "http"
		case "false":
			u.Scheme = "https"
		}
	}
	if u.Scheme != "http" {
		u.Scheme = "https"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String(), nil
}

// Provider is keyrelay's tracer provider: an SDK provider exporting over
// OTLP, or a no-op one.
type Provider struct {
	tp  trace.TracerProvider
	sdk *sdktrace.TracerProvider // nil when off
	cfg Config
}

// New builds the provider the process environment asks for (see FromEnv
// and the package documentation). It does not install it: see Start.
func New(ctx context.Context) (*Provider, error) {
	cfg, err := FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	if cfg.Exporter == ExporterNone {
		return &Provider{tp: noop.NewTracerProvider(), cfg: cfg}, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return NewWithExporter(ctx, cfg, exp)
}

// NewWithExporter builds an SDK provider batching spans into exp, with
// keyrelay's resource (tests pass an in-memory exporter).
func NewWithExporter(ctx context.Context, cfg Config, exp sdktrace.SpanExporter) (*Provider, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", ServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: later detectors win
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{tp: sdk, sdk: sdk, cfg: cfg}, nil
}

// Start builds the provider (New) and installs it, with the W3C trace
// context propagator, as the process-wide default (otel.SetTracerProvider,
// otel.SetTextMapPropagator). Call Shutdown at exit.
func Start(ctx context.Context) (*Provider, error) {
	p, err := New(ctx)
	if err != nil {
		return nil, err
	}
	otel.SetTracerProvider(p.tp)
	otel.SetTextMapPropagator(Propagator)
	return p, nil
}

// TracerProvider returns the provider to hand to keyrelay's components.
func (p *Provider) TracerProvider() trace.TracerProvider { return p.tp }

// Enabled reports whether spans are recorded and exported.
func (p *Provider) Enabled() bool { return p.sdk != nil }

// Endpoint is where spans are exported ("" when off), without credentials.
func (p *Provider) Endpoint() string { return p.cfg.Endpoint }

// String says whether tracing is on and where it exports, for the startup
// log line: "off", or "otlp http/protobuf to <url>". It never holds
// credentials.
func (p *Provider) String() string {
	if p.sdk == nil {
		return "off"
	}
	return "otlp http/protobuf to " + p.cfg.Endpoint
}

// Shutdown flushes buffered spans and stops the exporter; spans started
// later are dropped. A no-op when tracing is off. Bound it with ctx: an
// unreachable collector otherwise holds it for the exporter's timeout.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.sdk == nil {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// Tracer returns keyrelay's tracer from tp, or from the process-wide
// provider when tp is nil (a no-op one until Start installs another; the
// tracer follows a later Start).
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(InstrumentationName)
}
