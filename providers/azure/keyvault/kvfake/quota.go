package kvfake

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Names of Key Vault's transaction limits for secrets, per vault and
// region ("Azure Key Vault service limits": secrets, managed storage
// account keys and vault transactions).
const (
	// QuotaSecretCreate counts Set Secret (PUT /secrets/{name}), which
	// creates a secret or a new version of one: 300 per 10 seconds.
	QuotaSecretCreate = "secret-create"
	// QuotaOther counts every other vault transaction (reads, updates,
	// lists, deletes, recover, purge): 4,000 per 10 seconds.
	QuotaOther = "other"
)

// Quota is one transaction limit, enforced over a sliding window: a
// request is admitted while fewer than Limit requests were admitted in the
// Window before it; otherwise it gets 429 and, as Key Vault's throttling
// guidance says, does not count.
//
// Key Vault states its limits as a maximum of transactions "in 10
// seconds", without saying where a window starts, so the rate a client
// can rely on is at most Limit in any Window; a sliding window throttles
// every burst some alignment of fixed windows would. A token bucket of
// Limit refilled at Limit/Window lets up to twice Limit through in one
// Window, and is throttled here.
type Quota struct {
	// Limit is how many transactions a Window admits. Zero or negative:
	// not enforced.
	Limit int
	// Window is the window's length. Default (0): 10 seconds.
	Window time.Duration
}

// DefaultQuotas returns Key Vault's published secret transaction limits
// (see the Quota* names).
func DefaultQuotas() map[string]Quota {
	return map[string]Quota{
		QuotaSecretCreate: {Limit: 300, Window: 10 * time.Second},
		QuotaOther:        {Limit: 4000, Window: 10 * time.Second},
	}
}

// ThrottleMessage is the message of the fake's 429 answers, as Key Vault
// words it.
const ThrottleMessage = "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"

// quotaState is the fake's quota accounting, guarded by Server.mu.
type quotaState struct {
	limits    map[string]Quota
	admitted  map[string][]time.Time // by quota, oldest first (enforced quotas only)
	counted   map[string]int         // admitted transactions by quota
	throttled map[string]int         // by quota
}

// EnforceQuotas makes the vault throttle transactions above the limits in
// q (by quota name, e.g. DefaultQuotas() or {QuotaSecretCreate: {Limit:
// 10, Window: time.Second}}), as Key Vault does: an authenticated request
// over its limit gets 429 Too Many Requests with a Retry-After header (the
// whole seconds until the window admits one more) and the error body
// {"error":{"code":"Throttled","message":ThrottleMessage}}, and changes
// nothing. Quotas absent from q are not enforced. Each call starts over
// with empty windows; nil turns enforcement off, the default. Windows run
// on the real clock (AdvanceClock moves only token times).
func (s *Server) EnforceQuotas(q map[string]Quota) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quota.limits = nil
	if len(q) > 0 {
		s.quota.limits = make(map[string]Quota, len(q))
		for k, v := range q {
			if v.Window <= 0 {
				v.Window = 10 * time.Second
			}
			s.quota.limits[k] = v
		}
	}
	s.quota.admitted = map[string][]time.Time{}
}

// Throttled returns how many requests the vault throttled for quota (one
// of the Quota* names), or for every quota when quota is "".
func (s *Server) Throttled(quota string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return quotaSum(s.quota.throttled, quota)
}

// Transactions returns how many authenticated requests the vault admitted
// against quota (one of the Quota* names), or against every quota when
// quota is "", whether or not it enforces quotas.
func (s *Server) Transactions(quota string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return quotaSum(s.quota.counted, quota)
}

func quotaSum(m map[string]int, k string) int {
	if k != "" {
		return m[k]
	}
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// quotaOf returns the limit a vault request counts against.
func quotaOf(r *http.Request) string {
	p := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.Method == http.MethodPut && len(p) == 2 && p[0] == "secrets" {
		return QuotaSecretCreate
	}
	return QuotaOther
}

// throttle answers a request over its limit with 429 and reports whether
// it did; otherwise it counts the request. Called with s.mu held.
func (s *Server) throttle(w http.ResponseWriter, r *http.Request) bool {
	q := quotaOf(r)
	qs := &s.quota
	lim, ok := qs.limits[q]
	if ok && lim.Limit > 0 {
		now := time.Now()
		win := qs.admitted[q]
		i := 0
		for i < len(win) && now.Sub(win[i]) >= lim.Window {
			i++
		}
		win = win[i:]
		if len(win) >= lim.Limit {
			qs.admitted[q] = win
			if qs.throttled == nil {
				qs.throttled = map[string]int{}
			}
			qs.throttled[q]++
			wait := win[len(win)-lim.Limit].Add(lim.Window).Sub(now)
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
			writeErr(w, http.StatusTooManyRequests, "Throttled", ThrottleMessage)
			return true
		}
		qs.admitted[q] = append(win, now)
	}
	if qs.counted == nil {
		qs.counted = map[string]int{}
	}
	qs.counted[q]++
	return false
}
