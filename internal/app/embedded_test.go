package app_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/natsconn"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// connectAsCommand connects to the NATS serve uses for c as the commands
// do (app.Connect without starting the embedded server: on it, with
// keyrelay.nats.token or the token serve generated in the store
// directory); the connection is closed at the end of the test.
func connectAsCommand(t *testing.T, c *settings.Config) jetstream.JetStream {
	t.Helper()
	conn, err := app.Connect(c, "keyrelay-test-client", false, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.NC.Close)
	return conn.JS
}

// TestServeEmbeddedToken runs serve on its embedded server twice, as
// `make run` does, with a generated token and with keyrelay.nats.token:
// a client without the token (or with another) is refused with an
// authorization error; serve's own connection (it becomes ready) and a
// command's (app.Connect without starting the server) get through; the
// generated token is in <store_dir>/client.token, mode 0600, the same
// after the restart; a configured token writes no file; and the token
// never appears in the logs. Before serve ever ran, a command's error names
// the missing file.
func TestServeEmbeddedToken(t *testing.T) {
	const configured = "serve-configured-nats-token-0123"
	tests := map[string]struct {
		token string
		logs  []string
	}{
		"generated token": {logs: []string{"embedded JetStream server started; clients need its token",
			`"token_file":"`, "generated the embedded server's client token"}},
		"keyrelay.nats.token": {token: configured, logs: []string{"embedded JetStream server started; clients need its token",
			`"token":"keyrelay.nats.token"`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := embeddedConfig(t, nil)
			c.Keyrelay.NATS.Token = tc.token
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			// Every log line, fields included, at debug level: to the JSON
			// encoder and to an observer.
			var buf testenv.SyncBuffer
			core, observed := observer.New(zapcore.DebugLevel)
			log := zap.New(zapcore.NewTee(startLogger(&buf).Core(), core))
			url := fmt.Sprintf("nats://127.0.0.1:%d", c.Keyrelay.NATS.Embedded.Port)
			path := natsconn.TokenFile(c.Keyrelay.NATS.Embedded)

			if tc.token == "" {
				_, err := app.Connect(c, "keyrelay-test-cli", false, log)
				if !errors.Is(err, natsconn.ErrNoToken) || !strings.Contains(err.Error(), path) ||
					!strings.Contains(err.Error(), "start keyrelay serve first, or set keyrelay.nats.token") {
					t.Fatalf("a command before serve ran: %v", err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var token string
			for run := 1; run <= 2; run++ {
				s := serve(t, c, log)
				select {
				case <-s.ready:
				case err := <-s.done:
					t.Fatalf("run %d: serve: %v", run, err)
				case <-ctx.Done():
					t.Fatalf("run %d: serve not ready", run)
				}

				fi, err := os.Stat(path)
				switch {
				case tc.token != "":
					if !errors.Is(err, os.ErrNotExist) {
						t.Fatalf("run %d: a token file with keyrelay.nats.token set: %v", run, err)
					}
					token = tc.token
				case err != nil:
					t.Fatalf("run %d: %v", run, err)
				case fi.Mode().Perm() != 0o600:
					t.Fatalf("run %d: %s has mode %04o, want 0600", run, path, fi.Mode().Perm())
				default:
					b, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					got := strings.TrimSpace(string(b))
					if run == 2 && got != token {
						t.Fatalf("the restart generated another token")
					}
					token = got
				}

				for what, opts := range map[string][]nats.Option{
					"no token":      nil,
					"another token": {nats.Token("not-the-embedded-token-0123456789")},
				} {
					if nc, err := nats.Connect(url, opts...); !errors.Is(err, nats.ErrAuthorization) {
						if nc != nil {
							nc.Close()
						}
						t.Fatalf("run %d, %s: connect error %v, want %v", run, what, err, nats.ErrAuthorization)
					}
				}
				nc, err := nats.Connect(url, nats.Token(token))
				if err != nil {
					t.Fatalf("run %d, the token: %v", run, err)
				}
				nc.Close()

				// A command's connection reaches JetStream.
				conn, err := app.Connect(c, "keyrelay-test-cli", false, log)
				if err != nil {
					t.Fatalf("run %d: command: %v", run, err)
				}
				if _, err := conn.JS.Stream(ctx, worker.EventsStream); err != nil {
					t.Fatalf("run %d: command: %v", run, err)
				}
				conn.Close()
				// One with another keyrelay.nats.token is told why it is refused.
				other := *c
				other.Keyrelay.NATS.Token = "not-the-embedded-token-0123456789"
				if _, err := app.Connect(&other, "keyrelay-test-cli", false, log); !errors.Is(err, nats.ErrAuthorization) ||
					!strings.Contains(err.Error(), "the embedded server refused this command's token") {
					t.Fatalf("run %d: command with another token: %v", run, err)
				}

				s.stop()
				select {
				case <-s.ended:
				case <-ctx.Done():
					t.Fatalf("run %d: serve did not stop", run)
				}
			}

			text := buf.String()
			for _, e := range observed.All() {
				text += "\n" + e.Message
				for _, f := range e.Context {
					text += " " + f.Key + "=" + f.String + fmt.Sprint(f.Interface)
				}
			}
			if strings.Contains(text, token) {
				t.Fatal("the token is in the logs")
			}
			for _, want := range tc.logs {
				if !strings.Contains(text, want) {
					t.Errorf("logs lack %q:\n%s", want, buf.String())
				}
			}
			if n := strings.Count(buf.String(), "generated the embedded server's client token"); tc.token == "" && n != 1 {
				t.Errorf("token generated %d times in two runs, want once", n)
			}
		})
	}
}
