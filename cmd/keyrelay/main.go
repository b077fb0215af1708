// Command keyrelay stores an AI gateway's virtual keys in each team's
// secret manager. `keyrelay serve` runs the workers (on an embedded
// JetStream server unless --nats-url is given); the other commands publish
// events, follow confirmations and manage the DLQ and the keyring.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keyrelay/keyrelay/internal/tracing"
	"github.com/keyrelay/keyrelay/settings"
)

// globals are the flags every command shares.
type globals struct {
	configPath string
	natsURL    string
	creds      string
	nkey       string
	tlsCA      string
	tlsCert    string
	tlsKey     string
	keyring    string
	logLevel   string
	// traces is the process's tracer provider (nil for serve, which sets
	// up its own).
	traces *tracing.Provider
}

func main() {
	g := &globals{}
	root := &cobra.Command{
		Use:           "keyrelay",
		Short:         "Store an AI gateway's virtual keys in each team's secret manager, reliably",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&g.configPath, "config", "c", os.Getenv("KEYRELAY_CONFIG"), "LiteLLM config.yaml with a keyrelay: section (default: embedded defaults)")
	pf.StringVar(&g.natsURL, "nats-url", os.Getenv("KEYRELAY_NATS_URL"), "external NATS URL(s); empty runs or uses the embedded server")
	pf.StringVar(&g.creds, "nats-creds", "", "NATS credentials file")
	pf.StringVar(&g.nkey, "nats-nkey", "", "NATS nkey seed file")
	pf.StringVar(&g.tlsCA, "nats-ca", "", "CA bundle for NATS TLS")
	pf.StringVar(&g.tlsCert, "nats-cert", "", "client certificate for NATS TLS")
	pf.StringVar(&g.tlsKey, "nats-key", "", "client key for NATS TLS")
	pf.StringVar(&g.keyring, "keyring", "", "sealing keyring file (overrides keyrelay.sealing.keyring_file)")
	pf.StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error (overrides keyrelay.log.level)")

	// Traces (off unless OTEL_TRACES_EXPORTER=otlp): every command but
	// serve, which does it in app.Serve, installs the provider before it
	// runs; main flushes it at exit.
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Name() == "serve" {
			return nil
		}
		p, err := tracing.Start(cmd.Context())
		if err != nil {
			return err
		}
		g.traces = p
		return nil
	}
	root.AddCommand(serveCmd(g), publishCmd(g), confirmationsCmd(g), dlqCmd(g), keyringCmd(g), ledgerCmd(g), outboxCmd(g), lookupCmd(g), driftCmd(g), restoreCmd(g), migrateCmd(g), rotateCmd(g), jobsCmd(g), statusCmd(g))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	g.stopTraces()
	if err != nil {
		fmt.Fprintln(newTermSafe(os.Stderr), "keyrelay:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

// stopTraces flushes the spans the command made.
func (g *globals) stopTraces() {
	if g.traces == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.traces.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "keyrelay:", err)
	}
}

// load reads the configuration and applies the global flags.
func (g *globals) load() (*settings.Config, *zap.Logger, error) {
	var c *settings.Config
	var warnings []string
	if g.configPath != "" {
		var err error
		c, warnings, err = settings.Load(g.configPath, os.Getenv)
		if err != nil {
			return nil, nil, err
		}
	} else {
		c = settings.Default()
	}
	n := &c.Keyrelay.NATS
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&n.URL, g.natsURL)
	set(&n.CredsFile, g.creds)
	set(&n.NKeyFile, g.nkey)
	set(&n.CAFile, g.tlsCA)
	set(&n.CertFile, g.tlsCert)
	set(&n.KeyFile, g.tlsKey)
	set(&c.Keyrelay.Sealing.KeyringFile, g.keyring)
	set(&c.Keyrelay.Log.Level, g.logLevel)
	if err := c.Validate(); err != nil {
		return nil, nil, fmt.Errorf("configuration (after flags): %w", err)
	}
	log, err := newLogger(c.Keyrelay.Log)
	if err != nil {
		return nil, nil, err
	}
	for _, w := range warnings {
		log.Warn("config: " + w)
	}
	if g.traces != nil && g.traces.Enabled() {
		log.Info("tracing", zap.String("tracing", g.traces.String()))
	} else if g.traces != nil {
		log.Debug("tracing", zap.String("tracing", g.traces.String()))
	}
	return c, log, nil
}

func newLogger(c settings.LogConfig) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.OutputPaths, zc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	return zc.Build()
}
