package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// lookupRuntime is the running lookup service of one Serve.
type lookupRuntime struct {
	addr string
	stop func()
}

// startLookup runs the read-through cache with its HTTP listener and NATS
// service, and follows confirmations to keep it current. teams may be nil
// (no worker in this process): it then watches team settings itself.
func startLookup(ctx context.Context, c *settings.Config, conn *Conn, registry *providers.Registry, reg prometheus.Registerer, teams *worker.Teams, log *zap.Logger) (*lookupRuntime, error) {
	l := c.Keyrelay.Lookup
	log = log.Named("lookup")
	kv, err := conn.JS.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		return nil, fmt.Errorf("lookup: bucket %s: %w", worker.LedgerBucket, err)
	}
	if teams == nil {
		tkv, err := conn.JS.KeyValue(ctx, worker.TeamsBucket)
		if err != nil {
			return nil, fmt.Errorf("lookup: bucket %s: %w", worker.TeamsBucket, err)
		}
		stream, err := conn.JS.Stream(ctx, worker.EventsStream)
		if err != nil {
			return nil, fmt.Errorf("lookup: stream %s: %w", worker.EventsStream, err)
		}
		teams = worker.NewTeams(tkv, stream, log, conn.JS.Conn())
		teams.KnownBackends(registry.Names())
		if err := teams.Start(ctx); err != nil {
			return nil, fmt.Errorf("lookup: team settings: %w", err)
		}
	}
	auth, err := lookup.NewAuth(l.Clients)
	if err != nil {
		return nil, err
	}
	embedded := c.Keyrelay.NATS.IsEmbedded()
	for _, w := range lookupAccessWarnings(l, auth.Len(), embedded) {
		log.Warn(w)
	}
	backend := &lookup.Backend{Config: c, Registry: registry, Ledger: worker.NewLedger(kv), Teams: teams, Logger: log}
	svc, err := lookup.New(lookup.ConfigFrom(l), backend, lookup.NewMetrics(reg), log)
	if err != nil {
		return nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	go svc.Follow(fctx, conn.JS)
	srv := lookup.NewServer(svc, auth, log)
	rt := &lookupRuntime{}
	var stops []func()
	stops = append(stops, cancel, svc.Close)
	if l.NATSEnabled(embedded) {
		ms, err := srv.ServeNATS(conn.NC, lookup.NATSOptions{PermissionsOnly: l.NATSPermissionsOnly(), Timeout: 2 * l.BackendTimeout})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("lookup: nats service: %w", err)
		}
		stops = append(stops, func() { _ = ms.Stop() })
		log.Info("lookup service on NATS", zap.String("subjects", lookup.TeamSubject+".<team>, "+lookup.GlobalSubject),
			zap.String("nats_auth", l.NATSAuth))
	} else if embedded && l.NATS == nil {
		log.Info("NATS lookups are off on the embedded server, where every client holding its token could read every reply " +
			"(keyrelay.lookup.nats: true turns them on there anyway)")
	}
	if l.HTTPEnabled() {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("lookup: listen %s: %w", l.Addr, err)
		}
		rt.addr = ln.Addr().String()
		hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: zap.NewStdLog(log)}
		go func() { _ = hs.Serve(ln) }()
		stops = append(stops, func() {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			_ = hs.Shutdown(sctx)
		})
		log.Info("lookup listener", zap.String("addr", rt.addr))
	}
	rt.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	return rt, nil
}

// embeddedNATSLookupWarning is what serve logs when keyrelay.lookup.nats
// turns NATS lookups on while it runs on its embedded server.
const embeddedNATSLookupWarning = "SECURITY: keyrelay.lookup.nats is true on the embedded NATS server: EVERY NATS CLIENT HOLDING THE " +
	"SERVER'S TOKEN CAN READ EVERY LOOKUP REPLY (every team's secrets) and the lookup tokens in the requests, by subscribing to " +
	lookup.SubjectPrefix + ".> and _INBOX.>; lookup tokens do not keep teams apart there. Per-team isolation needs an external " +
	"NATS (keyrelay.nats.url) with subject permissions; or set keyrelay.lookup.nats: false and use HTTP lookups"

// lookupAccessWarnings is what start-up says about who may read secrets:
// nothing when clients are configured, NATS lookups need their tokens and,
// on the embedded server, are off.
func lookupAccessWarnings(l settings.LookupConfig, clients int, embedded bool) []string {
	var ws []string
	if w := l.NATSRequireTokenWarning(); w != "" {
		ws = append(ws, w)
	}
	natsOn := l.NATSEnabled(embedded)
	if embedded && natsOn {
		ws = append(ws, embeddedNATSLookupWarning)
	}
	permissions := natsOn && l.NATSPermissionsOnly()
	if permissions {
		ws = append(ws, "SECURITY: keyrelay.lookup.nats_auth is permissions: NATS lookups WITHOUT A TOKEN ARE ANSWERED. "+
			"Whoever may publish on "+lookup.TeamSubject+".<team> reads that team's secrets, and on "+lookup.GlobalSubject+
			" the global ones: NATS subject permissions are the ONLY access control. Grant each team's NATS user publish on its own subject only, "+
			"or set nats_auth: token")
	}
	var over []string
	if l.HTTPEnabled() {
		over = append(over, "HTTP")
	}
	if natsOn {
		over = append(over, "NATS")
	}
	if clients == 0 && len(over) > 0 {
		if permissions {
			ws = append(ws, "no lookup clients are configured (keyrelay.lookup.clients): every lookup that needs a token is refused "+
				"(all HTTP lookups, NATS lookups that carry one); NATS lookups without a token are answered under NATS permissions alone")
		} else {
			ws = append(ws, "no lookup clients are configured (keyrelay.lookup.clients): every lookup is refused, over "+strings.Join(over, " and "))
		}
	}
	return ws
}
