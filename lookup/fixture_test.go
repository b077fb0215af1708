package lookup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// Tokens of the fixture's lookup clients.
const (
	tokenA      = "token-team-a-0123456789"
	tokenB      = "token-team-b-0123456789"
	tokenGlobal = "token-gateway-0123456789"
)

// gate wraps the backend: it counts reads, can slow them down and can make
// them fail as an unreachable backend does.
type gate struct {
	providers.Provider
	gets  atomic.Int64
	delay atomic.Int64
	fail  atomic.Bool
	// inflight and maxInflight count concurrent reads.
	inflight, maxInflight atomic.Int64
}

func (g *gate) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	g.gets.Add(1)
	n := g.inflight.Add(1)
	defer g.inflight.Add(-1)
	for {
		m := g.maxInflight.Load()
		if n <= m || g.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	if d := time.Duration(g.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if g.fail.Load() {
		return nil, providers.NewError("local", "get", name, providers.Retryable, fmt.Errorf("%w: connection refused", providers.ErrUnavailable))
	}
	return g.Provider.Get(ctx, name, version)
}

// Unwrap lets providers.AsRetirer (and AsLister) reach the store.
func (g *gate) Unwrap() providers.Provider { return g.Provider }

type syncBuffer = testenv.SyncBuffer

// fixture is a real nats-server with keyrelay's topology, a real worker
// writing to an in-memory local store behind a gate, and the lookup
// service over them, served by httptest and on NATS.
type fixture struct {
	t       *testing.T
	ctx     context.Context
	nats    *testenv.NATS
	nc      *nats.Conn
	js      jetstream.JetStream
	kr      *events.Keyring
	cfg     *settings.Config
	store   *local.Provider
	gate    *gate
	reg     *providers.Registry
	ledger  *worker.Ledger
	pub     *client.Publisher
	svc     *lookup.Service
	server  *lookup.Server
	backend *lookup.Backend
	http    *httptest.Server
	promReg *prometheus.Registry
	metrics *lookup.Metrics
	logs    *syncBuffer
	log     *zap.Logger
	gen     atomic.Uint64
}

type fixtureOptions struct {
	cache  lookup.Config
	mutate func(*settings.Config)
	// natsConf, when set, starts nats-server with this configuration text
	// and connects as user "keyrelay" / "keyrelay-pass".
	natsConf string
	// noWorker leaves events unhandled.
	noWorker bool
	// noClients configures no lookup client (keyrelay.lookup.clients
	// empty); otherwise team-a, team-b and a global client are configured.
	noClients bool
	// natsOpts are the NATS service's options.
	natsOpts lookup.NATSOptions
}

func newFixture(t *testing.T, o fixtureOptions) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &fixture{t: t, ctx: ctx}
	var opts []nats.Option
	if o.natsConf != "" {
		f.nats = testenv.StartNATSConfig(t, o.natsConf)
		opts = append(opts, nats.UserInfo("keyrelay", "keyrelay-pass"))
	} else {
		f.nats = testenv.StartNATS(t)
	}
	nc, err := nats.Connect(f.nats.URL, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	f.nc = nc
	f.js, _ = jetstream.New(nc)
	topo := worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute, AckWait: 5 * time.Second, MaxDeliver: 4, MaxAckPending: 256}
	if err := worker.EnsureTopology(ctx, f.js, topo); err != nil {
		t.Fatal(err)
	}
	f.kr, err = events.NewKeyring("t1", map[string][]byte{"t1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = settings.Default()
	f.cfg.Getenv = func(string) string { return "" }
	if o.mutate != nil {
		o.mutate(f.cfg)
	}
	f.logs = &syncBuffer{}
	f.log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(f.logs), zapcore.DebugLevel))
	f.store, err = local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f.gate = &gate{Provider: f.store}
	f.reg = providers.NewRegistry()
	f.reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return f.gate, nil })
	f.pub = client.NewPublisher(f.js)
	kv, err := f.js.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	f.ledger = worker.NewLedger(kv)
	var teams *worker.Teams
	if !o.noWorker {
		w, err := worker.New(ctx, worker.Config{Concurrency: 8, AckWait: topo.AckWait, MaxDeliver: topo.MaxDeliver, CallTimeout: time.Second,
			ClaimLease: 3 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond, ShutdownGrace: time.Second},
			worker.Deps{JS: f.js, Settings: f.cfg, Registry: f.reg, Opener: f.kr, Logger: f.log})
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = w.Run(wctx) }()
		t.Cleanup(func() { wcancel(); <-done })
		for !w.Ready() {
			time.Sleep(10 * time.Millisecond)
		}
		teams = w.Teams()
	}
	f.promReg = prometheus.NewRegistry()
	f.metrics = lookup.NewMetrics(f.promReg)
	f.backend = &lookup.Backend{Config: f.cfg, Registry: f.reg, Ledger: f.ledger, Logger: f.log}
	if teams != nil {
		f.backend.Teams = teams
	}
	f.svc, err = lookup.New(o.cache, f.backend, f.metrics, f.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.svc.Close)
	fctx, fcancel := context.WithCancel(ctx)
	t.Cleanup(fcancel)
	go f.svc.Follow(fctx, f.js)
	clients := map[string]settings.LookupClient{
		"a": {Team: "team-a", Token: tokenA}, "b": {Team: "team-b", Token: tokenB}, "gw": {Global: true, Token: tokenGlobal}}
	if o.noClients {
		clients = nil
	}
	auth, err := lookup.NewAuth(clients)
	if err != nil {
		t.Fatal(err)
	}
	f.server = lookup.NewServer(f.svc, auth, f.log)
	f.http = httptest.NewServer(f.server)
	t.Cleanup(f.http.Close)
	ms, err := f.server.ServeNATS(nc, o.natsOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ms.Stop() })
	// The follower must be up before a test relies on invalidation.
	waitFor(t, 5*time.Second, "confirmation follower", func() bool {
		return f.gauge("keyrelay_lookup_invalidation_stream_up") == 1
	})
	return f
}

// gauge reads a gauge (its first sample).
func (f *fixture) gauge(name string) float64 {
	mfs, _ := f.promReg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// counter sums a counter family's samples whose labels include want (for
// a histogram, its observation counts).
func (f *fixture) counter(name string, want map[string]string) float64 {
	mfs, err := f.promReg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			if h := m.GetHistogram(); h != nil {
				sum += float64(h.GetSampleCount()) // a histogram: its observations
				continue
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// write publishes a key event for team/key with value and waits for its
// confirmation; it returns the confirmation.
func (f *fixture) write(typ events.Type, team, key, value string) *events.Confirmation {
	f.t.Helper()
	gen := f.gen.Add(1)
	var ev *events.Event
	var err error
	if typ == events.KeyDeleted {
		ev = &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("ev-%s-%s-%d", team, key, gen), Type: typ, Time: time.Now().UTC(),
			TeamID: team, KeyID: key, Generation: gen}
	} else {
		ev, err = events.NewKeyEvent(f.ctx, f.kr, typ, team, key, gen, []byte(value), events.KeyData{})
		if err != nil {
			f.t.Fatal(err)
		}
	}
	applied := f.applied()
	if _, err := f.pub.Publish(f.ctx, ev); err != nil {
		f.t.Fatal(err)
	}
	c := f.confirmation(team, key, ev.ID)
	// The service follows confirmations on its own consumer, which may lag
	// the stream under load; a test that reads at once would race it (a
	// confirmation applied during a load makes the cache discard that
	// load and call the backend again). Wait until it has been applied,
	// for up to 5 s (a test whose service does not follow the stream just
	// goes on).
	if c.Status == events.StatusStored || c.Status == events.StatusRotated || c.Status == events.StatusDeleted {
		for deadline := time.Now().Add(5 * time.Second); f.applied() <= applied && time.Now().Before(deadline); {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return c
}

// applied is how many key confirmations the service has applied
// (keyrelay_lookup_invalidations_total, every status).
func (f *fixture) applied() float64 {
	f.t.Helper()
	mfs, err := f.promReg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "keyrelay_lookup_invalidations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// confirmation waits for the confirmation of event id.
func (f *fixture) confirmation(team, key, id string) *events.Confirmation {
	f.t.Helper()
	stream, err := f.js.Stream(f.ctx, client.ConfirmationsStream)
	if err != nil {
		f.t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m, err := stream.GetLastMsgForSubject(f.ctx, events.ConfirmationSubject(team, key, id))
		if err == nil {
			var c events.Confirmation
			if err := json.Unmarshal(m.Data, &c); err != nil {
				f.t.Fatal(err)
			}
			return &c
		}
		time.Sleep(2 * time.Millisecond)
	}
	f.t.Fatalf("no confirmation for %s", id)
	return nil
}

// get is an HTTP lookup; it returns the status and decoded body.
func (f *fixture) get(token, path string) (int, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.http.URL+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		f.t.Fatalf("GET %s: status %d, body is not JSON: %q", path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func putReq(name, value string) providers.PutRequest {
	return providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: "put-" + name + "-" + fmt.Sprint(len(value))}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
