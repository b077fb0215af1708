// Package app wires keyrelay's parts into the `serve` process: NATS
// (embedded or external), the JetStream topology, the keyring, the
// provider registry, the workers and the operations HTTP listener.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/natsconn"
	"github.com/keyrelay/keyrelay/internal/tracing"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
	gsm "github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// Registry returns a registry with every provider this build has.
func Registry() *providers.Registry {
	r := providers.NewRegistry()
	local.Register(r)
	secretsmanager.Register(r)
	vault.Register(r)
	conjur.Register(r)
	keyvault.Register(r)
	gsm.Register(r)
	return r
}

// Topology maps the configuration to the JetStream topology.
func Topology(c *settings.Config) worker.TopologyConfig {
	k := c.Keyrelay
	return worker.TopologyConfig{
		Replicas: k.Streams.Replicas, DuplicateWindow: k.Streams.DuplicateWindow,
		EventsMaxAge: k.Streams.EventsMaxAge, EventsMaxBytes: k.Streams.EventsMaxBytes,
		ConfirmationsMaxAge: k.Streams.ConfirmationsMaxAge, DLQMaxAge: k.Streams.DLQMaxAge,
		ConfirmationsMaxBytes: k.Streams.ConfirmationsMaxBytes, ConfirmationsMaxMsgs: k.Streams.ConfirmationsMaxMsgs,
		DLQMaxBytes: k.Streams.DLQMaxBytes, DLQMaxMsgs: k.Streams.DLQMaxMsgs,
		AckWait: k.Worker.AckWait, MaxDeliver: k.Worker.MaxDeliver, MaxAckPending: k.Worker.MaxAckPending,
	}
}

// Conn is a NATS connection, with the embedded server when one was started.
type Conn struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	URL      string
	embedded *natsconn.Embedded
}

// Close drains the connection and stops the embedded server.
func (c *Conn) Close() {
	if c.NC != nil {
		_ = c.NC.Drain()
		for i := 0; i < 100 && !c.NC.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if c.embedded != nil {
		c.embedded.Shutdown()
	}
}

// Connect connects to the configured NATS, starting the embedded server
// when no URL is configured and startEmbedded is true. nats.url may list
// several servers separated by commas (the seeds of a cluster): the
// connection is made to the first that answers and moves to another
// server of the cluster when its server goes away.
//
// The embedded server requires a token (natsconn.StartEmbedded): a process
// that starts it presents the server's token, and one that only connects
// to it (startEmbedded false: the CLI commands) presents keyrelay.nats.token
// or else the token serve generated in the store directory, failing with an
// error naming that file when it cannot be read.
func Connect(c *settings.Config, name string, startEmbedded bool, log *zap.Logger) (*Conn, error) {
	return connect(c, name, startEmbedded, log)
}

func connect(c *settings.Config, name string, startEmbedded bool, log *zap.Logger, extra ...nats.Option) (*Conn, error) {
	nc := c.Keyrelay.NATS
	url := nc.URL
	out := &Conn{}
	if url == "" {
		e := nc.Embedded
		if !startEmbedded {
			url = fmt.Sprintf("nats://%s:%d", orDefault(e.Host, settings.DefaultEmbeddedHost), e.Port)
			var err error
			if nc, err = natsconn.EmbeddedClientConfig(nc); err != nil {
				return nil, err
			}
		} else {
			srv, err := natsconn.StartEmbedded(nc)
			if err != nil {
				return nil, err
			}
			out.embedded = srv
			nc = srv.ClientConfig(nc)
			url = srv.ClientURL()
			auth := zap.String("token", "keyrelay.nats.token")
			if srv.TokenFile != "" {
				auth = zap.String("token_file", srv.TokenFile)
			}
			log.Info("embedded JetStream server started; clients need its token", zap.String("url", url),
				zap.String("store_dir", e.StoreDir), auth)
			if srv.Generated {
				log.Info("generated the embedded server's client token; keyrelay commands read it from its file",
					zap.String("token_file", srv.TokenFile))
			}
		}
	}
	opts := append([]nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", zap.String("url", nc.ConnectedUrlRedacted())) }),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info("nats connected", zap.String("url", nc.ConnectedUrlRedacted())) }),
	}, extra...)
	conn, err := natsconn.Connect(url, nc, name, opts...)
	if err != nil {
		if out.embedded != nil {
			out.embedded.Shutdown()
		}
		if c.Keyrelay.NATS.URL == "" && errors.Is(err, nats.ErrAuthorization) {
			err = fmt.Errorf("%w: the embedded server refused this command's token: give it the configuration serve runs "+
				"with (the same keyrelay.nats.token, or keyrelay.nats.embedded.store_dir)", err)
		}
		return nil, err
	}
	// An async publish whose PubAck never comes (a leader election, a
	// blip without a reconnect) is failed after a minute instead of
	// being held until a reconnect: held, 4,000 of them stall every later
	// async publish of the process (the outbox relay's).
	js, err := jetstream.New(conn, jetstream.WithPublishAsyncTimeout(time.Minute))
	if err != nil {
		conn.Close()
		return nil, err
	}
	out.NC, out.JS, out.URL = conn, js, url
	return out, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// LoadKeyring opens the configured keyring; when create is true and the
// file does not exist, it generates one (the embedded default).
func LoadKeyring(c *settings.Config, create bool, log *zap.Logger) (*events.Keyring, error) {
	path := c.Keyrelay.Sealing.KeyringFile
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && create {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := events.GenerateKeyringFile(path, "k1"); err != nil {
			return nil, err
		}
		log.Info("generated a new sealing keyring", zap.String("path", path))
	}
	kr, err := events.LoadKeyring(path)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("keyring file is readable by group or others; chmod 600 it", zap.String("path", path))
	}
	kr.AllowPlaintext(c.Keyrelay.Sealing.AllowPlaintext)
	if c.Keyrelay.Sealing.AllowPlaintext {
		log.Warn("allow_plaintext_values is on: unsealed values are accepted (development only)")
	}
	return kr, nil
}

// ServeOptions adjust Serve.
type ServeOptions struct {
	// Registry overrides the default provider registry (tests inject faults).
	Registry *providers.Registry
	// OnListen is called with the operations listener's address as soon as
	// it is up (before NATS is reached; "" when it is off).
	OnListen func(opsAddr string)
	// OnReady is called once the worker consumes, the listeners are up and
	// /readyz answers 200.
	OnReady func(opsAddr string)
	// OnLookup is called with the lookup listener's address once it is up.
	OnLookup func(addr string)
	// Metrics is the registry /metrics serves (nil: a new one); tests
	// read what serve registered from it.
	Metrics *prometheus.Registry
}

// Serve runs keyrelay until ctx ends.
//
// Start-up: configuration problems that no retry can fix (an unknown
// key_management_system, a bad keyring, a taken port) end Serve with an
// error. The operations listener comes up first; NATS, the JetStream
// topology, the worker and the lookup service are then started with
// retries (StartRetryInitial up to StartRetryMax between attempts) until
// they succeed or ctx ends, while /readyz answers 503 with what start-up is
// waiting for. A NATS URL may list several servers (comma-separated); the
// connection is made to whichever answers and follows the cluster after.
func Serve(ctx context.Context, c *settings.Config, log *zap.Logger, o ServeOptions) error {
	TuneRuntime()
	// Traces: the OTEL_* environment (off unless OTEL_TRACES_EXPORTER=otlp),
	// installed process-wide, flushed at exit.
	traces, err := tracing.Start(ctx)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := traces.Shutdown(sctx); err != nil {
			log.Warn("traces not flushed", zap.Error(err))
		}
	}()
	registry := o.Registry
	if registry == nil {
		registry = Registry()
	}
	if err := CheckBackend(c, registry); err != nil {
		return err
	}
	if c.Keyrelay.NATS.IsEmbedded() && c.Keyrelay.Lookup.NATSPermissionsOnly() {
		// settings refuses it too; this holds for a configuration that
		// was not validated after the command line.
		return errors.New("keyrelay.lookup.nats_auth: permissions needs an external NATS (keyrelay.nats.url): " +
			"the embedded server has no subject permissions")
	}
	if err := DecryptLiteLLMEnv(ctx, c, log); err != nil {
		return err
	}
	sealing, err := LoadSealing(ctx, c, c.Keyrelay.NATS.URL == "", log)
	if err != nil {
		return err
	}

	reg := o.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if c := sealing.Collector(); c != nil {
		reg.MustRegister(c)
	}
	metrics := worker.NewMetrics(reg)
	registry.Wrap(metrics.InstrumentProvider)
	defer registry.Close()
	var quotas *lateQuotas
	if c.Keyrelay.Quotas.IsShared() {
		quotas = newLateQuotas()
		registry.SetQuotas(quotas)
	}

	rd := &readiness{phase: "starting: connecting to NATS"}
	health := newBackendHealth(c, registry, log)
	health.announce()
	rd.backends = health
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	go health.run(hctx)

	opsAddr := ""
	if a := c.Keyrelay.HTTP.Addr; a != "" && a != "off" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			ok, why := rd.report()
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if !ok {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			_, _ = w.Write([]byte(why + "\n"))
		})
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("http: listen %s: %w", a, err)
		}
		opsAddr = ln.Addr().String()
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		log.Info("operations listener", zap.String("addr", opsAddr))
	}
	if o.OnListen != nil {
		o.OnListen(opsAddr)
	}

	// A connection that is retried in the background: nats.Connect returns
	// at once even when no seed answers.
	conn, err := connect(c, "keyrelay-serve", true, log, nats.RetryOnFailedConnect(true))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := retryStart(ctx, "jetstream topology", rd, log, func(actx context.Context) error {
		if err := waitConnected(actx, conn.NC); err != nil {
			return err
		}
		return worker.EnsureTopology(actx, conn.JS, Topology(c))
	}); err != nil {
		return startEnded(ctx, err)
	}
	// This process's heartbeat in KEYRELAY_WORKERS (keyrelay status), until Serve returns.
	defer startPresence(ctx, c, conn.JS, reg, rd, quotas, log)()
	if quotas != nil {
		if err := retryStart(ctx, "cluster-wide provider quotas", rd, log, func(actx context.Context) error {
			m, err := StartQuotas(actx, c, conn.JS, log)
			if err != nil {
				return err
			}
			quotas.set(m)
			return nil
		}); err != nil {
			return startEnded(ctx, err)
		}
		defer quotas.m.Close()
		log.Info("provider quotas shared across the cluster", zap.Float64("margin", c.Keyrelay.Quotas.Margin))
	} else {
		log.Warn("provider quotas are per process (keyrelay.quotas.shared: false): N processes send up to N times each configured rate")
	}
	if err := retryStart(ctx, "team settings for the backend health checks", rd, log, func(actx context.Context) error {
		return health.watchTeams(hctx, conn.JS)
	}); err != nil {
		return startEnded(ctx, err)
	}

	enabled := c.Keyrelay.Worker.Enabled == nil || *c.Keyrelay.Worker.Enabled
	var w *worker.Worker
	if enabled {
		var migrations *recovery.Migrations
		if err := retryStart(ctx, "worker", rd, log, func(actx context.Context) error {
			rkv, err := conn.JS.KeyValue(actx, worker.RecoveryBucket)
			if err != nil {
				return fmt.Errorf("bucket %s: %w", worker.RecoveryBucket, err)
			}
			migrations = &recovery.Migrations{KV: rkv, JS: conn.JS}
			deps := worker.Deps{JS: conn.JS, Settings: c, Registry: registry, Opener: sealing.Opener, Logger: log, Metrics: metrics, Getenv: c.Env,
				TracerProvider: traces.TracerProvider()}
			if c.Keyrelay.Migration.OnSettingsChange {
				// Another backend, or other team options on the same one
				// (a Vault namespace, a Google project): either way the
				// keys move and the copies left behind are cleaned up.
				deps.OnPlaceChange = func(ctx context.Context, team string, from, to worker.TeamPlace) error {
					log.Info("team's place changed (another backend, or other team options on it): its keys' move is requested",
						zap.String("team", team), zap.String("from", from.Backend), zap.String("to", to.Backend))
					return migrations.RequestPlace(ctx, team, to)
				}
			}
			w, err = worker.New(actx, worker.ConfigFrom(c.Keyrelay.Worker), deps)
			return err
		}); err != nil {
			return startEnded(ctx, err)
		}
		// The migration sweeper: requested moves, and old copies whose
		// grace period is over.
		mc := c.Keyrelay.Migration
		okv, err := conn.JS.KeyValue(ctx, worker.OwnershipBucket)
		if err != nil {
			return startEnded(ctx, fmt.Errorf("ownership bucket: %w", err))
		}
		sw := recovery.NewSweeper(recovery.Deps{Ledger: w.Ledger(), Settings: c, Registry: registry, Opener: sealing.Opener,
			TeamSettings: func(team string) *events.TeamSettings { return w.Teams().Cached(team).Settings }, Logger: log, Ownership: okv},
			*migrations, recovery.SweeperConfig{Every: mc.SweepEvery, Grace: mc.Grace, Concurrency: mc.Concurrency,
				ClaimLease: c.Keyrelay.Worker.ClaimLease, CorruptEntries: metrics.CorruptEntries})
		go func() { _ = sw.Run(ctx) }()
	}

	var lk *lookupRuntime
	if l := c.Keyrelay.Lookup; l.HTTPEnabled() || l.NATSEnabled(c.Keyrelay.NATS.IsEmbedded()) {
		var teams *worker.Teams
		if w != nil {
			teams = w.Teams()
		}
		if err := retryStart(ctx, "lookup service", rd, log, func(actx context.Context) error {
			var err error
			// The lookup service lives as long as Serve: its context is
			// ctx, the attempt's deadline bounds only waiting for NATS.
			if err := waitConnected(actx, conn.NC); err != nil {
				return err
			}
			lk, err = startLookup(ctx, c, conn, registry, reg, teams, log)
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Op == "listen" {
				return backoff.Permanent(err) // a taken port: retrying cannot help
			}
			return err
		}); err != nil {
			return startEnded(ctx, err)
		}
		defer lk.stop()
		if o.OnLookup != nil {
			o.OnLookup(lk.addr)
		}
	}

	// Readiness once started: connected, topology present, team settings
	// loaded, the global backend reachable.
	var topologyOK atomic.Bool
	topologyOK.Store(true)
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			topologyOK.Store(topologyPresent(ctx, conn.JS))
		}
	}()
	rd.started(func() (bool, string) {
		switch {
		case conn.NC.Status() != nats.CONNECTED:
			return false, "nats: " + conn.NC.Status().String()
		case !topologyOK.Load():
			return false, "jetstream: streams or consumer missing"
		case w != nil && !w.Ready():
			return false, "worker: " + w.NotReady()
		}
		return true, "ok"
	})
	log.Info("started", zap.String("nats", conn.NC.ConnectedUrlRedacted()), zap.String("tracing", traces.String()))

	if o.OnReady != nil {
		go func() {
			for {
				if ok, _ := rd.report(); ok {
					o.OnReady(opsAddr)
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}
	if w == nil {
		<-ctx.Done()
		return nil
	}
	return w.Run(ctx)
}

// startEnded is what Serve returns when start-up stopped: nil when ctx
// ended (the process was asked to stop), the error otherwise.
func startEnded(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
