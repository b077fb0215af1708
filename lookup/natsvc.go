package lookup

import (
	"context"
	"strconv"
	"strings"
	"time"

	gojson "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/keyrelay/keyrelay/events"
)

// NATS subjects of the lookup service. A request's payload is
// {"name": "<name>"} (or the bare name); the reply is the HTTP body, or a
// micro error whose code is the HTTP status.
const (
	ServiceName    = "keyrelay-lookup"
	SubjectPrefix  = "keyrelay.lookup.v1"
	TeamSubject    = SubjectPrefix + ".team" // .<team>
	GlobalSubject  = SubjectPrefix + ".global"
	serviceVersion = "1.0.0"
)

// TeamSubjectFor is the request subject of team's lookups. Grant a team's
// NATS user publish permission on its own subject only (and subscribe on
// its inboxes); with NATSOptions.PermissionsOnly that is the only access
// control.
func TeamSubjectFor(team string) string { return TeamSubject + "." + team }

// NATSOptions configure the NATS service.
type NATSOptions struct {
	// PermissionsOnly answers a request without an Authorization header
	// in the scope of its subject: NATS subject permissions are then the
	// only access control (keyrelay.lookup.nats_auth: permissions). A token,
	// when sent, is still checked. Default false: every request must carry
	// "Authorization: Bearer <token>" of a configured client whose scope is
	// the subject's, exactly as over HTTP, and with no client configured
	// every request is refused. Never on a server without subject
	// permissions, such as keyrelay's embedded one (settings refuses it).
	PermissionsOnly bool
	// Timeout bounds one request's loads. Default: 10s.
	Timeout time.Duration
}

// ServeNATS registers the lookup service on nc (queue group "q": instances
// share requests). Stop the returned service to remove it.
func (s *Server) ServeNATS(nc *nats.Conn, o NATSOptions) (micro.Service, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        ServiceName,
		Version:     serviceVersion,
		Description: "keyrelay read-through secret lookups",
	})
	if err != nil {
		return nil, err
	}
	g := svc.AddGroup(SubjectPrefix)
	h := &natsHandler{s: s, o: o, nc: nc}
	if err := g.AddEndpoint("team", micro.HandlerFunc(h.team), micro.WithEndpointSubject("team.*")); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	if err := g.AddEndpoint("global", micro.HandlerFunc(h.global), micro.WithEndpointSubject("global")); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

type natsHandler struct {
	s  *Server
	o  NATSOptions
	nc *nats.Conn
}

func (h *natsHandler) team(req micro.Request) {
	team := req.Subject()[len(TeamSubject)+1:]
	if err := events.ValidateID("team", team); err != nil {
		h.reject(req, badRequest("subject: %v", err))
		return
	}
	h.serve(req, Scope{Team: team})
}

func (h *natsHandler) global(req micro.Request) { h.serve(req, Scope{Global: true}) }

// serve answers inline from the cache, and in a goroutine of its own when
// the backend must be asked, so one slow load never holds up the
// subscription's other requests.
func (h *natsHandler) serve(req micro.Request, scope Scope) {
	if tok := BearerToken(req.Headers().Get("Authorization")); tok != "" || !h.o.PermissionsOnly {
		cred, _, err := h.s.auth.Authenticate(tok)
		if err != nil {
			h.reject(req, err)
			return
		}
		if cred != scope {
			h.reject(req, forbidden("the token is not valid for %s", scope))
			return
		}
	}
	name, err := requestName(req.Data())
	if err == nil {
		name, err = CheckName(scope, name)
	}
	if err != nil {
		h.reject(req, err)
		return
	}
	bp := bodyPool.Get().(*[]byte)
	if body, err, done := h.s.svc.Cached(NATS, scope, name, (*bp)[:0]); done {
		h.reply(req, bp, body, err)
		return
	}
	reply := req.Reply()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.o.Timeout)
		defer cancel()
		body, err := h.s.svc.Lookup(ctx, NATS, scope, name, (*bp)[:0])
		h.replyAsync(reply, bp, body, err)
	}()
}

// replyAsync answers from the lookup's own goroutine. It publishes to the
// reply subject itself, in the micro error format: the micro.Request must
// not be touched once its handler returned (micro reads its error state
// for the endpoint's stats then; the race detector caught it). Errors
// answered here are therefore not in the endpoint's error stats; the
// lookup metrics count them.
func (h *natsHandler) replyAsync(reply string, bp *[]byte, body []byte, err *Error) {
	m := &nats.Msg{Subject: reply, Data: body}
	if err != nil {
		m.Data = err.body()
		m.Header = nats.Header{micro.ErrorHeader: {err.Reason}, micro.ErrorCodeHeader: {strconv.Itoa(err.Status)}}
	}
	if reply != "" {
		_ = h.nc.PublishMsg(m)
	}
	clear(body)
	*bp = body[:0]
	bodyPool.Put(bp)
}

func (h *natsHandler) reply(req micro.Request, bp *[]byte, body []byte, err *Error) {
	if err != nil {
		h.fail(req, err)
	} else {
		_ = req.Respond(body)
	}
	clear(body)
	*bp = body[:0]
	bodyPool.Put(bp)
}

// reject answers a request refused before the cache (counted as such).
func (h *natsHandler) reject(req micro.Request, e *Error) {
	h.s.svc.m.reject(NATS, e)
	h.fail(req, e)
}

// fail answers with e as a micro error: the HTTP status as its code.
func (h *natsHandler) fail(req micro.Request, e *Error) {
	_ = req.Error(strconv.Itoa(e.Status), e.Reason, e.body())
}

// requestName reads {"name": ...} or a bare name.
func requestName(data []byte) (string, *Error) {
	if len(data) > 0 && data[0] == '{' {
		var r struct {
			Name string `json:"name"`
		}
		if err := gojson.Unmarshal(data, &r); err != nil {
			return "", badRequest("request is not {\"name\": \"...\"}")
		}
		return r.Name, nil
	}
	if len(data) > 4*MaxNameLen {
		return "", badRequest("name is longer than %d bytes", MaxNameLen)
	}
	return strings.TrimSpace(string(data)), nil
}
