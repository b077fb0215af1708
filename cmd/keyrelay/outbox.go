package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/outbox"
)

// OutboxFailedExitCode is the exit status of `keyrelay outbox status` when
// the outbox holds failed rows: like DriftExitCode, the command ran
// completely and found something only a person can repair. ExitFailed (1)
// stays for an outbox that could not be read.
const OutboxFailedExitCode = 3

// failedRowsListed is how many failed rows `outbox status` lists, newest
// first; it says how many more there are.
const failedRowsListed = 50

func outboxCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "outbox", Short: "PostgreSQL transactional outbox: migrate the table, relay rows to JetStream"}
	cfg := outbox.Config{}
	addDB := func(c *cobra.Command) {
		c.Flags().StringVar(&cfg.DSN, "dsn", os.Getenv("KEYRELAY_OUTBOX_DSN"), "PostgreSQL connection string (env KEYRELAY_OUTBOX_DSN)")
		c.Flags().StringVar(&cfg.Schema, "schema", outbox.DefaultSchema, "schema holding keyrelay_outbox")
	}

	migrate := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the outbox schema (idempotent, safe to run concurrently)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			conn, err := connectPG(ctx, cfg.DSN)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			applied, err := outbox.Migrate(ctx, conn, cfg.Schema)
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Printf("outbox schema %s is up to date\n", cfg.Schema)
			} else {
				fmt.Printf("outbox schema %s: applied migrations %v\n", cfg.Schema, applied)
			}
			return nil
		},
	}
	addDB(migrate)

	var listen string
	relay := &cobra.Command{
		Use:   "relay",
		Short: "Publish committed outbox rows to JetStream (run several for availability)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := g.load()
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck
			if cfg.DSN == "" {
				return errors.New("outbox relay: --dsn or KEYRELAY_OUTBOX_DSN is required")
			}
			conn, err := app.Connect(c, "keyrelay-outbox-relay", false, log)
			if err != nil {
				return err
			}
			defer conn.Close()
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			r, err := outbox.NewRelay(cfg, conn.JS, log, reg)
			if err != nil {
				return err
			}
			if listen != "" && listen != "off" {
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return fmt.Errorf("listen %s: %w", listen, err)
				}
				srv := &http.Server{Handler: opsMux(reg, r.Ready), ReadHeaderTimeout: 5 * time.Second}
				go func() { _ = srv.Serve(ln) }()
				defer func() {
					sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_ = srv.Shutdown(sctx)
				}()
				log.Info("operations listener", zap.String("addr", ln.Addr().String()))
			}
			return r.Run(cmd.Context())
		},
	}
	addDB(relay)
	f := relay.Flags()
	f.IntVar(&cfg.BatchSize, "batch", outbox.DefaultBatchSize, "rows read, published and marked per round")
	f.DurationVar(&cfg.PollInterval, "poll", outbox.DefaultPollInterval, "polling interval when no LISTEN/NOTIFY wake-up arrives")
	f.DurationVar(&cfg.Retention, "retention", outbox.DefaultRetention, "how long sent rows are kept")
	f.DurationVar(&cfg.PruneInterval, "prune-interval", outbox.DefaultPruneInterval, "how often sent rows past the retention are deleted")
	f.DurationVar(&cfg.PublishTimeout, "publish-timeout", outbox.DefaultPublishTimeout, "wait for a PubAck at most this long")
	f.DurationVar(&cfg.MaxBackoff, "max-backoff", outbox.DefaultMaxBackoff, "longest retry delay after NATS or PostgreSQL errors")
	f.DurationVar(&cfg.StandbyAfter, "standby-after", outbox.DefaultStandbyAfter, "hand partitions to other relays when NATS has been unreachable this long")
	f.StringVar(&cfg.Stream, "stream", outbox.DefaultStream, "JetStream stream the events must land in")
	f.StringVar(&listen, "listen", "127.0.0.1:9465", "operations listener for /metrics, /healthz and /readyz (\"off\" to disable)")

	status := &cobra.Command{
		Use:   "status",
		Short: "Count outbox rows by state and list failed rows with their reason (exit 3 when rows failed)",
		Long: `status counts the outbox rows by state (pending, with the age of the
oldest; sent; failed) and lists the 50 newest failed rows with their reason.
A failed row is an event the gateway committed and the relay gave up on: it
will never be published (see docs/outbox.md, "Rows that cannot be
published").

Exit status: 0 when no row failed, 3 when the outbox was read completely and
holds failed rows (as drift's 3: the report is complete and needs a
person), 1 when the outbox could not be read.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			conn, err := connectPG(ctx, cfg.DSN)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			st, err := outbox.ReadStatus(ctx, conn, cfg.Schema, failedRowsListed)
			if err != nil {
				return err
			}
			out := newTermSafe(cmd.OutOrStdout())
			fmt.Fprintf(out, "pending %d (oldest %v)  sent %d  failed %d\n", st.Pending, st.OldestPending.Round(time.Millisecond), st.Sent, st.Failed)
			for _, fr := range st.FailedRows {
				fmt.Fprintf(out, "failed seq=%d event_id=%s team=%s key=%s attempts=%d reason=%s\n", fr.Seq, fr.EventID, fr.TeamID, fr.KeyID, fr.Attempts, fr.Reason)
			}
			if more := st.Failed - int64(len(st.FailedRows)); more > 0 {
				fmt.Fprintf(out, "... and %d older failed rows not listed (SELECT them from the outbox table: state = 'failed')\n", more)
			}
			if st.Failed > 0 {
				// Not 1: the command did all of its work; what it found is
				// events lost to the workers, which a script must not take
				// for a healthy outbox nor for an unreadable one.
				return &exitError{code: OutboxFailedExitCode,
					msg: fmt.Sprintf("outbox: %d failed rows: their events will not be published (re-drive them, then delete the rows)", st.Failed)}
			}
			return nil
		},
	}
	addDB(status)

	cmd.AddCommand(migrate, relay, status)
	return cmd
}

func connectPG(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("cannot parse the PostgreSQL DSN") // the error can quote the password
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return conn, nil
}

func opsMux(reg *prometheus.Registry, ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
