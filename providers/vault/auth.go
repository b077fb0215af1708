package vault

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/providers"
)

// Token lifetime policy: a token is refreshed (renewed, or obtained again by
// logging in) once refreshFraction of its lease has passed, in the
// background while callers keep using it; a caller blocks on a refresh only
// when the token is within expiryMargin of expiring or already expired.
const (
	refreshFraction = 2.0 / 3.0
	maxExpiryMargin = 5 * time.Second
	// lookupRetry is how long a token whose lookup-self failed is used
	// before the lookup is tried again.
	lookupRetry = time.Minute
)

// AuthStats counts the provider's token operations (for tests and
// metrics).
type AuthStats struct {
	// Logins is the number of successful AppRole or cert logins.
	Logins int64
	// Renewals is the number of successful token renewals.
	Renewals int64
	// Failures counts failed logins, renewals and lookups.
	Failures int64
}

// tokenState is one token and what Vault said about its lease.
type tokenState struct {
	token     string
	expires   time.Time // zero: does not expire
	refreshAt time.Time // zero: never refreshed
	ttl       time.Duration
	renewable bool
	// relogin: a renewal returned less than the original TTL (the token
	// reached its max TTL), so the next refresh logs in.
	relogin bool
}

// loginFunc logs in and returns Vault's auth response.
type loginFunc func(ctx context.Context) (*api.SecretAuth, error)

// tokenSource caches the token for its lease and refreshes it before it
// expires, for every auth method. It sets the token on the client the
// provider's requests use.
type tokenSource struct {
	client   *api.Client // KV requests (their namespace is in the path)
	tokens   *api.Client // lookup-self, renew-self, revoke-self (login namespace)
	login    loginFunc   // nil for AuthToken
	static   string      // AuthToken's token
	classify func(ctx context.Context, op string, err error) *providers.Error
	lifetime context.Context
	timeout  time.Duration
	now      func() time.Time

	mu         sync.Mutex  // serializes refreshes
	timer      *time.Timer // a static token's next refresh (see store); under mu
	state      atomic.Pointer[tokenState]
	refreshing atomic.Bool
	wg         sync.WaitGroup

	logins, renewals, failures atomic.Int64
}

func (ts *tokenSource) stats() AuthStats {
	return AuthStats{Logins: ts.logins.Load(), Renewals: ts.renewals.Load(), Failures: ts.failures.Load()}
}

// current returns the token in use ("" before the first call).
func (ts *tokenSource) current() string {
	if st := ts.state.Load(); st != nil {
		return st.token
	}
	return ts.static
}

func margin(ttl time.Duration) time.Duration {
	m := ttl / 10
	if m > maxExpiryMargin {
		m = maxExpiryMargin
	}
	return m
}

// usable reports whether st can be used at now without blocking.
func (ts *tokenSource) usable(st *tokenState, now time.Time) bool {
	return st != nil && st.token != "" && (st.expires.IsZero() || now.Before(st.expires.Add(-margin(st.ttl))))
}

// Token returns a token valid for at least a moment longer, logging in
// when there is none or it is about to expire, and starting a background
// refresh once refreshFraction of its lease has passed.
func (ts *tokenSource) Token(ctx context.Context) (string, error) {
	now := ts.now()
	st := ts.state.Load()
	if ts.usable(st, now) {
		if !st.refreshAt.IsZero() && !now.Before(st.refreshAt) {
			ts.refreshAsync()
		}
		return st.token, nil
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if st := ts.state.Load(); ts.usable(st, ts.now()) {
		return st.token, nil
	}
	if err := ts.refreshLocked(ctx); err != nil {
		if st := ts.state.Load(); st != nil && st.token != "" && (st.expires.IsZero() || ts.now().Before(st.expires)) {
			// Still valid, if only just: use it rather than fail.
			return st.token, nil
		}
		return "", err
	}
	return ts.state.Load().token, nil
}

func (ts *tokenSource) refreshAsync() {
	if ts.lifetime.Err() != nil {
		return // closed
	}
	if !ts.refreshing.CompareAndSwap(false, true) {
		return
	}
	ts.wg.Add(1)
	go func() {
		defer ts.wg.Done()
		defer ts.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(ts.lifetime, ts.timeout)
		defer cancel()
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if st := ts.state.Load(); st != nil && !st.refreshAt.IsZero() && ts.now().Before(st.refreshAt) {
			return // refreshed meanwhile
		}
		_ = ts.refreshLocked(ctx) // on failure the next caller tries again
	}()
}

// refreshLocked renews the token when it can, else logs in (or, for a
// static token, looks it up). ts.mu is held.
func (ts *tokenSource) refreshLocked(ctx context.Context) error {
	st := ts.state.Load()
	now := ts.now()
	if ts.login == nil {
		if st == nil || !st.renewable {
			return ts.lookupLocked(ctx)
		}
		if err := ts.renewLocked(ctx, st); err != nil {
			// Keep the token until it expires; try again a little later.
			next := *st
			next.refreshAt = now.Add(margin(st.ttl)/2 + time.Second)
			ts.store(&next)
			return err
		}
		return nil
	}
	if st != nil && st.renewable && !st.relogin && (st.expires.IsZero() || now.Before(st.expires)) {
		if err := ts.renewLocked(ctx, st); err == nil {
			return nil
		}
	}
	return ts.loginLocked(ctx)
}

func (ts *tokenSource) loginLocked(ctx context.Context) error {
	auth, err := ts.login(ctx)
	if err != nil {
		ts.failures.Add(1)
		return err
	}
	if auth == nil || auth.ClientToken == "" {
		ts.failures.Add(1)
		return newErr("login", "", providers.Retryable, fmt.Errorf("%w: %w: no client token in the response", ErrLogin, providers.ErrUnavailable))
	}
	ts.logins.Add(1)
	ts.install(auth.ClientToken, time.Duration(auth.LeaseDuration)*time.Second, auth.Renewable, false)
	return nil
}

func (ts *tokenSource) renewLocked(ctx context.Context, st *tokenState) error {
	inc := int(st.ttl / time.Second)
	sec, err := ts.tokens.Auth().Token().RenewSelfWithContext(ctx, inc)
	if err != nil || sec == nil || sec.Auth == nil {
		ts.failures.Add(1)
		if err == nil {
			err = errors.New("empty renewal response")
		}
		return ts.classify(ctx, "renew", err)
	}
	ts.renewals.Add(1)
	lease := time.Duration(sec.Auth.LeaseDuration) * time.Second
	// A shorter lease than asked for means the token's max TTL is near:
	// log in again next time instead of renewing.
	relogin := ts.login != nil && lease < st.ttl
	ttl := st.ttl
	if lease < ttl {
		ttl = lease
	}
	now := ts.now()
	next := &tokenState{token: st.token, ttl: st.ttl, renewable: sec.Auth.Renewable, relogin: relogin}
	if lease > 0 {
		next.expires = now.Add(lease)
		next.refreshAt = now.Add(time.Duration(float64(ttl) * refreshFraction))
	}
	ts.store(next)
	return nil
}

// lookupLocked learns a static token's TTL. A failed lookup (the policy may
// not allow lookup-self) leaves the token in use as if it never expired and
// tries again after lookupRetry.
func (ts *tokenSource) lookupLocked(ctx context.Context) error {
	ts.setToken(ts.static)
	sec, err := ts.tokens.Auth().Token().LookupSelfWithContext(ctx)
	now := ts.now()
	if err != nil || sec == nil {
		ts.failures.Add(1)
		ts.store(&tokenState{token: ts.static, refreshAt: now.Add(lookupRetry)})
		if err == nil {
			return nil
		}
		return ts.classify(ctx, "lookup", err)
	}
	ttl, _ := sec.TokenTTL()
	renewable, _ := sec.TokenIsRenewable()
	ts.install(ts.static, ttl, renewable, true)
	return nil
}

// store makes st the token state. ts.mu is held. For a static token it
// also schedules the next refresh (renewal, or lookup retry) at
// st.refreshAt: a login method gets a new token whenever it finds its own
// expired, but a static token that expired while no call asked for it
// (an idle provider) is gone for good, so its renewal cannot wait for the
// next call.
func (ts *tokenSource) store(st *tokenState) {
	ts.state.Store(st)
	if ts.login != nil || ts.lifetime.Err() != nil {
		return
	}
	if ts.timer != nil {
		ts.timer.Stop()
		ts.timer = nil
	}
	if st.refreshAt.IsZero() || !st.renewable || !st.expires.IsZero() && !ts.now().Before(st.expires) {
		// Nothing to renew (a failed lookup is tried again on use), or
		// the token is gone already.
		return
	}
	ts.timer = time.AfterFunc(max(st.refreshAt.Sub(ts.now()), 0), ts.refreshAsync)
}

func (ts *tokenSource) install(token string, ttl time.Duration, renewable, static bool) {
	now := ts.now()
	st := &tokenState{token: token, ttl: ttl, renewable: renewable}
	if ttl > 0 {
		st.expires = now.Add(ttl)
		if renewable || !static {
			st.refreshAt = now.Add(time.Duration(float64(ttl) * refreshFraction))
		}
	}
	ts.setToken(token)
	ts.store(st)
}

// setToken makes token the one both clients send.
func (ts *tokenSource) setToken(token string) {
	ts.client.SetToken(token)
	ts.tokens.SetToken(token)
}

// newTokenClient returns the client for a token's own requests
// (lookup-self, renew-self, revoke-self): client's configuration and
// headers with namespace (Config.LoginNamespace) as X-Vault-Namespace and
// no token yet. A token belongs to the namespace it was created in (Vault
// Enterprise, HCP Vault) and is looked up and renewed there; the KV
// requests carry the team's namespace in their path instead (see paths),
// so the two clients differ only in this header.
func newTokenClient(client *api.Client, namespace string) (*api.Client, error) {
	tc, err := client.Clone()
	if err != nil {
		return nil, err
	}
	tc.ClearToken() // Clone reads VAULT_TOKEN and VAULT_NAMESPACE
	tc.SetHeaders(client.Headers())
	tc.ClearNamespace()
	if namespace != "" {
		tc.SetNamespace(namespace)
	}
	return tc, nil
}

// recover is called after a request made with token used was refused with
// 403. For a login method it checks the token with lookup-self and, when
// Vault no longer accepts it (revoked, expired early), logs in again; it
// reports whether the request is worth repeating with the new token.
func (ts *tokenSource) recover(ctx context.Context, used string) bool {
	if ts.login == nil || used == "" {
		return false
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if st := ts.state.Load(); st != nil && st.token != used {
		return true // someone already replaced it
	}
	if _, err := ts.tokens.Auth().Token().LookupSelfWithContext(ctx); err == nil {
		return false // the token is fine: a real policy denial
	}
	return ts.loginLocked(ctx) == nil
}

// close waits for a background refresh and revokes a token obtained by
// logging in (best effort, bounded by ctx).
func (ts *tokenSource) close(ctx context.Context) {
	ts.mu.Lock()
	if ts.timer != nil {
		ts.timer.Stop()
		ts.timer = nil
	}
	ts.mu.Unlock()
	ts.wg.Wait()
	if ts.login == nil {
		return
	}
	if st := ts.state.Load(); st != nil && st.token != "" {
		_ = ts.tokens.Auth().Token().RevokeSelfWithContext(ctx, "")
	}
}
