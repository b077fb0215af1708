package lookup

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// PathPrefix is the HTTP route: GET /v1/secrets/{name}.
const PathPrefix = "/v1/secrets/"

// Server answers lookups over HTTP and NATS for authenticated callers.
type Server struct {
	svc  *Service
	auth *Auth
	log  *zap.Logger
}

// NewServer puts auth in front of svc.
func NewServer(svc *Service, auth *Auth, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{svc: svc, auth: auth, log: log}
}

// Service returns the cache behind the server.
func (s *Server) Service() *Service { return s.svc }

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// ServeHTTP serves GET /v1/secrets/{name}[?team=<team>]. It is meant to be
// the listener's root handler: names are taken from the raw path so that
// "..", "." and encoded slashes reach validation (and a clear 400) rather
// than being cleaned or redirected by a mux.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Cache-Control"] = noStore
	if !strings.HasPrefix(r.URL.Path, PathPrefix) {
		if r.URL.Path == "/healthz" {
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		writeError(w, notFound("no such route; use GET %s{name}", PathPrefix))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h["Allow"] = allowGet
		writeError(w, &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Reason: "use GET"})
		return
	}
	name, err := pathName(r)
	if err != nil {
		s.svc.m.reject(HTTP, err)
		writeError(w, err)
		return
	}
	cred, _, err := s.auth.Authenticate(BearerToken(r.Header.Get("Authorization")))
	if err != nil {
		s.svc.m.reject(HTTP, err)
		h["Www-Authenticate"] = bearerChallenge
		writeError(w, err)
		return
	}
	team := ""
	if r.URL.RawQuery != "" {
		team = r.URL.Query().Get("team")
	}
	scope, err := authorize(cred, team)
	if err != nil {
		s.svc.m.reject(HTTP, err)
		writeError(w, err)
		return
	}
	if name, err = CheckName(scope, name); err != nil {
		s.svc.m.reject(HTTP, err)
		writeError(w, err)
		return
	}
	bp := bodyPool.Get().(*[]byte)
	body, err := s.svc.Lookup(r.Context(), HTTP, scope, name, (*bp)[:0])
	if err != nil {
		bodyPool.Put(bp)
		writeError(w, err)
		return
	}
	h["Content-Type"] = jsonType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	clear(body)
	*bp = body
	bodyPool.Put(bp)
}

var (
	noStore         = []string{"no-store"}
	allowGet        = []string{"GET, HEAD"}
	jsonType        = []string{"application/json"}
	bearerChallenge = []string{`Bearer realm="keyrelay"`}
)

// pathName returns the unescaped name after PathPrefix.
func pathName(r *http.Request) (string, *Error) {
	raw := r.URL.EscapedPath()
	if !strings.HasPrefix(raw, PathPrefix) {
		return "", badRequest("the name must follow %s", PathPrefix)
	}
	raw = raw[len(PathPrefix):]
	if len(raw) > 3*MaxNameLen {
		return "", badRequest("name is longer than %d bytes", MaxNameLen)
	}
	name, err := unescapePath(raw)
	if err != nil {
		return "", badRequest("name is not a valid escaped path")
	}
	return name, nil
}

func unescapePath(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	return url.PathUnescape(s)
}

// writeError writes e as JSON: {"error": code, "reason": ...}.
func writeError(w http.ResponseWriter, e *Error) {
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(e.Status)
	_, _ = w.Write(e.body())
}
