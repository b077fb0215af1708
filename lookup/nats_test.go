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
// its own subject and only subscribe to inboxes of its own (as
// docs/lookup.md says: with "_INBOX.>" a team could read every other
// team's replies): with nats_auth: permissions, NATS permissions are the
// access control. Team clients connect with their inbox prefix
// (teamInbox).
const natsAuth = `
authorization {
  users = [
    {user: keyrelay, password: keyrelay-pass}
    {user: team_a, password: a-pass, permissions: {publish: ["keyrelay.lookup.v1.team.team-a"], subscribe: ["_INBOX_team_a.>"]}}
    {user: team_b, password: b-pass, permissions: {publish: ["keyrelay.lookup.v1.team.team-b"], subscribe: ["_INBOX_team_b.>"]}}
  ]
}`

// teamInbox is the inbox prefix natsAuth lets user subscribe to.
func teamInbox(user string) string { return "_INBOX_" + user }

// connectTeam connects as a natsAuth team user with its inbox prefix;
// asynchronous errors (permission violations) go to errs when it is set.
func connectTeam(t *testing.T, url, user, pass string, errs chan<- error) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(user, pass), nats.CustomInboxPrefix(teamInbox(user)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errs != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestNATSPermissionsOnly is the explicit opt-in (nats_auth:
// permissions): requests without a token are answered in their subject's
// scope, and NATS permissions keep teams apart.
func TestNATSPermissionsOnly(t *testing.T) {
	f := newFixture(t, fixtureOptions{natsConf: natsAuth, natsOpts: lookup.NATSOptions{PermissionsOnly: true}})
	f.write(events.KeyCreated, "team-a", "a-key", "sk-nats-a")
	f.write(events.KeyCreated, "team-b", "b-key", "sk-nats-b")

	ncA, ncB := connectTeam(t, f.nats.URL, "team_a", "a-pass", nil), connectTeam(t, f.nats.URL, "team_b", "b-pass", nil)
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

// TestNATSRepliesStayInTheirTeam: under nats_auth: permissions with
// per-team inbox prefixes, team B cannot read team A's lookup replies:
// subscribing to every inbox ("_INBOX.>") or to A's is refused and
// receives nothing, while A's lookups are answered on its own prefix.
func TestNATSRepliesStayInTheirTeam(t *testing.T) {
	f := newFixture(t, fixtureOptions{natsConf: natsAuth, natsOpts: lookup.NATSOptions{PermissionsOnly: true}})
	const value = "sk-nats-private-a"
	f.write(events.KeyCreated, "team-a", "a-key", value)
	ncA := connectTeam(t, f.nats.URL, "team_a", "a-pass", nil)
	errsB := make(chan error, 8)
	ncB := connectTeam(t, f.nats.URL, "team_b", "b-pass", errsB)

	tests := map[string]string{"every inbox": "_INBOX.>", "team A's inboxes": teamInbox("team_a") + ".>", "every subject": ">"}
	subs := map[string]*nats.Subscription{}
	for name, subject := range tests {
		sub, err := ncB.SubscribeSync(subject)
		if err != nil {
			continue // refused at once: nothing to receive
		}
		subs[name] = sub
	}
	if err := ncB.Flush(); err != nil {
		t.Fatal(err)
	}

	a := &lookupclient.NATS{Conn: ncA, Team: "team-a", Timeout: 2 * time.Second}
	for range 3 {
		if s, err := a.Get(context.Background(), "a-key"); err != nil || s.Value != value {
			t.Fatalf("team A over NATS with its inbox prefix: %+v %v", s, err)
		}
	}
	for name, sub := range subs {
		if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
			t.Fatalf("team B's subscription to %s received a message on %s (%d bytes)", name, m.Subject, len(m.Data))
		}
	}
	for range len(subs) {
		select {
		case err := <-errsB:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("team B's subscription: %v, want a permissions violation", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("team B's subscriptions to inboxes not its own were not refused")
		}
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
