package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/keyrelay/keyrelay/internal/app"
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
			if concurrency > 0 {
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
			embedded := c.Keyrelay.NATS.URL == ""
			lookupAt := "off"
			return app.Serve(cmd.Context(), c, log, app.ServeOptions{OnLookup: func(addr string) {
				if addr != "" {
					lookupAt = "http://" + addr + "/v1/secrets/{name}"
				}
			}, OnReady: func(ops string) {
				if !embedded {
					return
				}
				e := c.Keyrelay.NATS.Embedded
				fmt.Fprintf(os.Stderr, `
keyrelay is running on its embedded default.
  JetStream:    nats://%s:%d (data in %s)
  provider:     %s
  operations:   http://%s/metrics  /healthz  /readyz
  lookups:      %s (clients in keyrelay.lookup.clients)
Try it from another shell:
  ./bin/keyrelay confirmations --follow &
  ./bin/keyrelay publish create --team team-a --key key-1 --alias demo
  ./bin/keyrelay publish rotate --team team-a --key key-1
  ./bin/keyrelay publish delete --team team-a --key key-1
  ./bin/keyrelay dlq list
`, hostOr(e.Host), e.Port, e.StoreDir, c.KeyManagementSystem, ops, lookupAt)
			}})
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "", `operations listener address ("off" disables; default keyrelay.http.addr)`)
	cmd.Flags().IntVar(&concurrency, "concurrency", 0, "events handled at once by this process (default keyrelay.worker.concurrency)")
	cmd.Flags().StringVar(&lookupAddr, "lookup-addr", "", `lookup API listener address ("off" disables HTTP lookups; default keyrelay.lookup.addr)`)
	cmd.Flags().BoolVar(&noLookup, "no-lookup", false, "run without the lookup service (HTTP and NATS)")
	cmd.Flags().BoolVar(&noWorker, "no-worker", false, "run without workers (serve JetStream and operations only)")
	return cmd
}

func hostOr(h string) string {
	if h == "" {
		return "127.0.0.1"
	}
	return h
}
