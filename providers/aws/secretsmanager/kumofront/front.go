package kumofront

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/sivchari/kumo"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
)

// Test credentials and region the front's helpers use. kumo checks no
// signature.
const (
	Region          = "us-east-1"
	AccessKeyID     = "AKIDKUMOFRONT"
	SecretAccessKey = "kumofront-dummy-secret"
)

// Server is kumo behind the front handler. It is safe for concurrent use;
// Secrets Manager requests are handled one at a time.
type Server struct {
	// URL is the endpoint to give the SDK (BaseEndpoint).
	URL string

	kumo  *kumo.Server
	http  *httptest.Server
	proxy *httputil.ReverseProxy
	hc    *http.Client

	mu      sync.Mutex // serializes Secrets Manager requests and guards secrets
	secrets map[string]*entry

	fmu      sync.Mutex // guards faults, requests
	faults   []*Fault
	requests []Request

	quota quotaState // see EnforceQuotas

	clock        atomic.Int64 // offset of the front's clock, see SetClockOffset
	skewRejected atomic.Int64 // see SkewRejections
	skewCode     string       // see SetSkewErrorCode; guarded by fmu
}

// Request records one Secrets Manager request the front received.
type Request struct {
	// Action is the operation, e.g. "PutSecretValue".
	Action string
	// SecretID is the request's SecretId or Name.
	SecretID string
	// AccessKeyID is the key id of the SigV4 credential that signed it.
	AccessKeyID string
	// At is when the front received it.
	At time.Time
}

// Start runs a front over a new kumo server on 127.0.0.1 and stops both when
// tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := newServer()
	s.http = httptest.NewServer(s)
	s.URL = s.http.URL
	tb.Cleanup(s.Close)
	return s
}

// StartTLS is Start over HTTPS with a self-signed certificate (CACertPEM).
func StartTLS(tb testing.TB) *Server {
	tb.Helper()
	s := newServer()
	s.http = httptest.NewTLSServer(s)
	s.URL = s.http.URL
	tb.Cleanup(s.Close)
	return s
}

func newServer() *Server {
	k := kumo.NewServer()
	u, err := url.Parse(k.URL)
	if err != nil {
		panic(err)
	}
	s := &Server{kumo: k, proxy: httputil.NewSingleHostReverseProxy(u), hc: &http.Client{Timeout: 30 * time.Second},
		secrets: map[string]*entry{}}
	s.proxy.ModifyResponse = func(resp *http.Response) error {
		s.setDate(resp.Header)
		return nil
	}
	return s
}

// Close stops the front and kumo.
func (s *Server) Close() {
	s.http.Close()
	s.kumo.Close()
}

// CACertPEM returns the certificate of a StartTLS server, PEM-encoded.
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.http.Certificate().Raw})
}

// Options returns provider options reaching this front: endpoint, region
// and static test credentials.
func (s *Server) Options() map[string]string {
	return map[string]string{"endpoint": s.URL, "aws_region_name": Region,
		"aws_access_key_id": AccessKeyID, "aws_secret_access_key": SecretAccessKey}
}

// Client returns a plain SDK client for this front (as another tool, or
// LiteLLM, would use), with at most one attempt per call.
func (s *Server) Client() *sm.Client {
	return sm.New(sm.Options{Region: Region, BaseEndpoint: aws.String(s.URL), RetryMaxAttempts: 1,
		HTTPClient:  s.http.Client(),
		Credentials: credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")})
}

// Requests returns the Secrets Manager requests received so far, in order.
func (s *Server) Requests() []Request {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Calls counts the requests for action (all actions when action is "")
// and, when secretID is not "", that secret.
func (s *Server) Calls(action, secretID string) int {
	n := 0
	for _, r := range s.Requests() {
		if (action == "" || r.Action == action) && (secretID == "" || r.SecretID == secretID) {
			n++
		}
	}
	return n
}

// ResetRequests forgets the recorded requests.
func (s *Server) ResetRequests() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.requests = nil
}

// Fault is an injected failure. A fault with neither Status, Code nor Drop
// only adds Delay.
type Fault struct {
	// Action limits the fault to one operation ("" = every Secrets Manager
	// operation).
	Action string
	// SecretID limits the fault to one secret name ("" = any).
	SecretID string
	// Status is the HTTP status of the error answer. Default: 400 when Code
	// is set, else 500.
	Status int
	// Code is the error's __type, e.g. "ThrottlingException".
	Code string
	// Message is the error's message.
	Message string
	// Header holds extra response headers (X-Amz-Retry-After, Retry-After).
	Header http.Header
	// Times is how often the fault fires; 0 means until ClearFaults.
	Times int
	// AfterForward applies the call first and then answers with the
	// fault: the response is lost after the change took effect.
	AfterForward bool
	// Delay waits before handling the request (or answering the fault),
	// giving up when the client goes away.
	Delay time.Duration
	// Drop closes the connection without an answer.
	Drop bool

	fired int
}

// Inject adds a fault; faults are checked in the order they were added.
func (s *Server) Inject(f Fault) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	fc := f
	s.faults = append(s.faults, &fc)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.faults = nil
}

// Fired returns how many times faults fired in total.
func (s *Server) Fired() int {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	n := 0
	for _, f := range s.faults {
		n += f.fired
	}
	return n
}

func (s *Server) record(action, secretID, auth string) *Fault {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.requests = append(s.requests, Request{Action: action, SecretID: secretID, AccessKeyID: accessKeyID(auth), At: time.Now()})
	for _, f := range s.faults {
		if (f.Action != "" && f.Action != action) || (f.SecretID != "" && f.SecretID != secretID) {
			continue
		}
		if f.Times > 0 && f.fired >= f.Times {
			continue
		}
		f.fired++
		c := *f
		return &c
	}
	return nil
}

func accessKeyID(auth string) string {
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return ""
	}
	c := auth[i+len("Credential="):]
	if j := strings.IndexByte(c, '/'); j >= 0 {
		return c[:j]
	}
	return ""
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.setDate(w.Header())
	target := r.Header.Get("X-Amz-Target")
	if !strings.HasPrefix(target, "secretsmanager.") {
		s.proxy.ServeHTTP(w, r)
		return
	}
	action := strings.TrimPrefix(target, "secretsmanager.")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var ids struct{ SecretId, Name string }
	_ = json.Unmarshal(body, &ids)
	id := ids.SecretId
	if id == "" {
		id = ids.Name
	}
	if e := s.checkSigningTime(r); e != nil {
		// Authentication comes first: a refused request is recorded, but
		// takes no quota and fires no fault.
		s.fmu.Lock()
		s.requests = append(s.requests, Request{Action: action, SecretID: id, AccessKeyID: accessKeyID(r.Header.Get("Authorization")), At: time.Now()})
		s.fmu.Unlock()
		writeError(w, e)
		return
	}
	if s.throttle(w, action, id, r.Header.Get("Authorization")) {
		return
	}
	f := s.record(action, id, r.Header.Get("Authorization"))
	if f != nil && f.Delay > 0 {
		if ctxtime.Sleep(r.Context(), f.Delay) != nil {
			return
		}
	}
	isError := f != nil && (f.Status != 0 || f.Code != "" || f.Drop)
	if isError && !f.AfterForward {
		s.writeFault(w, f)
		return
	}
	if isError {
		s.handle(httptest.NewRecorder(), r.Context(), action, body, r)
		s.writeFault(w, f)
		return
	}
	s.handle(w, r.Context(), action, body, r)
}

func (s *Server) writeFault(w http.ResponseWriter, f *Fault) {
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	for k, vs := range f.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	status := f.Status
	if status == 0 {
		status = http.StatusBadRequest
		if f.Code == "" {
			status = http.StatusInternalServerError
		}
	}
	code := f.Code
	if code == "" {
		code = "InternalServiceError"
	}
	writeError(w, &apiError{status: status, code: code, msg: f.Message})
}

// apiError is an AWS JSON 1.1 error answer.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.msg) }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", newID())
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.code, "message": e.msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, errf(500, "InternalServiceError", "encode: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", newID())
	_, _ = w.Write(b)
}

// kumoCall sends one Secrets Manager action to kumo. out may be nil.
func (s *Server) kumoCall(ctx context.Context, action string, in, out any) *apiError {
	b, err := json.Marshal(in)
	if err != nil {
		return errf(500, "InternalServiceError", "front: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.kumo.URL+"/", bytes.NewReader(b))
	if err != nil {
		return errf(500, "InternalServiceError", "front: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "secretsmanager."+action)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+AccessKeyID+"/20260101/"+Region+
		"/secretsmanager/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := s.hc.Do(req)
	if err != nil {
		return errf(500, "InternalServiceError", "front: kumo: %v", err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(rb, &e)
		return &apiError{status: resp.StatusCode, code: e.Type, msg: e.Message}
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return errf(500, "InternalServiceError", "front: kumo answer: %v", err)
		}
	}
	return nil
}

func ioNopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
