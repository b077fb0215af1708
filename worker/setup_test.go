package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
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
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer = testenv.SyncBuffer

// bundle is one test's environment: a real nats-server process, the
// topology, a keyring and in-memory local stores registered as backends.
type bundle struct {
	t       *testing.T
	ctx     context.Context
	js      jetstream.JetStream
	nc      *nats.Conn
	srv     *testenv.NATS
	cluster *testenv.Cluster
	kr      *events.Keyring
	// opener, when set, opens values instead of kr (fault injection).
	opener  events.Opener
	cfg     *settings.Config
	reg     *providers.Registry
	stores  map[string]*local.Provider
	logs    *syncBuffer
	log     *zap.Logger
	promReg *prometheus.Registry
	metrics *worker.Metrics
	pub     *client.Publisher
	topo    worker.TopologyConfig
}

type setupOptions struct {
	// wrap decorates the backend named by key (fault injection).
	wrap map[string]func(providers.Provider) providers.Provider
	// backends are extra backend names, each its own in-memory store.
	backends []string
	mutate   func(*settings.Config)
	topo     func(*worker.TopologyConfig)
	// timeout bounds the whole test. Default: 3m.
	timeout time.Duration
	// cluster runs the test on a 3-node cluster, every stream and bucket
	// at replicas 3 (b.cluster), instead of one server (b.srv).
	cluster bool
}

func setup(t *testing.T, o setupOptions) *bundle {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	t.Cleanup(cancel)
	var srv *testenv.NATS
	var cluster *testenv.Cluster
	var nc *nats.Conn
	var err error
	replicas := 1
	if o.cluster {
		cluster, replicas = testenv.StartCluster(t, 3), 3
		nc, err = cluster.Connect()
	} else {
		srv = testenv.StartNATS(t)
		nc, err = nats.Connect(srv.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	topo := worker.TopologyConfig{Replicas: replicas, DuplicateWindow: time.Minute, AckWait: 5 * time.Second, MaxDeliver: 1000, MaxAckPending: 256}
	if o.topo != nil {
		o.topo(&topo)
	}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	kr, err := events.NewKeyring("t1", map[string][]byte{"t1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := settings.Default()
	if o.mutate != nil {
		o.mutate(cfg)
	}
	logs := &syncBuffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logs), zapcore.DebugLevel))
	promReg := prometheus.NewRegistry()
	b := &bundle{t: t, ctx: ctx, js: js, nc: nc, srv: srv, cluster: cluster, kr: kr, cfg: cfg, reg: providers.NewRegistry(), stores: map[string]*local.Provider{},
		logs: logs, log: log, promReg: promReg, metrics: worker.NewMetrics(promReg), pub: client.NewPublisher(js), topo: topo}
	for _, name := range append([]string{"local"}, o.backends...) {
		store, err := local.New(local.Config{})
		if err != nil {
			t.Fatal(err)
		}
		b.stores[name] = store
		var p providers.Provider = store
		if w := o.wrap[name]; w != nil {
			p = w(store)
		}
		b.reg.Register(name, func(context.Context, providers.Config) (providers.Provider, error) { return p, nil })
	}
	b.reg.Wrap(b.metrics.InstrumentProvider)
	return b
}

// startWorker runs a worker until the test ends or stop is called.
func (b *bundle) startWorker(mut func(*worker.Config)) (w *worker.Worker, stop func()) {
	b.t.Helper()
	wc := worker.Config{Concurrency: 8, AckWait: b.topo.AckWait, MaxDeliver: b.topo.MaxDeliver, CallTimeout: time.Second,
		ClaimLease: 3 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, ShutdownGrace: 2 * time.Second}
	if mut != nil {
		mut(&wc)
	}
	var opener events.Opener = b.kr
	if b.opener != nil {
		opener = b.opener
	}
	w, err := worker.New(b.ctx, wc, worker.Deps{JS: b.js, Settings: b.cfg, Registry: b.reg, Opener: opener, Logger: b.log, Metrics: b.metrics})
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
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				b.t.Errorf("worker: %v", err)
			}
		})
	}
	b.t.Cleanup(stop)
	return w, stop
}

func (b *bundle) keyEvent(typ events.Type, team, key string, gen uint64, value string) *events.Event {
	b.t.Helper()
	ev, err := events.NewKeyEvent(b.ctx, b.kr, typ, team, key, gen, []byte(value), events.KeyData{})
	if err != nil {
		b.t.Fatal(err)
	}
	return ev
}

func (b *bundle) settingsEvent(team string, gen uint64, s *events.TeamSettings) *events.Event {
	b.t.Helper()
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: "s-" + team + "-" + itoa(gen), Type: events.TeamSettingsDeleted,
		Time: time.Now().UTC(), TeamID: team, Generation: gen}
	if s != nil {
		ev.Type = events.TeamSettingsUpdated
		ev.Data, _ = json.Marshal(events.SettingsData{Settings: *s})
	}
	if err := ev.Validate(); err != nil {
		b.t.Fatal(err)
	}
	return ev
}

func itoa(n uint64) string { return json.Number(jsonUint(n)).String() }

func jsonUint(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func (b *bundle) publish(evs ...*events.Event) {
	b.t.Helper()
	for _, ev := range evs {
		if _, err := b.pub.Publish(b.ctx, ev); err != nil {
			b.t.Fatal(err)
		}
	}
}

// publishRaw publishes bytes as they are (malformed events).
func (b *bundle) publishRaw(subject string, data []byte) {
	b.t.Helper()
	if _, err := b.js.Publish(b.ctx, subject, data); err != nil {
		b.t.Fatal(err)
	}
}

// confirmations waits until n confirmations exist and returns all of them.
func (b *bundle) confirmations(n int, timeout time.Duration) []*events.Confirmation {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, worker.ConfirmationsStream)
	if err != nil {
		b.t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		info, err := s.Info(b.ctx)
		if err != nil {
			b.t.Fatal(err)
		}
		if int(info.State.Msgs) >= n {
			break
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%d confirmations after %v, want %d\nlogs:\n%s", info.State.Msgs, timeout, n, tail(b.logs.String(), 4000))
		}
		time.Sleep(10 * time.Millisecond)
	}
	var out []*events.Confirmation
	for _, m := range b.rawMessages(worker.ConfirmationsStream) {
		var c events.Confirmation
		if err := json.Unmarshal(m.Data, &c); err != nil {
			b.t.Fatal(err)
		}
		out = append(out, &c)
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// rawMessages returns every message of a stream.
func (b *bundle) rawMessages(stream string) []*jetstream.RawStreamMsg {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, stream)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	if info.State.Msgs == 0 {
		return out
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(b.ctx, seq)
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	return out
}

func byEventID(cs []*events.Confirmation) map[string]*events.Confirmation {
	m := map[string]*events.Confirmation{}
	for _, c := range cs {
		m[c.EventID] = c
	}
	return m
}

func (b *bundle) value(backend, name string) string {
	b.t.Helper()
	s, err := b.stores[backend].Get(b.ctx, name, "")
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(s.Value)
}
