// Package fakeauth is what the Google fakes (smfake, kmsfake) need to
// authenticate callers the way Google does: OAuth access tokens that
// expire by the server's clock, checked on every call, and a TLS
// certificate to carry them.
//
// # What Tokens enforces
//
//   - Every call carries "authorization: Bearer <token>"; without one the
//     call fails with UNAUTHENTICATED, ErrorInfo reason CREDENTIALS_MISSING.
//   - A token issued by Credentials is good until its lifetime
//     (DefaultLifetime unless SetLifetime) has passed by the server's clock
//     (SetClock), or Expire was called after it was issued. A service
//     account's self-signed JWT (what the clients send for a key file) is
//     good until its "exp" claim by the server's clock, or Expire; its
//     signature is not checked.
//   - An expired token fails the call with UNAUTHENTICATED, message and
//     google.rpc.ErrorInfo as Google sends them: reason
//     ACCESS_TOKEN_EXPIRED, domain googleapis.com, metadata "service" (the
//     API's service name) and "method" (the RPC's full name). Any other
//     token fails with UNAUTHENTICATED and no ErrorInfo.
//
// Credentials hands out tokens the way the auth library does: cached by
// the client until shortly before the expiry the token endpoint reported,
// which is the lifetime measured by the client's clock. Expire and a
// server clock set ahead therefore make the server refuse a token the
// client still holds as valid, as token revocation and clock skew do.
package fakeauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/auth"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// DefaultLifetime is the lifetime of the tokens Credentials issues, as
// Google's token endpoint reports it for access tokens: an hour.
const DefaultLifetime = time.Hour

// Google's messages for calls without valid credentials.
const (
	msgInvalid = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
	msgMissing = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)

// Tokens issues and checks the access tokens of one fake. It is safe for
// concurrent use.
type Tokens struct {
	service string

	mu       sync.Mutex
	now      func() time.Time
	lifetime time.Duration
	issued   map[string]time.Time // token -> expiry by the server's clock
	jwts     map[string]bool      // self-signed JWTs seen -> expired by Expire
	count    int
	fails    []int // HTTP statuses of the next token requests
}

// NewTokens returns the tokens of a fake of service (e.g.
// "secretmanager.googleapis.com", named in ErrorInfo).
func NewTokens(service string) *Tokens {
	return &Tokens{service: service, now: time.Now, lifetime: DefaultLifetime,
		issued: map[string]time.Time{}, jwts: map[string]bool{}}
}

// SetClock replaces the server's clock, by which tokens expire.
func (t *Tokens) SetClock(now func() time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.now = now
}

// SetLifetime sets the lifetime of the tokens issued from now on. Zero or
// less: they are expired when issued (and reported so to the client),
// so that every call fails, however often the client refreshes.
func (t *Tokens) SetLifetime(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lifetime = d
}

// Expire expires every token issued or accepted so far, as if revoked;
// clients still hold them as valid. Tokens issued later are good.
func (t *Tokens) Expire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for k, exp := range t.issued {
		if exp.After(now) {
			t.issued[k] = now
		}
	}
	for k := range t.jwts {
		t.jwts[k] = true
	}
}

// FailIssue makes the next n token requests fail with the HTTP status
// code (503: the token endpoint is down; 400: it refuses the credential),
// as the auth library reports such answers (*auth.Error).
func (t *Tokens) FailIssue(code, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for range n {
		t.fails = append(t.fails, code)
	}
}

// Issued returns how many tokens Credentials has issued.
func (t *Tokens) Issued() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.count
}

// Credentials returns new credentials whose tokens this fake issues,
// behind the auth library's own cache (as the credentials Google's
// clients detect are). Each call returns a new cache.
func (t *Tokens) Credentials() *auth.Credentials {
	return auth.NewCredentials(&auth.CredentialsOptions{
		TokenProvider: auth.NewCachedTokenProvider(issuer{t}, nil),
	})
}

type issuer struct{ t *Tokens }

// Token issues a token, as Google's token endpoint answers a token
// request.
func (i issuer) Token(context.Context) (*auth.Token, error) {
	t := i.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.fails) > 0 {
		code := t.fails[0]
		t.fails = t.fails[1:]
		return nil, &auth.Error{Response: &http.Response{StatusCode: code, Status: http.StatusText(code)},
			Body: []byte(`{"error":"fake_failure"}`)}
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	v := "ya29.fake-" + hex.EncodeToString(b)
	t.issued[v] = t.now().Add(t.lifetime)
	t.count++
	// The client computes the expiry from expires_in with its own clock.
	return &auth.Token{Value: v, Type: "Bearer", Expiry: time.Now().Add(t.lifetime)}, nil
}

// Check authenticates the call in ctx (a server context: its method is
// grpc.Method(ctx)), returning nil or Google's UNAUTHENTICATED error.
func (t *Tokens) Check(ctx context.Context) error {
	full, _ := grpc.Method(ctx)
	method := strings.ReplaceAll(strings.TrimPrefix(full, "/"), "/", ".")
	md, _ := metadata.FromIncomingContext(ctx)
	h := md.Get("authorization")
	if len(h) == 0 || !strings.HasPrefix(h[0], "Bearer ") || strings.TrimPrefix(h[0], "Bearer ") == "" {
		return t.refuse(msgMissing, "CREDENTIALS_MISSING", method)
	}
	tok := strings.TrimPrefix(h[0], "Bearer ")
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if exp, ok := t.issued[tok]; ok {
		if now.Before(exp) {
			return nil
		}
		return t.refuse(msgInvalid, "ACCESS_TOKEN_EXPIRED", method)
	}
	if exp, ok := jwtExpiry(tok); ok {
		if t.jwts[tok] || !now.Before(exp) {
			t.jwts[tok] = true
			return t.refuse(msgInvalid, "ACCESS_TOKEN_EXPIRED", method)
		}
		t.jwts[tok] = false
		return nil
	}
	return status.Error(codes.Unauthenticated, msgInvalid)
}

// refuse is UNAUTHENTICATED with Google's ErrorInfo.
func (t *Tokens) refuse(msg, reason, method string) error {
	st := status.New(codes.Unauthenticated, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "googleapis.com",
		Metadata: map[string]string{"service": t.service, "method": method}}); err == nil {
		st = d
	}
	return st.Err()
}

// jwtExpiry returns the "exp" of a self-signed JWT (header.claims.signature
// with an issuer), without checking its signature.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Iss string `json:"iss"`
		Exp int64  `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Iss == "" || c.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(c.Exp, 0), true
}

// SelfSignedCert returns a new self-signed certificate for 127.0.0.1 and
// localhost, valid for a day, and its key, in PEM.
func SelfSignedCert(commonName string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
