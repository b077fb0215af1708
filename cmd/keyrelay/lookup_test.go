package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/natsconn"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/settings"
)

func TestLookupURL(t *testing.T) {
	tests := map[string]struct {
		addr, want, err string
	}{
		"default":          {addr: settings.DefaultLookupAddr, want: "http://127.0.0.1:9470"},
		"host":             {addr: "10.1.2.3:8080", want: "http://10.1.2.3:8080"},
		"name":             {addr: "lookup.internal:9470", want: "http://lookup.internal:9470"},
		"any IPv4":         {addr: "0.0.0.0:9471", want: "http://127.0.0.1:9471"},
		"any IPv6":         {addr: "[::]:9471", want: "http://[::1]:9471"},
		"empty host":       {addr: ":9471", want: "http://127.0.0.1:9471"},
		"off":              {addr: settings.LookupOff, err: "off"},
		"port chosen at 0": {addr: "127.0.0.1:0", err: "port 0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := lookupURL(settings.LookupConfig{Addr: tc.addr})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q %v, want %q", got, err, tc.want)
			}
		})
	}
}

// TestLookupGetUsesConfigAddr runs `keyrelay --config X lookup get` against
// a real lookup listener on the address X names (not the default port).
func TestLookupGetUsesConfigAddr(t *testing.T) {
	const token = "cli-test-token-team-a"
	svc, err := lookup.New(lookup.Config{}, lookup.LoaderFunc(func(_ context.Context, s lookup.Scope, name string) (*lookup.Secret, error) {
		if s.Team != "team-a" || name != "key-1" {
			return nil, lookup.ErrNotFound
		}
		return &lookup.Secret{Name: name, Value: []byte("sk-from-config-addr"), Version: "1", Source: "local", UpdatedAt: time.Now()}, nil
	}), lookup.NewMetrics(prometheus.NewRegistry()), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	clients := map[string]settings.LookupClient{"team-a": {Team: "team-a", Token: token}}
	auth, err := lookup.NewAuth(clients)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: lookup.NewServer(svc, auth, nil), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()

	cfg := filepath.Join(t.TempDir(), "keyrelay.yaml")
	yaml := "general_settings:\n  key_management_system: local\nkeyrelay:\n  log:\n    level: error\n  lookup:\n" +
		"    addr: " + ln.Addr().String() + "\n    clients:\n      team-a: {team: team-a, token: " + token + "}\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KEYRELAY_TOKEN", token)
	cmd := lookupCmd(&globals{configPath: cfg})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"get", "key-1"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("lookup get: %v (%s)", err, out.String())
	}
	var s struct {
		Value  string `json:"value"`
		TeamID string `json:"team_id"`
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || s.Value != "sk-from-config-addr" || s.TeamID != "team-a" {
		t.Fatalf("answer %q: %v", out.String(), err)
	}
}

// TestReadyMessage: what serve prints on its embedded server says where
// the token is and, exactly, which lookups are served: NATS lookups are off
// there unless keyrelay.lookup.nats turns them on, with a warning then.
func TestReadyMessage(t *testing.T) {
	clients := map[string]settings.LookupClient{"team-a": {Team: "team-a", Token: "ready-message-token-a"}}
	withClients := settings.Default()
	withClients.Keyrelay.Lookup.Clients = clients
	natsOn := settings.Default()
	natsOn.Keyrelay.Lookup.Clients = clients
	on := true
	natsOn.Keyrelay.Lookup.NATS = &on
	natsToken := settings.Default()
	natsToken.Keyrelay.NATS.Token = "configured-nats-token-0123"
	tokenFile := natsconn.TokenFile(settings.Default().Keyrelay.NATS.Embedded)
	tests := map[string]struct {
		c          *settings.Config
		configPath string
		lookupAddr string // "" when HTTP lookups are off
		want       []string
		not        []string
	}{
		"embedded default": {c: settings.Default(), lookupAddr: "127.0.0.1:9470",
			want: []string{"running on its embedded default", "  ./bin/keyrelay confirmations --follow &", "  ./bin/keyrelay dlq list",
				"(data in ./data/nats; clients need the token in " + tokenFile + ")",
				"  lookups:      http://127.0.0.1:9470/v1/secrets/{name} (refused: no clients in keyrelay.lookup.clients); " +
					"not over NATS (off on the embedded server, where every client holding its token could read every reply)\n"},
			not: []string{"--config", "lookup get", "NATS keyrelay.lookup.v1", "every lookup needs"}},
		"with --config": {c: withClients, configPath: "demo.yaml", lookupAddr: "127.0.0.1:9470",
			want: []string{"running with config demo.yaml", "  ./bin/keyrelay --config demo.yaml confirmations --follow &",
				"  ./bin/keyrelay --config demo.yaml publish create --team team-a --key key-1 --alias demo",
				"  ./bin/keyrelay --config demo.yaml dlq list",
				"KEYRELAY_TOKEN=<a client's token> ./bin/keyrelay --config demo.yaml lookup get key-1\n",
				"  lookups:      http://127.0.0.1:9470/v1/secrets/{name} (1 client(s) in keyrelay.lookup.clients; every lookup needs a client's token); not over NATS"},
			not: []string{"embedded default", "\n  ./bin/keyrelay confirmations", "ANSWERED", "NATS keyrelay.lookup.v1", "--nats", "WARNING"}},
		"a path to quote": {c: settings.Default(), configPath: "/tmp/my configs/it's.yaml", lookupAddr: "127.0.0.1:9470",
			want: []string{`./bin/keyrelay --config '/tmp/my configs/it'\''s.yaml' dlq list`}},
		"NATS lookups on, HTTP off": {c: natsOn, configPath: "n.yaml",
			want: []string{"  lookups:      NATS keyrelay.lookup.v1.* (1 client(s) in keyrelay.lookup.clients; every lookup needs a client's token); " +
				"WARNING: keyrelay.lookup.nats is on, and on the embedded server every NATS client holding its token can read every lookup reply",
				"KEYRELAY_TOKEN=<a client's token> ./bin/keyrelay --config n.yaml lookup get --nats --team team-a key-1"},
			not: []string{"not over NATS", "http://127.0.0.1:9470"}},
		"lookups off": {c: settings.Default(), want: []string{"  lookups:      off\n"}, not: []string{"lookup get"}},
		"keyrelay.nats.token": {c: natsToken, lookupAddr: "127.0.0.1:9470",
			want: []string{"(data in ./data/nats; clients need keyrelay.nats.token)"}, not: []string{"client.token"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			msg := readyMessage(tc.c, tc.configPath, "127.0.0.1:9464", tc.lookupAddr)
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(msg, n) {
					t.Errorf("message has %q:\n%s", n, msg)
				}
			}
		})
	}
}

// TestLookupSummaryExternal: on an external NATS, NATS lookups are on by
// default and nats_auth: permissions is said loudly.
func TestLookupSummaryExternal(t *testing.T) {
	clients := map[string]settings.LookupClient{"team-a": {Team: "team-a", Token: "ready-message-token-a"}}
	off := false
	tests := map[string]struct {
		l    settings.LookupConfig
		want string
	}{
		"default": {l: settings.LookupConfig{Clients: clients, NATSAuth: settings.LookupNATSAuthToken},
			want: "http://127.0.0.1:9470/v1/secrets/{name} and NATS keyrelay.lookup.v1.* (1 client(s) in keyrelay.lookup.clients; every lookup needs a client's token)"},
		"NATS off": {l: settings.LookupConfig{Clients: clients, NATS: &off, NATSAuth: settings.LookupNATSAuthToken},
			want: "http://127.0.0.1:9470/v1/secrets/{name} (1 client(s) in keyrelay.lookup.clients; every lookup needs a client's token)"},
		"permissions": {l: settings.LookupConfig{Clients: clients, NATSAuth: settings.LookupNATSAuthPermissions},
			want: "http://127.0.0.1:9470/v1/secrets/{name} and NATS keyrelay.lookup.v1.* (1 client(s) in keyrelay.lookup.clients; " +
				"NATS lookups without a token are ANSWERED (nats_auth: permissions))"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := lookupSummary(tc.l, "127.0.0.1:9470", false); got != tc.want {
				t.Errorf("lookupSummary = %q\nwant            %q", got, tc.want)
			}
		})
	}
}
