package sealtest

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// Proxy is an HTTP reverse proxy in front of a KMS server that answers the
// next requests with a staged failure instead of forwarding them: how the
// suite's outage and throttling cases reach servers that cannot fail on
// demand (local-kms, the Vault dev server). Loopback only.
type Proxy struct {
	// URL is the proxy's address, to configure the wrapper with.
	URL string

	mu     sync.Mutex
	n      int
	status int
	header http.Header
	body   string
	served int
}

// NewProxy starts a proxy to target (an http:// URL) and stops it when the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		if p.n > 0 {
			p.n--
			p.served++
			for k, vs := range p.header {
				w.Header()[k] = vs
			}
			status, body := p.status, p.body
			p.mu.Unlock()
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
			return
		}
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Fail answers the next n requests with status, header and body (n = 0
// clears it).
func (p *Proxy) Fail(n, status int, header http.Header, body string) {
	p.mu.Lock()
	p.n, p.status, p.header, p.body = n, status, header, body
	p.mu.Unlock()
}

// Served counts the failures answered.
func (p *Proxy) Served() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.served
}
