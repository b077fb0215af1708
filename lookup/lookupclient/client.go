// Package lookupclient reads secrets from keyrelay's lookup API, over HTTP
// (GET /v1/secrets/{name}) or NATS request-reply. Errors are *Error values
// that match ErrNotFound, ErrUnauthorized, ErrForbidden, ErrBadRequest and
// ErrUnavailable with errors.Is.
package lookupclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Secret is one answer.
type Secret struct {
	Name       string    `json:"name"`
	Scope      string    `json:"scope"`
	TeamID     string    `json:"team_id,omitempty"`
	Value      string    `json:"value"`
	Version    string    `json:"version"`
	Source     string    `json:"source"`
	Generation uint64    `json:"generation,omitempty"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
	// AgeSeconds is how long ago keyrelay read the value from its backend.
	AgeSeconds float64 `json:"age_seconds"`
	// Stale is true when the backend failed and a cached value past its TTL
	// (inside stale_if_error) was served; StaleReason says why.
	Stale       bool   `json:"stale"`
	StaleReason string `json:"stale_reason,omitempty"`
	// ValueEncoding is "base64" for values that are not UTF-8 (Value is
	// then decoded for you).
	ValueEncoding string `json:"value_encoding,omitempty"`
	// Previous is the value the key's last rotation replaced, while its
	// grace period runs (until Previous.Until); nil otherwise.
	Previous *Previous `json:"previous,omitempty"`
}

// Previous is a rotated-out value in its grace period.
type Previous struct {
	Value         string    `json:"value"`
	Version       string    `json:"version"`
	Until         time.Time `json:"until"`
	ValueEncoding string    `json:"value_encoding,omitempty"`
}

// Error is a refused or failed lookup.
type Error struct {
	Status int    `json:"-"`
	Code   string `json:"error"`
	Reason string `json:"reason"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("keyrelay lookup: %d %s: %s", e.Status, e.Code, e.Reason)
}

// Is matches the sentinels by status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == "" && t.Status == e.Status
}

// Sentinels for errors.Is.
var (
	ErrBadRequest   = &Error{Status: 400}
	ErrUnauthorized = &Error{Status: 401}
	ErrForbidden    = &Error{Status: 403}
	ErrNotFound     = &Error{Status: 404}
	ErrUnavailable  = &Error{Status: 503}
)

func decode(status int, body []byte) (*Secret, error) {
	if status != http.StatusOK {
		e := &Error{Status: status}
		if json.Unmarshal(body, e) != nil || e.Code == "" {
			e.Code, e.Reason = "error", strings.TrimSpace(string(body))
		}
		return nil, e
	}
	var s Secret
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("keyrelay lookup: malformed answer: %w", err)
	}
	if s.ValueEncoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(s.Value)
		if err != nil {
			return nil, fmt.Errorf("keyrelay lookup: malformed base64 value")
		}
		s.Value, s.ValueEncoding = string(b), ""
	}
	if p := s.Previous; p != nil && p.ValueEncoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(p.Value)
		if err != nil {
			return nil, fmt.Errorf("keyrelay lookup: malformed base64 value")
		}
		p.Value, p.ValueEncoding = string(b), ""
	}
	return &s, nil
}

// HTTP is a client of the HTTP lookup API.
type HTTP struct {
	// BaseURL is the listener, e.g. http://127.0.0.1:9470.
	BaseURL string
	// Token is the bearer token of a keyrelay.lookup.clients entry.
	Token string
	// Client defaults to a client with a 10 s timeout.
	Client *http.Client
}

var defaultHTTP = &http.Client{Timeout: 10 * time.Second}

// Get reads name in the token's scope.
func (c *HTTP) Get(ctx context.Context, name string) (*Secret, error) {
	return c.get(ctx, name, "")
}

// GetTeam reads name of team, which must be the token's own team.
func (c *HTTP) GetTeam(ctx context.Context, team, name string) (*Secret, error) {
	return c.get(ctx, name, team)
}

func (c *HTTP) get(ctx context.Context, name, team string) (*Secret, error) {
	u := strings.TrimRight(c.BaseURL, "/") + "/v1/secrets/" + escapeName(name)
	if team != "" {
		u += "?team=" + url.QueryEscape(team)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	hc := c.Client
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return decode(resp.StatusCode, body)
}

// escapeName escapes each path segment of name, keeping its slashes.
func escapeName(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// NoServiceReason starts the Reason of the 503 a NATS lookup gets when no
// lookup service listens on its subject (followed by the subject).
const NoServiceReason = "no keyrelay lookup service is listening on "

// NATS is a client of the NATS lookup service.
type NATS struct {
	Conn *nats.Conn
	// Team selects the team subject; empty means the global scope.
	Team string
	// Token is sent as an "Authorization: Bearer" header. The service
	// requires it (the token of a keyrelay.lookup.clients entry whose scope
	// is the subject's) unless it runs with nats_auth: permissions; then a
	// request without one is answered under NATS permissions alone.
	Token string
	// Timeout when ctx has no deadline. Default: 10s.
	Timeout time.Duration
}

// Subject is the request subject for the client's scope.
func (c *NATS) Subject() string {
	if c.Team == "" {
		return "keyrelay.lookup.v1.global"
	}
	return "keyrelay.lookup.v1.team." + c.Team
}

// Get reads name.
func (c *NATS) Get(ctx context.Context, name string) (*Secret, error) {
	body, _ := json.Marshal(struct {
		Name string `json:"name"`
	}{name})
	m := nats.NewMsg(c.Subject())
	m.Data = body
	if c.Token != "" {
		m.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if _, ok := ctx.Deadline(); !ok {
		t := c.Timeout
		if t <= 0 {
			t = 10 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	resp, err := c.Conn.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, &Error{Status: 503, Code: "unavailable", Reason: NoServiceReason + c.Subject()}
		}
		return nil, err
	}
	if code := resp.Header.Get("Nats-Service-Error-Code"); code != "" {
		st, _ := strconv.Atoi(code)
		return decode(st, resp.Data)
	}
	return decode(http.StatusOK, resp.Data)
}
