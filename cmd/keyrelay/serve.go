package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/natsconn"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/settings"
)

func serveCmd(g *globals) *cobra.Command {
	var httpAddr string
	var concurrency int
	var noWorker, noLookup bool
	var lookupAddr string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run workers (and the embedded JetStream server unless --nats-url is set)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := g.load()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			if cmd.Flags().Changed("http") {
				c.Keyrelay.HTTP.Addr = httpAddr
			}
			if cmd.Flags().Changed("concurrency") {
				c.Keyrelay.Worker.Concurrency = concurrency
			}
			if cmd.Flags().Changed("lookup-addr") {
				c.Keyrelay.Lookup.Addr = lookupAddr
			}
			if noLookup {
				f := false
				c.Keyrelay.Lookup.Addr, c.Keyrelay.Lookup.NATS = settings.LookupOff, &f
			}
			if noWorker {
				f := false
				c.Keyrelay.Worker.Enabled = &f
			}
			// The flags changed a validated configuration: check it again
			// (a --concurrency below worker.backend_slots, a negative one).
			if err := c.Validate(); err != nil {
				return fmt.Errorf("configuration (after serve's flags): %w", err)
			}
			embedded := c.Keyrelay.NATS.IsEmbedded()
			lookupAddr := ""
			return app.Serve(cmd.Context(), c, log, app.ServeOptions{OnLookup: func(addr string) {
				lookupAddr = addr
			}, OnReady: func(ops string) {
				if !embedded {
					return
				}
				fmt.Fprint(os.Stderr, readyMessage(c, g.configPath, ops, lookupAddr))
			}})
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "", `operations listener address ("off" disables; default keyrelay.http.addr)`)
	cmd.Flags().IntVar(&concurrency, "concurrency", 0, "events handled at once by this process, positive (default keyrelay.worker.concurrency)")
	cmd.Flags().StringVar(&lookupAddr, "lookup-addr", "", `lookup API listener address ("off" disables HTTP lookups; default keyrelay.lookup.addr)`)
	cmd.Flags().BoolVar(&noLookup, "no-lookup", false, "run without the lookup service (HTTP and NATS)")
	cmd.Flags().BoolVar(&noWorker, "no-worker", false, "run without workers (serve JetStream and operations only)")
	return cmd
}

// readyMessage is what serve prints once it runs on its embedded
// JetStream server: where everything is, and commands to try it with,
// carrying --config when serve was given one.
func readyMessage(c *settings.Config, configPath, ops, lookupAddr string) string {
	var b strings.Builder
	if configPath == "" {
		b.WriteString("\nkeyrelay is running on its embedded default.\n")
	} else {
		fmt.Fprintf(&b, "\nkeyrelay is running with config %s, on its embedded JetStream server.\n", configPath)
	}
	n := c.Keyrelay.NATS
	e := n.Embedded
	auth := "clients need the token in " + natsconn.TokenFile(e)
	if n.Token != "" {
		auth = "clients need keyrelay.nats.token"
	}
	fmt.Fprintf(&b, "  JetStream:    nats://%s (data in %s; %s)\n", net.JoinHostPort(hostOr(e.Host), strconv.Itoa(e.Port)), e.StoreDir, auth)
	fmt.Fprintf(&b, "  provider:     %s\n", c.KeyManagementSystem)
	if ops == "" {
		b.WriteString("  operations:   off\n")
	} else {
		fmt.Fprintf(&b, "  operations:   http://%s/metrics  /healthz  /readyz\n", ops)
	}
	fmt.Fprintf(&b, "  lookups:      %s\n", lookupSummary(c.Keyrelay.Lookup, lookupAddr, n.IsEmbedded()))
	cli := "./bin/keyrelay"
	if configPath != "" {
		cli += " --config " + shellQuote(configPath)
	}
	b.WriteString("Try it from another shell:\n")
	for _, cmd := range []string{
		"confirmations --follow &",
		"publish create --team team-a --key key-1 --alias demo",
		"publish rotate --team team-a --key key-1",
		"publish delete --team team-a --key key-1",
		"dlq list",
	} {
		fmt.Fprintf(&b, "  %s %s\n", cli, cmd)
	}
	if l := c.Keyrelay.Lookup; len(l.Clients) > 0 && (lookupAddr != "" || l.NATSEnabled(n.IsEmbedded())) {
		get := "lookup get key-1"
		if lookupAddr == "" {
			get = "lookup get --nats --team team-a key-1"
		}
		fmt.Fprintf(&b, "  KEYRELAY_TOKEN=<a client's token> %s %s\n", cli, get)
	}
	return b.String()
}

// lookupSummary says where lookups are served and who may read;
// embedded is whether serve runs on its embedded server, where NATS
// lookups are off unless keyrelay.lookup.nats turns them on.
func lookupSummary(l settings.LookupConfig, httpAddr string, embedded bool) string {
	natsOn := l.NATSEnabled(embedded)
	var at []string
	if httpAddr != "" {
		at = append(at, "http://"+httpAddr+"/v1/secrets/{name}")
	}
	if natsOn {
		at = append(at, "NATS "+lookup.SubjectPrefix+".*")
	}
	if len(at) == 0 {
		return "off"
	}
	var access string
	switch n := len(l.Clients); {
	case n == 0 && natsOn && l.NATSPermissionsOnly():
		access = "no clients in keyrelay.lookup.clients: HTTP lookups are refused; NATS lookups without a token are ANSWERED (nats_auth: permissions)"
	case n == 0:
		access = "refused: no clients in keyrelay.lookup.clients"
	case natsOn && l.NATSPermissionsOnly():
		access = fmt.Sprintf("%d client(s) in keyrelay.lookup.clients; NATS lookups without a token are ANSWERED (nats_auth: permissions)", n)
	default:
		access = fmt.Sprintf("%d client(s) in keyrelay.lookup.clients; every lookup needs a client's token", n)
	}
	s := strings.Join(at, " and ") + " (" + access + ")"
	switch {
	case embedded && natsOn:
		s += "; WARNING: keyrelay.lookup.nats is on, and on the embedded server every NATS client holding its token " +
			"can read every lookup reply (no per-team isolation)"
	case embedded:
		s += "; not over NATS (off on the embedded server, where every client holding its token could read every reply)"
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-./:@%+=,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func hostOr(h string) string {
	if h == "" {
		return "127.0.0.1"
	}
	return h
}
