package conjurfake

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxVersions is how many versions of a variable Conjur keeps.
const MaxVersions = 20

// Defaults of a new Server's policy loads.
const (
	// DefaultPolicyLoadTime is how long a policy load runs (see
	// SetPolicyLoadTime): long enough for concurrent clients to overlap.
	DefaultPolicyLoadTime = 10 * time.Millisecond
	// DefaultPolicyConflictRetryAfter is the Retry-After (seconds) of a
	// 409 policy_conflict. Conjur draws it from 1..8 to spread retries; the
	// fake sends the smallest, so tests do not wait longer than needed.
	DefaultPolicyConflictRetryAfter = 1
)

// Server is a running fake.
type Server struct {
	// URL is the appliance URL (https://127.0.0.1:port).
	URL string
	// Account is the Conjur account.
	Account string
	// TokenTTL is the lifetime written into issued tokens (default 8m).
	TokenTTL time.Duration

	srv *httptest.Server

	mu       sync.Mutex
	users    map[string]*user
	tokens   map[string]token // by signature
	branches map[string]bool
	vars     map[string]*variable
	authns   int
	fail     map[string]*failure // path prefix -> injected failures
	before   func(*http.Request)
	started  time.Time
	// listMax is api_resource_list_limit_max (see SetListLimitMax).
	listMax int
	// loading counts the policy loads in progress per branch (including
	// HoldPolicyLoad's); loadTime and conflictAfter configure them (see
	// SetPolicyLoadTime, SetPolicyConflictRetryAfter).
	loading       map[string]int
	loadTime      time.Duration
	conflictAfter int
	conflicts     int
}

type user struct {
	apiKey   string
	branches []string // writable/readable branches; "root" = all
}

type failure struct{ status, n int }

type token struct {
	login string
	exp   time.Time
}

type variable struct {
	id          string
	policy      string
	created     time.Time
	annotations map[string]string
	versions    []secretVersion
}

type secretVersion struct {
	n     int
	value []byte
	at    time.Time
}

// New starts a fake for account on a TLS listener on 127.0.0.1. The branch
// "root" always exists. Close it when done.
func New(account string) *Server { return start(account, nil) }

// NewMTLS is New behind mutual TLS: the handshake requires a client
// certificate issued by clientCAs (an appliance behind an mTLS front end).
func NewMTLS(account string, clientCAs *x509.CertPool) *Server { return start(account, clientCAs) }

func start(account string, clientCAs *x509.CertPool) *Server {
	s := &Server{Account: account, TokenTTL: 8 * time.Minute, listMax: DefaultListLimitMax, started: time.Now().UTC(),
		users: map[string]*user{}, tokens: map[string]token{}, branches: map[string]bool{"root": true},
		vars: map[string]*variable{}, fail: map[string]*failure{},
		loading: map[string]int{}, loadTime: DefaultPolicyLoadTime, conflictAfter: DefaultPolicyConflictRetryAfter}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.handle))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshake noise from untrusting clients
	if clientCAs != nil {
		s.srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs, MinVersion: tls.VersionTLS12}
	}
	s.srv.StartTLS()
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// CACertPEM returns the PEM of the server's self-signed certificate.
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// AddUser creates a role login with apiKey that may read and write the
// given policy branches (and everything below them); "root" means all.
func (s *Server) AddUser(login, apiKey string, branches ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[login] = &user{apiKey: apiKey, branches: branches}
}

// AddBranch declares a policy branch (and its parents).
func (s *Server) AddBranch(branch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	parts := strings.Split(branch, "/")
	for i := range parts {
		s.branches[strings.Join(parts[:i+1], "/")] = true
	}
}

// ExpireTokens invalidates every token issued so far (the client still
// believes them valid, as after a server-side key rotation).
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]token{}
}

// Authentications returns how many successful authentications happened.
func (s *Server) Authentications() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authns
}

// FailNext makes the next n requests whose path starts with pathPrefix
// fail with status (and a Conjur error body; 401s have none, as Conjur's).
func (s *Server) FailNext(pathPrefix string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[pathPrefix] = &failure{status: status, n: n}
}

// SetListLimitMax sets the appliance's api_resource_list_limit_max
// (CONJUR_API_RESOURCE_LIST_LIMIT_MAX): a resource listing (not a count)
// asking for more is rejected with 422, and one without a limit gets this
// many. 0 means no maximum, Conjur's own default; New sets
// DefaultListLimitMax, as on an appliance configured with one, so that
// clients are tested against a maximum.
func (s *Server) SetListLimitMax(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listMax = n
}

// SetPolicyLoadTime sets how long a policy load runs: another load of the
// same branch that starts meanwhile gets 409 policy_conflict, and the
// load's changes appear when it ends. 0 applies loads at once and never
// lets two overlap (a fake that hides Conjur's conflicts; keep it for
// tests of something else that cannot afford the window). New sets
// DefaultPolicyLoadTime.
func (s *Server) SetPolicyLoadTime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loadTime = max(d, 0)
}

// SetPolicyConflictRetryAfter sets the Retry-After, in seconds (at least
// 1), of a 409 policy_conflict. New sets DefaultPolicyConflictRetryAfter.
func (s *Server) SetPolicyConflictRetryAfter(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conflictAfter = max(seconds, 1)
}

// HoldPolicyLoad makes branch look as if another client's policy load of
// it were in progress until release is called: loads of the branch get
// 409 policy_conflict meanwhile. release may be called more than once.
func (s *Server) HoldPolicyLoad(branch string) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loading[branch]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.endLoad(branch)
		})
	}
}

// PolicyConflicts returns how many policy loads got 409 policy_conflict.
func (s *Server) PolicyConflicts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflicts
}

func (s *Server) endLoad(branch string) {
	if s.loading[branch]--; s.loading[branch] <= 0 {
		delete(s.loading, branch)
	}
}

// BeforeRequest makes f run at the start of every request, before the
// server handles it (and outside its lock, so f may call the Server's
// methods): tests use it to change the data between two pages of a
// listing. nil removes it.
func (s *Server) BeforeRequest(f func(*http.Request)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before = f
}

// DeleteVariable removes variable id (full id, without account) and its
// versions, bypassing authorization (as another tool would).
func (s *Server) DeleteVariable(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vars, id)
}

// SetVariable declares variable id (full id, without account) in branch,
// with annotations, and adds value as a new version, bypassing
// authorization (as another tool would).
func (s *Server) SetVariable(branch, id string, annotations map[string]string, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vars[id]
	if v == nil {
		v = &variable{id: id, policy: branch, created: time.Now().UTC(), annotations: map[string]string{}}
		s.vars[id] = v
	}
	for k, a := range annotations {
		v.annotations[k] = a
	}
	v.add(value)
}

// Annotations returns a copy of a variable's annotations, nil if missing.
func (s *Server) Annotations(id string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vars[id]
	if v == nil {
		return nil
	}
	out := map[string]string{}
	for k, a := range v.annotations {
		out[k] = a
	}
	return out
}

// Exists reports whether variable id is declared.
func (s *Server) Exists(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vars[id] != nil
}

func (v *variable) add(value []byte) int {
	n := 1
	if len(v.versions) > 0 {
		n = v.versions[len(v.versions)-1].n + 1
	}
	v.versions = append(v.versions, secretVersion{n: n, value: bytes.Clone(value), at: time.Now().UTC()})
	if len(v.versions) > MaxVersions {
		v.versions = append([]secretVersion(nil), v.versions[len(v.versions)-MaxVersions:]...)
	}
	return n
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	before := s.before
	s.mu.Unlock()
	if before != nil {
		before(r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, f := range s.fail {
		if strings.HasPrefix(r.URL.Path, p) {
			if f.n--; f.n <= 0 {
				delete(s.fail, p)
			}
			if f.status == http.StatusUnauthorized {
				w.WriteHeader(f.status)
				return
			}
			writeErr(w, f.status, strings.ToLower(strings.ReplaceAll(http.StatusText(f.status), " ", "_")), "injected failure")
			return
		}
	}
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	if segs[0] == "resources" && (len(segs) == 2 || len(segs) == 3 || len(segs) == 4 && segs[3] == "") {
		// GET /resources/{account} and /resources/{account}/{kind}, with or
		// without a trailing slash (the SDK sends "/resources/{account}/").
		if segs[len(segs)-1] == "" {
			segs = segs[:len(segs)-1]
		}
		s.listResources(w, r, segs)
		return
	}
	if len(segs) < 3 {
		writeErr(w, 404, "not_found", "no route")
		return
	}
	if segs[1] != s.Account {
		writeErr(w, 404, "not_found", "CONJ00007E Account '"+segs[1]+"' not found")
		return
	}
	switch segs[0] {
	case "authn":
		if len(segs) == 4 && segs[3] == "authenticate" && r.Method == http.MethodPost {
			login, _ := url.QueryUnescape(segs[2])
			s.authenticate(w, r, login)
			return
		}
	case "secrets", "resources", "policies":
		if len(segs) < 4 || segs[2] != map[string]string{"secrets": "variable", "resources": "variable", "policies": "policy"}[segs[0]] {
			break
		}
		rest := strings.Join(segs[3:], "/")
		var id string
		var err error
		if segs[0] == "secrets" {
			id, err = url.PathUnescape(rest)
		} else {
			id, err = url.QueryUnescape(rest)
		}
		if err != nil || id == "" {
			writeErr(w, 400, "bad_request", "malformed id")
			return
		}
		login, ok := s.auth(r)
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case segs[0] == "secrets" && r.Method == http.MethodPost:
			s.addSecret(w, r, login, id)
		case segs[0] == "secrets" && r.Method == http.MethodGet:
			s.getSecret(w, r, login, id)
		case segs[0] == "resources" && r.Method == http.MethodGet:
			s.getResource(w, login, id)
		case segs[0] == "policies" && (r.Method == http.MethodPost || r.Method == http.MethodPatch || r.Method == http.MethodPut):
			s.loadPolicy(w, r, login, id)
		default:
			writeErr(w, 405, "method_not_allowed", "method not allowed")
		}
		return
	}
	writeErr(w, 404, "not_found", "no route")
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, login string) {
	body, _ := io.ReadAll(r.Body)
	u := s.users[login]
	if u == nil || string(body) != u.apiKey {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	now := time.Now()
	exp := now.Add(s.TokenTTL)
	sig := make([]byte, 32)
	_, _ = rand.Read(sig)
	prot, _ := json.Marshal(map[string]string{"alg": "conjur.org/slosilo/v2", "kid": "fake"})
	payload, _ := json.Marshal(map[string]any{"sub": login, "iat": now.Unix(), "exp": exp.Unix()})
	sigS := base64.URLEncoding.EncodeToString(sig)
	tok, _ := json.Marshal(map[string]string{
		"protected": base64.StdEncoding.EncodeToString(prot),
		"payload":   base64.StdEncoding.EncodeToString(payload),
		"signature": sigS,
	})
	s.tokens[sigS] = token{login: login, exp: exp}
	s.authns++
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(tok)
}

func (s *Server) auth(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const pre = `Token token="`
	if !strings.HasPrefix(h, pre) || !strings.HasSuffix(h, `"`) {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(h[len(pre) : len(h)-1])
	if err != nil {
		return "", false
	}
	var f map[string]string
	if json.Unmarshal(raw, &f) != nil {
		return "", false
	}
	t, ok := s.tokens[f["signature"]]
	if !ok || time.Now().After(t.exp) {
		return "", false
	}
	return t.login, true
}

// may reports whether login may act on policy branch b.
func (s *Server) may(login, b string) bool {
	u := s.users[login]
	if u == nil {
		return false
	}
	for _, a := range u.branches {
		if a == "root" || a == b || strings.HasPrefix(b, a+"/") {
			return true
		}
	}
	return false
}

func (s *Server) fullID(id string) string { return s.Account + ":variable:" + id }

func (s *Server) visible(w http.ResponseWriter, login, id string) *variable {
	v := s.vars[id]
	if v == nil || !s.may(login, v.policy) {
		// Conjur answers 404 for resources the role cannot see.
		writeErr(w, 404, "not_found", "CONJ00076E Variable "+s.fullID(id)+" is empty or not found.")
		return nil
	}
	return v
}

func (s *Server) addSecret(w http.ResponseWriter, r *http.Request, login, id string) {
	v := s.visible(w, login, id)
	if v == nil {
		return
	}
	body, _ := io.ReadAll(r.Body)
	if len(body) == 0 {
		writeErr(w, 422, "unprocessable_entity", "value can't be blank")
		return
	}
	v.add(body)
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request, login, id string) {
	v := s.visible(w, login, id)
	if v == nil {
		return
	}
	if len(v.versions) == 0 {
		writeErr(w, 404, "not_found", "CONJ00076E Variable "+s.fullID(id)+" is empty or not found.")
		return
	}
	sv := v.versions[len(v.versions)-1]
	if q := r.URL.Query().Get("version"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 {
			writeErr(w, 422, "unprocessable_entity", "version must be a positive integer")
			return
		}
		found := false
		for _, x := range v.versions {
			if x.n == n {
				sv, found = x, true
			}
		}
		if !found {
			writeErr(w, 404, "not_found", "CONJ00076E Variable "+s.fullID(id)+" is empty or not found.")
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(sv.value)
}

func (s *Server) getResource(w http.ResponseWriter, login, id string) {
	v := s.visible(w, login, id)
	if v == nil {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.variableJSON(v))
}

// The JSON of a resource, as Conjur's Resource#as_json writes it.
type (
	annJSON struct {
		Name   string `json:"name"`
		Value  string `json:"value"`
		Policy string `json:"policy"`
	}
	permJSON struct {
		Privilege string `json:"privilege"`
		Role      string `json:"role"`
		Policy    string `json:"policy"`
	}
	secretJSON struct {
		Version   int     `json:"version"`
		ExpiresAt *string `json:"expires_at"`
	}
	resourceJSON struct {
		CreatedAt      string        `json:"created_at"`
		ID             string        `json:"id"`
		Owner          string        `json:"owner"`
		Policy         string        `json:"policy,omitempty"`
		Permissions    []permJSON    `json:"permissions"`
		Annotations    []annJSON     `json:"annotations"`
		Secrets        *[]secretJSON `json:"secrets,omitempty"`
		PolicyVersions *[]any        `json:"policy_versions,omitempty"`
	}
)

func (s *Server) policyID(branch string) string { return s.Account + ":policy:" + branch }

// roleID is the full role id of login ("host/x" is acct:host:x, "bob" is
// acct:user:bob).
func (s *Server) roleID(login string) string {
	if kind, id, ok := strings.Cut(login, "/"); ok {
		return s.Account + ":" + kind + ":" + id
	}
	return s.Account + ":user:" + login
}

// permissions lists the grants on resources of branch: read, execute and
// update for every role given the branch (roles given "root" own
// everything instead, as Conjur's admin does, and are not listed).
func (s *Server) permissions(branch string) []permJSON {
	logins := make([]string, 0, len(s.users))
	for l, u := range s.users {
		for _, b := range u.branches {
			if b != "root" && (b == branch || strings.HasPrefix(branch, b+"/")) {
				logins = append(logins, l)
				break
			}
		}
	}
	sort.Strings(logins)
	out := []permJSON{}
	for _, l := range logins {
		for _, p := range []string{"execute", "read", "update"} {
			out = append(out, permJSON{Privilege: p, Role: s.roleID(l), Policy: s.policyID(branch)})
		}
	}
	return out
}

func (s *Server) variableJSON(v *variable) resourceJSON {
	secrets := []secretJSON{}
	out := resourceJSON{CreatedAt: v.created.Format(timeFormat), ID: s.fullID(v.id), Owner: s.policyID(v.policy),
		Policy: s.policyID(v.policy), Permissions: s.permissions(v.policy), Annotations: []annJSON{}, Secrets: &secrets}
	keys := make([]string, 0, len(v.annotations))
	for k := range v.annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.Annotations = append(out.Annotations, annJSON{k, v.annotations[k], out.Policy})
	}
	for _, x := range v.versions {
		secrets = append(secrets, secretJSON{Version: x.n})
	}
	return out
}

type stmt struct {
	del         bool
	id          string
	annotations map[string]string
}

func parsePolicy(body []byte) ([]stmt, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML: %v", err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	seq := doc.Content[0]
	if seq.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("policy must be a sequence")
	}
	var out []stmt
	for _, n := range seq.Content {
		switch n.Tag {
		case "!variable":
			st := stmt{annotations: map[string]string{}}
			switch n.Kind {
			case yaml.ScalarNode:
				st.id = n.Value
			case yaml.MappingNode:
				for i := 0; i+1 < len(n.Content); i += 2 {
					k, val := n.Content[i], n.Content[i+1]
					switch k.Value {
					case "id":
						if val.Kind != yaml.ScalarNode {
							return nil, fmt.Errorf("id must be a string")
						}
						st.id = val.Value
					case "annotations":
						if val.Kind != yaml.MappingNode {
							return nil, fmt.Errorf("annotations must be a mapping")
						}
						for j := 0; j+1 < len(val.Content); j += 2 {
							if val.Content[j].Kind != yaml.ScalarNode || val.Content[j+1].Kind != yaml.ScalarNode {
								return nil, fmt.Errorf("annotation must be a string")
							}
							st.annotations[val.Content[j].Value] = val.Content[j+1].Value
						}
					default:
						return nil, fmt.Errorf("unknown attribute %q of !variable", k.Value)
					}
				}
			default:
				return nil, fmt.Errorf("bad !variable")
			}
			out = append(out, st)
		case "!delete":
			if n.Kind != yaml.MappingNode || len(n.Content) != 2 || n.Content[0].Value != "record" ||
				n.Content[1].Tag != "!variable" || n.Content[1].Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("!delete supports only record: !variable id")
			}
			out = append(out, stmt{del: true, id: n.Content[1].Value})
		default:
			return nil, fmt.Errorf("unsupported statement %q", n.Tag)
		}
	}
	for _, st := range out {
		if st.id == "" || strings.HasPrefix(st.id, "/") || strings.Contains(st.id, "//") || strings.ContainsAny(st.id, "\n\r\x00") {
			return nil, fmt.Errorf("invalid id")
		}
	}
	return out, nil
}

func (s *Server) loadPolicy(w http.ResponseWriter, r *http.Request, login, branch string) {
	if !s.branches[branch] {
		writeErr(w, 404, "not_found", "CONJ00016E Policy '"+branch+"' not found in account '"+s.Account+"'")
		return
	}
	if !s.may(login, branch) {
		writeErr(w, 403, "forbidden", "CONJ00006E '"+login+"' does not have 'update' privilege on "+s.Account+":policy:"+branch)
		return
	}
	body, _ := io.ReadAll(r.Body)
	stmts, err := parsePolicy(body)
	if err != nil {
		writeErr(w, 422, "validation_failed", err.Error())
		return
	}
	full := func(id string) string {
		if branch == "root" {
			return id
		}
		return branch + "/" + id
	}
	if r.Method == http.MethodPost {
		for _, st := range stmts {
			if st.del {
				writeErr(w, 422, "validation_failed", "deletions are not allowed when appending policy (POST)")
				return
			}
		}
	}
	// Conjur saves a policy version (the next version number of the
	// branch) before it applies the policy, in the load's transaction: a
	// second load of the branch meanwhile violates the version's unique
	// key and is answered 409 policy_conflict with a Retry-After.
	if s.loading[branch] > 0 {
		s.conflicts++
		w.Header().Set("Retry-After", strconv.Itoa(s.conflictAfter))
		writeErr(w, http.StatusConflict, "policy_conflict", "Concurrent policy load in progress, please retry")
		return
	}
	if d := s.loadTime; d > 0 {
		// The load runs outside the server's lock (handle holds it and
		// unlocks it on return), so that other requests, and overlapping
		// loads, are served meanwhile; its changes are applied at the end,
		// as Conjur's transaction commits.
		s.loading[branch]++
		s.mu.Unlock()
		time.Sleep(d)
		s.mu.Lock()
		s.endLoad(branch)
	}
	keep := map[string]bool{}
	for _, st := range stmts {
		id := full(st.id)
		if st.del {
			delete(s.vars, id)
			continue
		}
		keep[id] = true
		v := s.vars[id]
		if v == nil {
			v = &variable{id: id, policy: branch, created: time.Now().UTC(), annotations: map[string]string{}}
			s.vars[id] = v
		}
		for k, a := range st.annotations {
			if _, exists := v.annotations[k]; exists && r.Method == http.MethodPost {
				continue // append mode does not change existing annotations
			}
			v.annotations[k] = a
		}
	}
	if r.Method == http.MethodPut {
		for id, v := range s.vars {
			if v.policy == branch && !keep[id] {
				delete(s.vars, id)
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(`{"created_roles":{},"version":1}`))
}
