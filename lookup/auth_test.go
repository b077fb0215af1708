package lookup_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
)

// accessSetup is one way of configuring who may read: with or without
// lookup clients, and NATS lookups needing tokens (the default) or NATS
// permissions as the only control (the explicit opt-in).
type accessSetup struct {
	noClients, permissionsOnly bool
}

func (s accessSetup) String() string {
	n := "clients"
	if s.noClients {
		n = "no clients"
	}
	if s.permissionsOnly {
		return n + ", nats_auth permissions"
	}
	return n + ", nats_auth token"
}

// want is a case's expected status in each setup, in the order of
// accessSetups.
type want [4]int

var accessSetups = [4]accessSetup{
	{},
	{noClients: true},
	{permissionsOnly: true},
	{noClients: true, permissionsOnly: true},
}

const accessValue = "sk-access-b-value"

// TestAccessControl asks for team-b's key over both transports with no
// token, a wrong token, another scope's token and the right token, with
// and without configured clients, and with NATS tokens required (the
// default) or NATS permissions as the only control. The NATS connection
// used may publish on every subject, as an intruder with access to the
// NATS account could: only the token keeps it out.
func TestAccessControl(t *testing.T) {
	const (
		ok     = http.StatusOK
		unauth = http.StatusUnauthorized
		forbid = http.StatusForbidden
		nf     = http.StatusNotFound
	)
	type tcase struct {
		name     string
		nats     bool
		subject  string // NATS: team of the subject, "" for global
		query    string // HTTP: ?team=
		token    string
		key      string
		statuses want // clients, no clients, permissions+clients, permissions+no clients
	}
	cases := []tcase{
		{name: "http no token", token: "", key: "b-key", statuses: want{unauth, unauth, unauth, unauth}},
		{name: "http wrong token", token: "not-a-token-at-all-xx", key: "b-key", statuses: want{unauth, unauth, unauth, unauth}},
		{name: "http other team's token", token: tokenA, query: "team-b", key: "b-key", statuses: want{forbid, unauth, forbid, unauth}},
		{name: "http global token", token: tokenGlobal, query: "team-b", key: "b-key", statuses: want{forbid, unauth, forbid, unauth}},
		{name: "http right token", token: tokenB, key: "b-key", statuses: want{ok, unauth, ok, unauth}},

		{name: "nats no token", nats: true, subject: "team-b", key: "b-key", statuses: want{unauth, unauth, ok, ok}},
		{name: "nats wrong token", nats: true, subject: "team-b", token: "not-a-token-at-all-xx", key: "b-key", statuses: want{unauth, unauth, unauth, unauth}},
		{name: "nats other team's token", nats: true, subject: "team-b", token: tokenA, key: "b-key", statuses: want{forbid, unauth, forbid, unauth}},
		{name: "nats global token on a team subject", nats: true, subject: "team-b", token: tokenGlobal, key: "b-key", statuses: want{forbid, unauth, forbid, unauth}},
		{name: "nats right token", nats: true, subject: "team-b", token: tokenB, key: "b-key", statuses: want{ok, unauth, ok, unauth}},
		{name: "nats global no token", nats: true, key: "SOME_NAME", statuses: want{unauth, unauth, nf, nf}},
		{name: "nats global team token", nats: true, token: tokenB, key: "SOME_NAME", statuses: want{forbid, unauth, forbid, unauth}},
		{name: "nats global right token", nats: true, token: tokenGlobal, key: "SOME_NAME", statuses: want{nf, unauth, nf, unauth}},
	}
	for i, setup := range accessSetups {
		t.Run(setup.String(), func(t *testing.T) {
			f := newFixture(t, fixtureOptions{noClients: setup.noClients, natsOpts: lookup.NATSOptions{PermissionsOnly: setup.permissionsOnly}})
			if c := f.write(events.KeyCreated, "team-b", "b-key", accessValue); c.Status != events.StatusStored {
				t.Fatalf("confirmation %+v", c)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					var status int
					var reason, value string
					if tc.nats {
						status, reason, value = f.natsGet(tc.subject, tc.token, tc.key)
					} else {
						path := "/v1/secrets/" + tc.key
						if tc.query != "" {
							path += "?team=" + tc.query
						}
						var body map[string]any
						status, body = f.get(tc.token, path)
						reason, _ = body["reason"].(string)
						value, _ = body["value"].(string)
					}
					if want := tc.statuses[i]; status != want {
						t.Fatalf("status %d (%s), want %d", status, reason, want)
					}
					if status == ok && value != accessValue {
						t.Fatalf("answered without the value")
					}
					if status != ok && value != "" {
						t.Fatalf("status %d carries a value", status)
					}
					// Without clients, a token-checked request says why.
					if setup.noClients && status == unauth && reason != lookup.NoClientsReason {
						t.Fatalf("reason %q, want %q", reason, lookup.NoClientsReason)
					}
				})
			}
			// Refusals are counted per transport.
			if setup.noClients {
				for _, tr := range []string{"http", "nats"} {
					if got := f.counter("keyrelay_lookup_rejected_total", map[string]string{"transport": tr, "reason": "unauthorized"}); got < 1 {
						t.Errorf("%s unauthorized rejections = %v", tr, got)
					}
				}
			}
		})
	}
}

// natsGet asks over the fixture's privileged connection (it may publish
// on any subject); team "" is the global subject. It returns the status,
// the refusal's reason and the value.
func (f *fixture) natsGet(team, token, name string) (int, string, string) {
	f.t.Helper()
	c := &lookupclient.NATS{Conn: f.nc, Team: team, Token: token, Timeout: 5 * time.Second}
	s, err := c.Get(context.Background(), name)
	if err != nil {
		var e *lookupclient.Error
		if !errors.As(err, &e) {
			f.t.Fatalf("NATS lookup of %s: %v", name, err)
		}
		return e.Status, e.Reason, ""
	}
	return http.StatusOK, "", s.Value
}
