package lookup_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
)

// natsAuth gives each team a NATS user that may only publish lookups on
// its own subject: with nats_auth: permissions, NATS permissions are the
// access control.
const natsAuth = `
authorization {
  users = [
    {user: keyrelay, password: keyrelay-pass}
    {user: team_a, password: a-pass, permissions: {publish: ["keyrelay.lookup.v1.team.team-a"], subscribe: ["_INBOX.>"]}}
    {user: team_b, password: b-pass, permissions: {publish: ["keyrelay.lookup.v1.team.team-b"], subscribe: ["_INBOX.>"]}}
  ]
}`

// TestNATSPermissionsOnly is the explicit opt-in (nats_auth:
// permissions): requests without a token are answered in their subject's
// scope, and NATS permissions keep teams apart.
func TestNATSPermissionsOnly(t *testing.T) {
	f := newFixture(t, fixtureOptions{natsConf: natsAuth, natsOpts: lookup.NATSOptions{PermissionsOnly: true}})
	f.write(events.KeyCreated, "team-a", "a-key", "sk-nats-a")
	f.write(events.KeyCreated, "team-b", "b-key", "sk-nats-b")

	connect := func(user, pass string) *nats.Conn {
		nc, err := nats.Connect(f.nats.URL, nats.UserInfo(user, pass), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ncA, ncB := connect("team_a", "a-pass"), connect("team_b", "b-pass")
	ctx := context.Background()

	a := &lookupclient.NATS{Conn: ncA, Team: "team-a", Timeout: 2 * time.Second}
	s, err := a.Get(ctx, "a-key")
	if err != nil || s.Value != "sk-nats-a" || s.TeamID != "team-a" {
		t.Fatalf("own key over NATS: %+v %v", s, err)
	}
	// The same key id asked for in team A's scope is not team B's.
	if _, err := a.Get(ctx, "b-key"); !errors.Is(err, lookupclient.ErrNotFound) {
		t.Fatalf("team-b key id in team-a scope: %v", err)
	}
	// Team A's user may not even publish to team B's subject.
	intruder := &lookupclient.NATS{Conn: ncA, Team: "team-b", Timeout: 500 * time.Millisecond}
	if s, err := intruder.Get(ctx, "b-key"); err == nil {
		t.Fatalf("team_a read team-b's key over NATS: %+v", s)
	}
	b := &lookupclient.NATS{Conn: ncB, Team: "team-b", Timeout: 2 * time.Second}
	if s, err := b.Get(ctx, "b-key"); err != nil || s.Value != "sk-nats-b" {
		t.Fatalf("team-b: %+v %v", s, err)
	}
	// Bad input over NATS: a clear 400.
	if _, err := a.Get(ctx, "../etc"); !errors.Is(err, lookupclient.ErrBadRequest) {
		t.Fatalf("bad name over NATS: %v", err)
	}
	// A token on the request is checked against the subject's scope (the
	// privileged connection could otherwise ask on any subject).
	priv := &lookupclient.NATS{Conn: f.nc, Team: "team-b", Token: tokenA, Timeout: 2 * time.Second}
	if _, err := priv.Get(ctx, "b-key"); !errors.Is(err, lookupclient.ErrForbidden) {
		t.Fatalf("team-a token on team-b subject: %v", err)
	}
	priv.Token = "not-a-token-at-all-xx"
	if _, err := priv.Get(ctx, "b-key"); !errors.Is(err, lookupclient.ErrUnauthorized) {
		t.Fatalf("bad token over NATS: %v", err)
	}
	priv.Token = tokenB
	if s, err := priv.Get(ctx, "b-key"); err != nil || s.Value != "sk-nats-b" {
		t.Fatalf("team-b token: %+v %v", s, err)
	}
	if got := f.counter("keyrelay_lookup_requests_total", map[string]string{"transport": "nats", "outcome": "hit"}); got < 1 {
		t.Fatalf("nats hits = %v", got)
	}
}

func TestHTTPClient(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.write(events.KeyCreated, "team-a", "k", "sk-client")
	c := &lookupclient.HTTP{BaseURL: f.http.URL, Token: tokenA}
	s, err := c.Get(context.Background(), "k")
	if err != nil || s.Value != "sk-client" || s.Stale {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := c.GetTeam(context.Background(), "team-b", "k"); !errors.Is(err, lookupclient.ErrForbidden) {
		t.Fatalf("other team: %v", err)
	}
	if _, err := c.Get(context.Background(), "missing"); !errors.Is(err, lookupclient.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	c.Token = "wrong-token-wrong-token"
	if _, err := c.Get(context.Background(), "k"); !errors.Is(err, lookupclient.ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
}
