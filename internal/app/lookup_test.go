package app_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/settings"
)

// TestServeLookupAccess runs serve as `make run` does and asks for a
// stored key over NATS without a token, and with one: by default (no
// clients configured) every lookup is refused and start-up says so; with
// clients the token is required over NATS too. On the embedded server NATS
// lookups are off unless keyrelay.lookup.nats turns them on (start-up then
// warns that every client holding the server's token reads every reply);
// on an external NATS they are on by default. Only nats_auth: permissions,
// refused on the embedded server, answers without a token, and start-up
// warns loudly.
func TestServeLookupAccess(t *testing.T) {
	const token = "serve-access-token-team-a"
	// noService is the status of a NATS lookup no service answers.
	const noService = -1
	clients := map[string]settings.LookupClient{"team-a": {Team: "team-a", Token: token}}
	on := true
	tests := map[string]struct {
		external   bool // an external nats-server instead of the embedded one
		clients    map[string]settings.LookupClient
		nats       *bool
		natsAuth   string
		requireTok *bool
		noToken    int // status of a NATS request without a token (200: answered)
		withToken  int // status of a NATS request with the team's token
		httpToken  int // status of an HTTP request with the team's token
		logs       []string
		notLogs    []string
	}{
		"embedded default": {noToken: noService, withToken: noService, httpToken: 401,
			logs:    []string{"every lookup is refused, over HTTP", "NATS lookups are off on the embedded server"},
			notLogs: []string{"SECURITY", "over HTTP and NATS"}},
		"embedded, clients": {clients: clients, noToken: noService, withToken: noService, httpToken: 200,
			logs: []string{"NATS lookups are off on the embedded server"}, notLogs: []string{"SECURITY", "no lookup clients"}},
		"embedded, clients, NATS lookups on": {clients: clients, nats: &on, noToken: 401, withToken: 200, httpToken: 200,
			logs:    []string{"SECURITY: keyrelay.lookup.nats is true on the embedded NATS server", "EVERY NATS CLIENT HOLDING THE SERVER'S TOKEN"},
			notLogs: []string{"no lookup clients", "NATS lookups are off"}},
		"embedded, NATS lookups on, no clients": {nats: &on, noToken: 401, withToken: 401, httpToken: 401,
			logs: []string{"every lookup is refused, over HTTP and NATS", "SECURITY: keyrelay.lookup.nats is true on the embedded"}},
		"embedded, clients, NATS lookups on, deprecated nats_require_token false": {clients: clients, nats: &on, requireTok: new(bool),
			noToken: 401, withToken: 200, httpToken: 200,
			logs: []string{"nats_require_token: false is deprecated and no longer turns tokens off"}},
		"external, clients": {external: true, clients: clients, noToken: 401, withToken: 200, httpToken: 200,
			notLogs: []string{"SECURITY", "no lookup clients", "NATS lookups are off"}},
		"external, nats_auth permissions": {external: true, clients: clients, natsAuth: settings.LookupNATSAuthPermissions,
			noToken: 200, withToken: 200, httpToken: 200,
			logs: []string{"SECURITY: keyrelay.lookup.nats_auth is permissions", "NATS subject permissions are the ONLY access control"}},
		"external, nats_auth permissions, no clients": {external: true, natsAuth: settings.LookupNATSAuthPermissions,
			noToken: 200, withToken: 401, httpToken: 401,
			logs: []string{"SECURITY", "NATS lookups without a token are answered under NATS permissions alone"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c := settings.Default()
			c.Keyrelay.NATS.Embedded.Port = testenv.FreePort(t)
			c.Keyrelay.NATS.Embedded.StoreDir = filepath.Join(dir, "nats")
			if tc.external {
				// serve makes the keyring only on its embedded server.
				c.Keyrelay.NATS.URL = testenv.StartNATS(t).URL
				if err := events.GenerateKeyringFile(filepath.Join(dir, "keyring.json"), "k1"); err != nil {
					t.Fatal(err)
				}
			}
			c.Keyrelay.Sealing.KeyringFile = filepath.Join(dir, "keyring.json")
			c.Keyrelay.HTTP.Addr = "127.0.0.1:0"
			c.Keyrelay.Lookup.Addr = "127.0.0.1:0"
			c.Keyrelay.Lookup.Clients = tc.clients
			c.Keyrelay.Lookup.NATS = tc.nats
			c.Keyrelay.Lookup.NATSRequireToken = tc.requireTok
			if tc.natsAuth != "" {
				c.Keyrelay.Lookup.NATSAuth = tc.natsAuth
			}
			c.Keyrelay.Providers = map[string]map[string]string{"local": {"path": ":memory:"}}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zapcore.InfoLevel)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			runCtx, stop := context.WithCancel(ctx)
			ready := make(chan struct{})
			lookupAddr := make(chan string, 1)
			done := make(chan error, 1)
			go func() {
				done <- app.Serve(runCtx, c, zap.New(core), app.ServeOptions{OnReady: func(string) { close(ready) },
					OnLookup: func(addr string) { lookupAddr <- addr }})
			}()
			defer func() {
				stop()
				if err := <-done; err != nil {
					t.Errorf("serve returned %v", err)
				}
			}()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("serve: %v", err)
			case <-ctx.Done():
				t.Fatal("not ready")
			}

			// Store a key as a gateway would.
			kr, err := events.LoadKeyring(c.Keyrelay.Sealing.KeyringFile)
			if err != nil {
				t.Fatal(err)
			}
			js := connectAsCommand(t, c)
			nc := js.Conn()
			ev, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "team-a", "key-1", 1, []byte("sk-access-value"), events.KeyData{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.NewPublisher(js).Publish(ctx, ev); err != nil {
				t.Fatal(err)
			}
			// status asks until the answer is not 404 (the key may not be
			// stored yet), so a 200 shows the value was served.
			status := func(what string, get func(context.Context, string) (*lookupclient.Secret, error)) int {
				for {
					s, err := get(ctx, "key-1")
					var e *lookupclient.Error
					switch {
					case err == nil:
						if s.Value != "sk-access-value" {
							t.Fatalf("%s: answered another value", what)
						}
						return 200
					case errors.As(err, &e) && e.Status == 404 && ctx.Err() == nil:
						time.Sleep(20 * time.Millisecond)
					case errors.As(err, &e) && e.Status == 503 && strings.HasPrefix(e.Reason, lookupclient.NoServiceReason):
						return noService
					case errors.As(err, &e):
						if e.Status == 401 && len(tc.clients) == 0 && e.Reason != lookup.NoClientsReason {
							t.Errorf("%s: reason %q, want %q", what, e.Reason, lookup.NoClientsReason)
						}
						return e.Status
					default:
						t.Fatalf("%s: %v", what, err)
					}
				}
			}
			for _, q := range []struct {
				what string
				get  func(context.Context, string) (*lookupclient.Secret, error)
				want int
			}{
				{"NATS with the team's token", (&lookupclient.NATS{Conn: nc, Team: "team-a", Token: token}).Get, tc.withToken},
				{"NATS without a token", (&lookupclient.NATS{Conn: nc, Team: "team-a"}).Get, tc.noToken},
				{"HTTP with the team's token", (&lookupclient.HTTP{BaseURL: "http://" + <-lookupAddr, Token: token}).Get, tc.httpToken},
			} {
				if got := status(q.what, q.get); got != q.want {
					t.Errorf("%s: status %d, want %d", q.what, got, q.want)
				}
			}

			var all []string
			for _, e := range logs.FilterLoggerName("lookup").All() {
				all = append(all, e.Level.String()+" "+e.Message)
			}
			text := strings.Join(all, "\n")
			for _, want := range tc.logs {
				if !strings.Contains(text, want) {
					t.Errorf("start-up logs lack %q:\n%s", want, text)
				}
			}
			for _, not := range tc.notLogs {
				if strings.Contains(text, not) {
					t.Errorf("start-up logs say %q:\n%s", not, text)
				}
			}
		})
	}
}

// TestServeRefusesPermissionsOnEmbedded: nats_auth: permissions would
// answer NATS lookups without a token to any client holding the embedded
// server's token, so serve refuses it there even when the configuration
// was not validated.
func TestServeRefusesPermissionsOnEmbedded(t *testing.T) {
	c := embeddedConfig(t, nil)
	c.Keyrelay.Lookup.NATSAuth = settings.LookupNATSAuthPermissions
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "keyrelay.lookup.nats_auth: permissions needs an external NATS") {
		t.Fatalf("Validate: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := app.Serve(ctx, c, zap.NewNop(), app.ServeOptions{})
	if err == nil || !strings.Contains(err.Error(), "permissions needs an external NATS") {
		t.Fatalf("Serve: %v", err)
	}
}
