package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// requestCounter is a reverse proxy in front of Vault that counts the
// requests passing through it by method and kind (data, metadata, ...):
// how many requests keyrelay's events really cost. The proxy costs CPU of
// its own, so throughput measured through it is not comparable.
type requestCounter struct {
	mu     sync.Mutex
	counts map[string]int
	addr   string
	srv    *http.Server
}

func startRequestCounter(vaultAddr string) (*requestCounter, error) {
	target, err := url.Parse(vaultAddr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &requestCounter{counts: map[string]int{}, addr: "http://" + ln.Addr().String()}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 256}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := "other"
		for _, k := range []string{"/data/", "/metadata/", "/undelete/", "/destroy/"} {
			if strings.Contains(r.URL.Path, k) {
				kind = strings.Trim(k, "/")
			}
		}
		c.mu.Lock()
		c.counts[r.Method+" "+kind]++
		c.mu.Unlock()
		proxy.ServeHTTP(w, r)
	})}
	go c.srv.Serve(ln) //nolint:errcheck // ends with Close
	return c, nil
}

// take returns the counts since the last call as "total (METHOD kind n, ...)"
// per op, and resets them.
func (c *requestCounter) take(ops int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	var parts []string
	for k, n := range c.counts {
		total += n
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	c.counts = map[string]int{}
	return fmt.Sprintf("%.2f per event (%d: %s)", float64(total)/float64(ops), total, strings.Join(parts, ", "))
}

func (c *requestCounter) close() { _ = c.srv.Close() }
