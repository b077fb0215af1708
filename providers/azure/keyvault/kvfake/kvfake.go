package kvfake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of a new Server.
const (
	DefaultTenant   = "00000000-0000-0000-0000-0000000000aa"
	DefaultResource = "https://vault.azure.net"
	// PageSize is how many versions one list page holds.
	PageSize = 25
	// MaxValueLength is Key Vault's limit on a secret value (25 KiB).
	MaxValueLength = 25 * 1024
	// MaxTags is Key Vault's limit on tags per secret.
	MaxTags = 15
	// DefaultTokenLifetime is the expires_in of issued tokens.
	DefaultTokenLifetime = 3599 * time.Second
	// DefaultDeleteDelay, DefaultRecoverDelay and DefaultPurgeDelay are a
	// new Server's DeleteDelay, RecoverDelay and PurgeDelay: Key Vault
	// completes deletes, recoveries and purges asynchronously, in seconds;
	// the fake takes a fraction of that, so that tests stay fast and code
	// relying on an instant completion still fails. Server.Instant (or
	// setting a delay to 0) opts out.
	DefaultDeleteDelay  = 200 * time.Millisecond
	DefaultRecoverDelay = 200 * time.Millisecond
	DefaultPurgeDelay   = 300 * time.Millisecond
)

// TokenFault is an injected failure of the identity endpoints (metadata
// and token): the next Times requests get Status with an Entra ID error
// body (Error, default "temporarily_unavailable", and Code), or, with
// Drop, a closed connection and no HTTP response at all.
type TokenFault struct {
	Status int
	Error  string
	// Code is the AADSTS error code in the body. Default: 7000215
	// (invalid client secret) for Error "invalid_client", else 90033 (a
	// transient error, "try again").
	Code  int
	Drop  bool
	Times int
}

// aadsts are the descriptions of the AADSTS codes the fake sends.
var aadsts = map[int]string{
	7000215: "Invalid client secret provided.",
	90033:   "A transient error has occurred. Please try again.",
}

type tokenInfo struct {
	notBefore, expires time.Time
}

var nameRE = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)

// Fault is an injected failure: the next Times requests matching Method
// (empty: any) and path prefix PathPrefix (empty: any) after
// authentication get Status with Key Vault error Code and, when set, a
// Retry-After header.
type Fault struct {
	Method     string
	PathPrefix string
	Status     int
	Code       string
	RetryAfter string
	Times      int
	// Land serves the request first and then answers with the fault, as
	// when Key Vault commits a write but the response is lost (a 5xx from
	// a gateway, a reset connection): the client sees a failure of a
	// write that happened.
	Land bool
}

type version struct {
	id          string
	value       string
	contentType string
	tags        map[string]string
	enabled     bool
	created     int64
	updated     int64
}

type secret struct {
	name     string
	versions []*version // oldest first; the last is current
}

type deletedSecret struct {
	s           *secret
	deletedAt   time.Time
	purgeableAt time.Time
}

// Server is the fake vault. Its exported fields may be set before the
// first request.
type Server struct {
	// URL is the vault URL (https://127.0.0.1:port).
	URL string
	// Tenant and Resource are announced in the bearer challenge.
	Tenant   string
	Resource string
	// Token, when set, is the only bearer token accepted.
	Token string
	// PurgeProtection makes purges fail with 403 as on a vault with purge
	// protection enabled.
	PurgeProtection bool
	// RecoverDelay is how long a recovery takes to finish, as Key Vault
	// recovers asynchronously: meanwhile the secret reads 404 and Set
	// Secret answers 409 Conflict with inner error ObjectIsBeingRecovered.
	// New sets DefaultRecoverDelay; 0 recovers at once.
	RecoverDelay time.Duration
	// DeleteDelay is how long a delete takes to finish, as Key Vault
	// deletes asynchronously: meanwhile Get Secret and Get Deleted Secret
	// answer 404, and Set Secret, recover and purge answer 409 Conflict
	// with inner error ObjectIsBeingDeleted ("currently being deleted").
	// New sets DefaultDeleteDelay; 0 completes deletes at once.
	DeleteDelay time.Duration
	// PurgeDelay is how long a purge takes to finish, as Key Vault purges
	// asynchronously: meanwhile the name is neither a secret nor a deleted
	// secret (Get Secret and Get Deleted Secret answer 404) but cannot be
	// written either (Set Secret answers 409 Conflict with inner error
	// ObjectIsBeingDeleted). Key Vault takes a few seconds; New sets
	// DefaultPurgeDelay; 0 purges at once.
	PurgeDelay time.Duration
	// ListPageSize is how many secrets a page of Get Secrets holds when
	// the request has no maxresults. Default (0): PageSize, Key Vault's 25.
	ListPageSize int

	// ClientID and ClientSecret, when set, are the only client
	// credentials the fake token endpoint accepts.
	ClientID     string
	ClientSecret string
	// TokenLifetime is how long issued tokens are valid (expires_in).
	// Default: DefaultTokenLifetime.
	TokenLifetime time.Duration

	srv        *httptest.Server
	mu         sync.Mutex
	secrets    map[string]*secret
	deleted    map[string]*deletedSecret
	purging    map[string]time.Time // name -> end of its purge (PurgeDelay)
	readyAt    map[string]time.Time
	faults     []*Fault
	tokFaults  []*TokenFault
	issued     map[string]tokenInfo
	revoked    map[string]bool
	clock      time.Duration
	challenged int
	tokens     int
	requests   int
	apiVersion string
	quota      quotaState        // see EnforceQuotas
	keys       map[string]*kvKey // the keys API, keys.go
}

// New starts a fake vault on a TLS listener on 127.0.0.1. Close it when done.
func New() *Server {
	s := &Server{
		Tenant:       DefaultTenant,
		Resource:     DefaultResource,
		DeleteDelay:  DefaultDeleteDelay,
		RecoverDelay: DefaultRecoverDelay,
		PurgeDelay:   DefaultPurgeDelay,
		secrets:      map[string]*secret{},
		deleted:      map[string]*deletedSecret{},
		purging:      map[string]time.Time{},
		readyAt:      map[string]time.Time{},
		issued:       map[string]tokenInfo{},
		revoked:      map[string]bool{},
	}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Instant makes deletes, recoveries and purges complete at once (sets
// DeleteDelay, RecoverDelay and PurgeDelay to 0), unlike Key Vault: for
// tests of something else that must not wait for them. Call it before the
// first request.
func (s *Server) Instant() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.DeleteDelay, s.RecoverDelay, s.PurgeDelay = 0, 0, 0
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Client returns an HTTP client trusting the server's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// CertPEM returns the server's certificate, PEM-encoded, for a CA bundle.
func (s *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// WriteCABundle writes CertPEM to a file in dir and returns its path.
func (s *Server) WriteCABundle(dir string) (string, error) {
	p := filepath.Join(dir, "kvfake-ca.pem")
	return p, os.WriteFile(p, s.CertPEM(), 0o600)
}

// Inject queues a fault.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Times <= 0 {
		f.Times = 1
	}
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	s.faults = append(s.faults, &f)
}

// ClearFaults drops every queued fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// InjectTokenFault queues a failure of the identity endpoints.
func (s *Server) InjectTokenFault(f TokenFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Times <= 0 {
		f.Times = 1
	}
	if f.Status == 0 {
		f.Status = http.StatusServiceUnavailable
	}
	if f.Error == "" {
		f.Error = "temporarily_unavailable"
	}
	s.tokFaults = append(s.tokFaults, &f)
}

// ClearTokenFaults drops every queued token endpoint fault.
func (s *Server) ClearTokenFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokFaults = nil
}

// RevokeTokens makes the vault reject every token issued so far, and the
// static Token, as it rejects a token after a credential reset or a
// signing-key rollover: the next request with one gets the 401 bearer
// challenge. Tokens issued afterwards are accepted. It returns how many
// tokens it revoked.
func (s *Server) RevokeTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.issued)
	for t := range s.issued {
		s.revoked[t] = true
	}
	s.issued = map[string]tokenInfo{}
	if s.Token != "" && !s.revoked[s.Token] {
		s.revoked[s.Token] = true
		n++
	}
	return n
}

// AdvanceClock moves the fake's clock (token issue and validation) by d,
// as a skew between the client's clock and Entra ID's and Key Vault's
// does: advanced past TokenLifetime, tokens a client still holds are
// expired for the vault.
func (s *Server) AdvanceClock(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock += d
}

func (s *Server) now() time.Time { return time.Now().Add(s.clock) }

// checkToken returns "" for a token the vault accepts, else the message
// of the 401 challenge, as Key Vault words it.
func (s *Server) checkToken(tok string) string {
	if s.revoked[tok] {
		return "AKV10022: Invalid audience or token."
	}
	if s.Token != "" && tok == s.Token {
		return ""
	}
	ti, ok := s.issued[tok]
	switch {
	case !ok:
		return "AKV10022: Invalid audience or token."
	case s.now().Before(ti.notBefore):
		return "Token not yet valid."
	case !s.now().Before(ti.expires):
		return "[TokenExpired] Error validating token: 'S2S12086'."
	}
	return ""
}

// Challenged returns how many requests got the 401 bearer challenge.
func (s *Server) Challenged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.challenged
}

// TokensIssued returns how many tokens the fake token endpoint issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens
}

// Requests returns how many requests were authorized.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// APIVersion returns the api-version of the last request.
func (s *Server) APIVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiVersion
}

// SecretState reports whether name exists ("active"), is soft-deleted
// ("deleted"), is being purged ("purging", see PurgeDelay) or is unknown
// (""), and how many versions it has.
func (s *Server) SecretState(name string) (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := strings.ToLower(name)
	if sec, ok := s.secrets[k]; ok {
		return "active", len(sec.versions)
	}
	if d, ok := s.deleted[k]; ok {
		return "deleted", len(d.s.versions)
	}
	if s.isPurging(k) {
		return "purging", 0
	}
	return "", 0
}

// isPurging reports whether the purge of name k is still in progress.
func (s *Server) isPurging(k string) bool {
	t, ok := s.purging[k]
	if ok && !time.Now().Before(t) {
		delete(s.purging, k)
		ok = false
	}
	return ok
}

// Names lists the active secret names (as first written), sorted.
func (s *Server) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sec := range s.secrets {
		out = append(out, sec.name)
	}
	sort.Strings(out)
	return out
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// writeInnerErr writes Key Vault's error with an inner error code, as for
// a disabled secret: {"error":{"code":"Forbidden","message":...,
// "innererror":{"code":"SecretDisabled"}}}.
func writeInnerErr(w http.ResponseWriter, status int, code, inner, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg,
		"innererror": map[string]string{"code": inner}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) challenge(w http.ResponseWriter, msg string) {
	s.challenged++
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, s.Tenant, s.Resource))
	writeErr(w, http.StatusUnauthorized, "Unauthorized", msg)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.identity(w, r) {
		return
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		s.challenge(w, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		s.challenge(w, "AKV10022: Invalid audience or token.")
		return
	}
	if msg := s.checkToken(tok); msg != "" {
		s.challenge(w, msg)
		return
	}
	s.requests++
	av := r.URL.Query().Get("api-version")
	if av == "" {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The request is missing the api-version query parameter.")
		return
	}
	s.apiVersion = av
	if s.throttle(w, r) {
		return
	}
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasPrefix(r.URL.Path, f.PathPrefix) {
			f.Times--
			if f.Times <= 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			code := f.Code
			if code == "" {
				code = http.StatusText(f.Status)
			}
			if f.Land {
				s.route(httptest.NewRecorder(), r)
			}
			writeErr(w, f.Status, code, "injected fault")
			return
		}
	}
	s.route(w, r)
}

// route serves an authenticated request.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	base := "https://" + r.Host
	switch {
	case len(parts) == 1 && parts[0] == "secrets" && r.Method == http.MethodGet:
		s.listSecrets(w, r, base)
	case len(parts) >= 2 && parts[0] == "secrets":
		name := parts[1]
		if !nameRE.MatchString(name) {
			writeErr(w, http.StatusBadRequest, "BadParameter", "The request URI contains an invalid name: "+name)
			return
		}
		ver := ""
		if len(parts) >= 3 {
			ver = parts[2]
		}
		if len(parts) > 3 {
			writeErr(w, http.StatusNotFound, "NotFound", "no such resource")
			return
		}
		switch {
		case r.Method == http.MethodPut && ver == "":
			s.set(w, r, base, name)
		case r.Method == http.MethodGet && ver == "versions":
			s.listVersions(w, r, base, name)
		case r.Method == http.MethodGet:
			s.get(w, base, name, ver)
		case r.Method == http.MethodPatch:
			s.update(w, r, base, name, ver)
		case r.Method == http.MethodDelete && ver == "":
			s.delete(w, base, name)
		default:
			writeErr(w, http.StatusMethodNotAllowed, "BadParameter", "method not allowed")
		}
	case len(parts) >= 2 && parts[0] == "keys":
		s.serveKeys(w, r, base, parts)
	case len(parts) >= 2 && parts[0] == "deletedsecrets":
		name := parts[1]
		switch {
		case len(parts) == 2 && r.Method == http.MethodGet:
			s.getDeleted(w, base, name)
		case len(parts) == 2 && r.Method == http.MethodDelete:
			s.purge(w, name)
		case len(parts) == 3 && parts[2] == "recover" && r.Method == http.MethodPost:
			s.recover(w, base, name)
		default:
			writeErr(w, http.StatusMethodNotAllowed, "BadParameter", "method not allowed")
		}
	default:
		writeErr(w, http.StatusNotFound, "NotFound", "no such resource")
	}
}

func newVersionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type attrs struct {
	Enabled         *bool  `json:"enabled,omitempty"`
	Created         int64  `json:"created,omitempty"`
	Updated         int64  `json:"updated,omitempty"`
	RecoveryLevel   string `json:"recoveryLevel,omitempty"`
	RecoverableDays int    `json:"recoverableDays,omitempty"`
}

func (s *Server) recoveryLevel() string {
	if s.PurgeProtection {
		return "Recoverable"
	}
	return "Recoverable+Purgeable"
}

func (s *Server) bundle(base string, sec *secret, v *version, withValue bool) map[string]any {
	en := v.enabled
	m := map[string]any{
		"id":         base + "/secrets/" + sec.name + "/" + v.id,
		"attributes": attrs{Enabled: &en, Created: v.created, Updated: v.updated, RecoveryLevel: s.recoveryLevel(), RecoverableDays: 90},
	}
	if withValue {
		m["value"] = v.value
	}
	if v.contentType != "" {
		m["contentType"] = v.contentType
	}
	if v.tags != nil {
		m["tags"] = v.tags
	}
	return m
}

func (s *Server) deletedBundle(base string, d *deletedSecret) map[string]any {
	cur := d.s.versions[len(d.s.versions)-1]
	m := s.bundle(base, d.s, cur, false)
	m["recoveryId"] = base + "/deletedsecrets/" + d.s.name
	m["deletedDate"] = d.deletedAt.Unix()
	m["scheduledPurgeDate"] = d.deletedAt.Add(90 * 24 * time.Hour).Unix()
	return m
}

func notFound(w http.ResponseWriter, name string) {
	writeErr(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command.", name))
}

// active returns the readable secret called name, honouring RecoverDelay.
func (s *Server) active(name string) *secret {
	k := strings.ToLower(name)
	sec := s.secrets[k]
	if sec == nil {
		return nil
	}
	if t, ok := s.readyAt[k]; ok {
		if time.Now().Before(t) {
			return nil
		}
		delete(s.readyAt, k)
	}
	return sec
}

type setBody struct {
	Value       *string           `json:"value"`
	ContentType *string           `json:"contentType"`
	Tags        map[string]string `json:"tags"`
	Attributes  *struct {
		Enabled *bool `json:"enabled"`
	} `json:"attributes"`
}

func (s *Server) set(w http.ResponseWriter, r *http.Request, base, name string) {
	var b setBody
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil || b.Value == nil {
		writeErr(w, http.StatusBadRequest, "BadParameter", "Property value is required.")
		return
	}
	if len(*b.Value) > MaxValueLength {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The secret value exceeds the maximum size.")
		return
	}
	if len(b.Tags) > MaxTags {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The number of tags exceeds the maximum of 15.")
		return
	}
	for k, v := range b.Tags {
		if len(k) > 512 || len(v) > 256 {
			writeErr(w, http.StatusBadRequest, "BadParameter", "A tag name or value is too long.")
			return
		}
	}
	k := strings.ToLower(name)
	if d, ok := s.deleted[k]; ok && d.deleting() {
		writeInnerErr(w, http.StatusConflict, "Conflict", "ObjectIsBeingDeleted", fmt.Sprintf("Secret %s is currently being deleted and cannot be re-created; retry later.", name))
		return
	}
	if _, ok := s.deleted[k]; ok {
		writeInnerErr(w, http.StatusConflict, "Conflict", "ObjectIsDeletedButRecoverable", fmt.Sprintf("Secret %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.", name))
		return
	}
	if s.isPurging(k) {
		writeInnerErr(w, http.StatusConflict, "Conflict", "ObjectIsBeingDeleted", fmt.Sprintf("Secret %s is currently being deleted and cannot be re-created; retry later.", name))
		return
	}
	if _, ok := s.readyAt[k]; ok && s.active(name) == nil {
		writeInnerErr(w, http.StatusConflict, "Conflict", "ObjectIsBeingRecovered", fmt.Sprintf("Secret %s is currently being recovered and cannot be re-created; retry later.", name))
		return
	}
	sec := s.secrets[k]
	if sec == nil {
		sec = &secret{name: name}
		s.secrets[k] = sec
	}
	now := time.Now().Unix()
	v := &version{id: newVersionID(), value: *b.Value, tags: cloneTags(b.Tags), enabled: true, created: now, updated: now}
	if b.ContentType != nil {
		v.contentType = *b.ContentType
	}
	if b.Attributes != nil && b.Attributes.Enabled != nil {
		v.enabled = *b.Attributes.Enabled
	}
	sec.versions = append(sec.versions, v)
	writeJSON(w, http.StatusOK, s.bundle(base, sec, v, true))
}

func cloneTags(t map[string]string) map[string]string {
	if t == nil {
		return nil
	}
	out := make(map[string]string, len(t))
	for k, v := range t {
		out[k] = v
	}
	return out
}

func (sec *secret) find(ver string) *version {
	if ver == "" {
		return sec.versions[len(sec.versions)-1]
	}
	for _, v := range sec.versions {
		if strings.EqualFold(v.id, ver) {
			return v
		}
	}
	return nil
}

func (s *Server) get(w http.ResponseWriter, base, name, ver string) {
	sec := s.active(name)
	if sec == nil {
		notFound(w, name)
		return
	}
	v := sec.find(ver)
	if v == nil {
		notFound(w, name+"/"+ver)
		return
	}
	if !v.enabled {
		writeInnerErr(w, http.StatusForbidden, "Forbidden", "SecretDisabled", "Operation get is not allowed on a disabled secret.")
		return
	}
	writeJSON(w, http.StatusOK, s.bundle(base, sec, v, true))
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, base, name, ver string) {
	sec := s.active(name)
	if sec == nil {
		notFound(w, name)
		return
	}
	v := sec.find(ver)
	if v == nil {
		notFound(w, name+"/"+ver)
		return
	}
	var b setBody
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The request body is not valid JSON.")
		return
	}
	if b.Value != nil {
		writeErr(w, http.StatusBadRequest, "BadParameter", "The value of a secret cannot be updated.")
		return
	}
	if b.Tags != nil {
		if len(b.Tags) > MaxTags {
			writeErr(w, http.StatusBadRequest, "BadParameter", "The number of tags exceeds the maximum of 15.")
			return
		}
		v.tags = cloneTags(b.Tags)
	}
	if b.ContentType != nil {
		v.contentType = *b.ContentType
	}
	if b.Attributes != nil && b.Attributes.Enabled != nil {
		v.enabled = *b.Attributes.Enabled
	}
	v.updated = time.Now().Unix()
	writeJSON(w, http.StatusOK, s.bundle(base, sec, v, false))
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request, base, name string) {
	sec := s.active(name)
	if sec == nil {
		notFound(w, name)
		return
	}
	skip, _ := strconv.Atoi(r.URL.Query().Get("$skiptoken"))
	if skip < 0 || skip > len(sec.versions) {
		skip = 0
	}
	end := min(skip+PageSize, len(sec.versions))
	items := []map[string]any{}
	for _, v := range sec.versions[skip:end] {
		items = append(items, s.bundle(base, sec, v, false))
	}
	resp := map[string]any{"value": items, "nextLink": nil}
	if end < len(sec.versions) {
		resp["nextLink"] = fmt.Sprintf("%s/secrets/%s/versions?api-version=%s&$skiptoken=%d", base, sec.name, r.URL.Query().Get("api-version"), end)
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) delete(w http.ResponseWriter, base, name string) {
	k := strings.ToLower(name)
	sec := s.active(name)
	if sec == nil {
		notFound(w, name)
		return
	}
	delete(s.secrets, k)
	now := time.Now()
	d := &deletedSecret{s: sec, deletedAt: now, purgeableAt: now.Add(s.DeleteDelay)}
	s.deleted[k] = d
	writeJSON(w, http.StatusOK, s.deletedBundle(base, d))
}

// deleting reports whether the delete of d is still in progress
// (DeleteDelay): Key Vault shows the deleted secret only once its delete
// is done.
func (d *deletedSecret) deleting() bool { return time.Now().Before(d.purgeableAt) }

func (s *Server) getDeleted(w http.ResponseWriter, base, name string) {
	d := s.deleted[strings.ToLower(name)]
	if d == nil || d.deleting() {
		writeErr(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("Deleted Secret not found: %s", name))
		return
	}
	writeJSON(w, http.StatusOK, s.deletedBundle(base, d))
}

func (s *Server) purge(w http.ResponseWriter, name string) {
	k := strings.ToLower(name)
	d := s.deleted[k]
	if d == nil {
		writeErr(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("Deleted Secret not found: %s", name))
		return
	}
	if s.PurgeProtection {
		writeErr(w, http.StatusForbidden, "Forbidden", "Operation \"purge\" is not allowed because purge protection is enabled for this vault.")
		return
	}
	if d.deleting() {
		writeInnerErr(w, http.StatusConflict, "Conflict", "ObjectIsBeingDeleted", fmt.Sprintf("Secret %s is currently being deleted.", name))
		return
	}
	delete(s.deleted, k)
	if s.PurgeDelay > 0 {
		s.purging[k] = time.Now().Add(s.PurgeDelay)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) recover(w http.ResponseWriter, base, name string) {
	k := strings.ToLower(name)
	d := s.deleted[k]
	if d == nil {
		writeErr(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("Deleted Secret not found: %s", name))
		return
	}
	if d.deleting() {
		writeInnerErr(w, http.StatusConflict, "Conflict", "ObjectIsBeingDeleted", fmt.Sprintf("Secret %s is currently being deleted.", name))
		return
	}
	delete(s.deleted, k)
	s.secrets[k] = d.s
	if s.RecoverDelay > 0 {
		s.readyAt[k] = time.Now().Add(s.RecoverDelay)
	}
	writeJSON(w, http.StatusOK, s.bundle(base, d.s, d.s.versions[len(d.s.versions)-1], false))
}

// identity serves a minimal Entra ID authority on the same listener, so
// azidentity's client-secret credential can run against the fake with
// AuthorityHost = URL: GET /{tenant}/v2.0/.well-known/openid-configuration
// and POST /{tenant}/oauth2/v2.0/token (client_credentials). It reports
// whether it handled the request.
func (s *Server) identity(w http.ResponseWriter, r *http.Request) bool {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	base := "https://" + r.Host
	isMeta := len(parts) == 4 && parts[1] == "v2.0" && parts[2] == ".well-known" && parts[3] == "openid-configuration" && r.Method == http.MethodGet
	isToken := len(parts) == 4 && parts[1] == "oauth2" && parts[2] == "v2.0" && parts[3] == "token" && r.Method == http.MethodPost
	if (isMeta || isToken) && len(s.tokFaults) > 0 {
		f := s.tokFaults[0]
		if f.Times--; f.Times <= 0 {
			s.tokFaults = s.tokFaults[1:]
		}
		if f.Drop {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return true
				}
			}
			panic(http.ErrAbortHandler)
		}
		code := f.Code
		switch {
		case code != 0:
		case f.Error == "invalid_client":
			code = 7000215
		default:
			code = 90033
		}
		writeJSON(w, f.Status, map[string]any{"error": f.Error,
			"error_description": fmt.Sprintf("AADSTS%d: %s", code, aadsts[code]), "error_codes": []int{code}})
		return true
	}
	switch {
	case isMeta:
		t := parts[0]
		writeJSON(w, http.StatusOK, map[string]any{
			"token_endpoint":                        base + "/" + t + "/oauth2/v2.0/token",
			"authorization_endpoint":                base + "/" + t + "/oauth2/v2.0/authorize",
			"device_authorization_endpoint":         base + "/" + t + "/oauth2/v2.0/devicecode",
			"issuer":                                base + "/" + t + "/v2.0",
			"jwks_uri":                              base + "/" + t + "/discovery/v2.0/keys",
			"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		})
		return true
	case isToken:
		if err := r.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
			return true
		}
		if r.PostForm.Get("grant_type") != "client_credentials" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
			return true
		}
		if (s.ClientID != "" && r.PostForm.Get("client_id") != s.ClientID) ||
			(s.ClientSecret != "" && r.PostForm.Get("client_secret") != s.ClientSecret) {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_client",
				"error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": []int{7000215}})
			return true
		}
		life := s.TokenLifetime
		if life <= 0 {
			life = DefaultTokenLifetime
		}
		tok := "kvfake-" + newVersionID()
		now := s.now()
		s.issued[tok] = tokenInfo{notBefore: now, expires: now.Add(life)}
		s.tokens++
		secs := int(life / time.Second)
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok})
		return true
	}
	return false
}
