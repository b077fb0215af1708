package keyvault_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

const sentinel = "SENTINEL-kv-9b1d"

var owner = providers.Owner{TeamID: "team-a", KeyID: "key-1"}

func put(t *testing.T, p *keyvault.Provider, name, value, event string) providers.PutResult {
	t.Helper()
	r, err := p.Put(context.Background(), providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: event, Owner: owner})
	if err != nil {
		t.Fatalf("Put %q: %v", name, err)
	}
	return r
}

func TestChallengeRoundTrip(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t)
	put(t, p, "challenge", "v", "e1")
	if _, err := p.Get(context.Background(), "challenge", ""); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.Challenged(); n < 1 {
		t.Fatalf("fake challenged %d requests, want at least 1", n)
	}
	f.cred.mu.Lock()
	defer f.cred.mu.Unlock()
	if f.cred.calls < 1 {
		t.Fatal("credential never asked for a token")
	}
	for _, s := range f.cred.scopes {
		if s != kvfake.DefaultResource+"/.default" {
			t.Errorf("token scope %q, want the challenge resource", s)
		}
	}
	for _, tn := range f.cred.tenants {
		if tn != kvfake.DefaultTenant {
			t.Errorf("token tenant %q, want the challenge's %q", tn, kvfake.DefaultTenant)
		}
	}
	if f.srv.APIVersion() == "" {
		t.Error("no api-version seen")
	}
}

func TestChallengeWrongToken(t *testing.T) {
	f := newFixture(t)
	f.srv.Token = "another-token"
	p := f.provider(t)
	_, err := p.Put(context.Background(), providers.PutRequest{Name: "x", Value: []byte(sentinel), Owner: owner})
	wantKind(t, err, providers.ErrAccessDenied, providers.Permanent)
	noLeak(t, err)
}

func TestChallengeResourceVerification(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t, func(c *keyvault.Config) { c.DisableChallengeResourceVerification = false })
	_, err := p.Get(context.Background(), "x", "")
	wantKind(t, err, providers.ErrAccessDenied, providers.Permanent)
	if f.cred.calls != 0 {
		t.Errorf("a token was requested for a mismatched challenge resource")
	}
	// A resource that is the vault's parent domain passes verification; a
	// loopback vault has none, so verification must be off for tests and
	// custom domains.
}

func TestSoftDeleteRecovery(t *testing.T) {
	f := newFixture(t)
	f.srv.RecoverDelay = 300 * time.Millisecond
	f.srv.DeleteDelay = 200 * time.Millisecond
	p := f.provider(t)
	ctx := context.Background()
	r1 := put(t, p, "team/key-1", "first", "e1")
	if err := p.Delete(ctx, providers.DeleteRequest{Name: "team/key-1", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	kvn := keyvault.KVName("team/key-1")
	if st, _ := f.srv.SecretState(kvn); st != "deleted" {
		t.Fatalf("state after soft delete %q", st)
	}
	// The raw API answers 409 Conflict to a write on the deleted name.
	v := "x"
	_, err := f.raw(t).SetSecret(ctx, kvn, azsecrets.SetSecretParameters{Value: &v}, nil)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusConflict || re.ErrorCode != "Conflict" {
		t.Fatalf("raw SetSecret on a deleted name: %v, want 409 Conflict", err)
	}
	start := time.Now()
	r2 := put(t, p, "team/key-1", "second", "e1") // same event id: still written
	if !r2.Created || r2.Duplicate || r2.Version == r1.Version {
		t.Fatalf("Put after soft delete: %+v", r2)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Errorf("Put did not wait for the asynchronous recovery")
	}
	if st, n := f.srv.SecretState(kvn); st != "active" || n != 2 {
		t.Fatalf("state %q with %d versions, want active with 2", st, n)
	}
	s, err := p.Get(ctx, "team/key-1", r1.Version)
	if err != nil || string(s.Value) != "first" {
		t.Fatalf("old version after recovery: %v", err)
	}
	// Another owner may not resurrect it.
	if err := p.Delete(ctx, providers.DeleteRequest{Name: "team/key-1", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	_, err = p.Put(ctx, providers.PutRequest{Name: "team/key-1", Value: []byte("y"), Owner: providers.Owner{TeamID: "team-b", KeyID: "k"}})
	wantKind(t, err, providers.ErrNotOwned, providers.Permanent)
	if st, _ := f.srv.SecretState(kvn); st != "deleted" {
		t.Fatalf("refused Put changed the state to %q", st)
	}
}

// wantPurged checks that a forced Delete purged kvn: Key Vault purges
// asynchronously, so the name is either still being purged (neither a
// secret nor a deleted secret) or gone, and is gone once the purge is
// done.
func wantPurged(t *testing.T, srv *kvfake.Server, kvn string) {
	t.Helper()
	for deadline := time.Now().Add(srv.PurgeDelay + 5*time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, _ := srv.SecretState(kvn)
		if st == "" {
			return
		}
		if st != "purging" {
			t.Fatalf("state after forced delete %q, want purging or purged", st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still purging %v after the forced delete", srv.PurgeDelay+5*time.Second)
		}
	}
}

func TestForceDeletePurges(t *testing.T) {
	f := newFixture(t)
	f.srv.DeleteDelay = 100 * time.Millisecond
	p := f.provider(t)
	put(t, p, "purge-me", "v", "e")
	if err := p.Delete(context.Background(), providers.DeleteRequest{Name: "purge-me", Owner: owner, Force: true}); err != nil {
		t.Fatal(err)
	}
	wantPurged(t, f.srv, "purge-me")
	// Purging disabled: Force is a soft delete.
	q := f.provider(t, func(c *keyvault.Config) { c.NoPurgeOnForce = true })
	put(t, q, "keep-me", "v", "e")
	if err := q.Delete(context.Background(), providers.DeleteRequest{Name: "keep-me", Owner: owner, Force: true}); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.srv.SecretState("keep-me"); st != "deleted" {
		t.Fatalf("state %q, want deleted", st)
	}
	// Purge protection: the purge is refused, permanently.
	f.srv.PurgeProtection = true
	put(t, p, "protected", "v", "e")
	err := p.Delete(context.Background(), providers.DeleteRequest{Name: "protected", Owner: owner, Force: true})
	wantKind(t, err, providers.ErrAccessDenied, providers.Permanent)
}

// TestPutAfterPurge: Key Vault purges asynchronously; for a few seconds
// after a purge a write is refused with 409 ObjectIsBeingDeleted while
// neither the secret nor a deleted secret can be read. That is no
// recovery in progress: Put writes again shortly, or, when the purge
// outlasts its patience, hands the retry to the caller with a short
// RetryAfter.
func TestPutAfterPurge(t *testing.T) {
	f := newFixture(t)
	f.srv.PurgeDelay = 200 * time.Millisecond
	p := f.provider(t, func(c *keyvault.Config) { c.RecoverTimeout = 2 * time.Second })
	ctx := context.Background()
	put(t, p, "recreated", "first", "e1")
	if err := p.Delete(ctx, providers.DeleteRequest{Name: "recreated", Owner: owner, Force: true}); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.srv.SecretState("recreated"); st != "purging" {
		t.Fatalf("state after the forced delete %q, want purging", st)
	}
	start := time.Now()
	r := put(t, p, "recreated", "second", "e2")
	if d := time.Since(start); d > time.Second {
		t.Errorf("Put after a purge took %v; the purge takes %v", d, f.srv.PurgeDelay)
	}
	if !r.Created || r.Duplicate {
		t.Errorf("Put after a purge: %+v, want Created", r)
	}
	if st, n := f.srv.SecretState("recreated"); st != "active" || n != 1 {
		t.Fatalf("state %q with %d versions, want a new secret with 1", st, n)
	}

	// A purge that outlasts RecoverTimeout: a retryable conflict, at once.
	f.srv.PurgeDelay = time.Minute
	q := f.provider(t, func(c *keyvault.Config) { c.RecoverTimeout = 300 * time.Millisecond })
	if err := q.Delete(ctx, providers.DeleteRequest{Name: "recreated", Owner: owner, Force: true}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err := q.Put(ctx, providers.PutRequest{Name: "recreated", Value: []byte(sentinel), IdempotencyKey: "e3", Owner: owner})
	wantKind(t, err, providers.ErrConflict, providers.Retryable)
	noLeak(t, err)
	if ra := providers.RetryAfter(err); ra <= 0 || ra > 5*time.Second {
		t.Errorf("RetryAfter %v, want a short hint", ra)
	}
	if !strings.Contains(err.Error(), "ObjectIsBeingDeleted") || strings.Contains(err.Error(), "recover") {
		t.Errorf("error does not say the name is being purged: %v", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("Put gave up after %v, RecoverTimeout is 300ms", d)
	}
}

func TestThrottling(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t)
	put(t, p, "warm", "v", "e") // past the challenge
	f.srv.Inject(kvfake.Fault{Method: http.MethodPut, Status: http.StatusTooManyRequests, Code: "Throttled", RetryAfter: "7"})
	_, err := p.Put(context.Background(), providers.PutRequest{Name: "hot", Value: []byte(sentinel), IdempotencyKey: "e", Owner: owner})
	wantKind(t, err, providers.ErrThrottled, providers.Throttled)
	if d := providers.RetryAfter(err); d != 7*time.Second {
		t.Errorf("RetryAfter = %v, want 7s", d)
	}
	if !providers.IsRetryable(err) {
		t.Error("429 not retryable")
	}
	noLeak(t, err)

	// With SDK retries on, Retry-After is honoured and the write lands.
	q := f.provider(t, func(c *keyvault.Config) { c.MaxRetries = 2 })
	f.srv.Inject(kvfake.Fault{Method: http.MethodPut, Status: http.StatusTooManyRequests, Code: "Throttled", RetryAfter: "1"})
	start := time.Now()
	put(t, q, "hot", "v", "e2")
	if d := time.Since(start); d < time.Second {
		t.Errorf("retried after %v, before Retry-After", d)
	}
}

func TestClientLimiter(t *testing.T) {
	f := newFixture(t)
	// 2 per 10 s: a burst of 1, then one every 10 s (providers.WindowRate).
	p := f.provider(t, func(c *keyvault.Config) { c.CreatesPer10s = 2 })
	put(t, p, "l1", "v", "e")
	before := f.srv.Requests()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := p.Put(ctx, providers.PutRequest{Name: "l2", Value: []byte("v"), Owner: owner})
	wantKind(t, err, providers.ErrThrottled, providers.Throttled)
	if d := providers.RetryAfter(err); d < 9*time.Second {
		t.Errorf("RetryAfter %v, want about 10s", d)
	}
	if n := f.srv.Requests() - before; n > 2 {
		t.Errorf("%d requests reached the vault, want only the reads", n)
	}
	if cfg, _ := keyvault.ConfigFromOptions(map[string]string{"vault_url": "https://v.vault.azure.net"}, noEnv); cfg.CreatesPer10s != 300 {
		t.Errorf("default CreatesPer10s %v", cfg.CreatesPer10s)
	}
}

func TestErrorClassification(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t)
	put(t, p, "c", sentinel, "e")
	for _, tc := range []struct {
		status int
		code   string
		want   error
		kind   providers.Kind
	}{
		{401, "Unauthorized", providers.ErrAccessDenied, providers.Permanent},
		{403, "Forbidden", providers.ErrAccessDenied, providers.Permanent},
		{404, "SecretNotFound", providers.ErrNotFound, providers.Permanent},
		{409, "Conflict", providers.ErrConflict, providers.Retryable},
		{429, "Throttled", providers.ErrThrottled, providers.Throttled},
		{400, "BadParameter", providers.ErrInvalid, providers.Permanent},
		{500, "InternalServerError", providers.ErrUnavailable, providers.Retryable},
		{503, "ServiceUnavailable", providers.ErrUnavailable, providers.Retryable},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			// A 401 is retried once with a new token: it must persist.
			f.srv.Inject(kvfake.Fault{Method: http.MethodGet, Status: tc.status, Code: tc.code, Times: 2})
			defer f.srv.ClearFaults()
			_, err := p.Get(context.Background(), "c", "")
			wantKind(t, err, tc.want, tc.kind)
			noLeak(t, err)
			if !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
				t.Errorf("error %q does not name the status", err)
			}
		})
	}
	// Network failure: the vault is gone.
	f.srv.Close()
	_, err := p.Get(context.Background(), "c", "")
	wantKind(t, err, providers.ErrUnavailable, providers.Retryable)
	noLeak(t, err)
}

func TestSentinelNeverInErrors(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t)
	ctx := context.Background()
	put(t, p, "s", sentinel, "e")
	var errs []error
	for _, st := range []int{400, 403, 429, 500, 503} {
		f.srv.Inject(kvfake.Fault{Method: http.MethodPut, Status: st})
		_, err := p.Put(ctx, providers.PutRequest{Name: "s", Value: []byte(sentinel + "-2"), IdempotencyKey: "e2", Owner: owner})
		errs = append(errs, err)
	}
	_, err := p.Put(ctx, providers.PutRequest{Name: "s", Value: []byte(sentinel), Owner: providers.Owner{TeamID: "x"}})
	errs = append(errs, err)
	_, err = p.Put(ctx, providers.PutRequest{Name: "big", Value: []byte(strings.Repeat(sentinel, 4000)), Owner: owner})
	errs = append(errs, err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("no error")
		}
		noLeak(t, err)
	}
}

func TestTagsAndContentType(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t, func(c *keyvault.Config) { c.ContentType = "application/x-litellm-key" })
	_, err := p.Put(context.Background(), providers.PutRequest{Name: "t/1", Value: []byte("v"), IdempotencyKey: "evt-1", Owner: owner, Description: "d"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.raw(t).GetSecret(context.Background(), keyvault.KVName("t/1"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ContentType == nil || *res.ContentType != "application/x-litellm-key" {
		t.Errorf("content type %v", res.ContentType)
	}
	for k, v := range map[string]string{"managed-by": "keyrelay", "keyrelay-team": "team-a", "keyrelay-key": "key-1", "keyrelay-event": "evt-1", "keyrelay-description": "d", "keyrelay-name": "t/1"} {
		if res.Tags[k] == nil || *res.Tags[k] != v {
			t.Errorf("tag %s = %v, want %q", k, res.Tags[k], v)
		}
	}
	long := strings.Repeat("é", 200) // 400 bytes: cut on a rune boundary
	if _, err := p.Put(context.Background(), providers.PutRequest{Name: "t/3", Value: []byte("v"), Owner: owner, Description: long}); err != nil {
		t.Fatalf("Put with a long description: %v", err)
	}
	s3, err := p.Get(context.Background(), "t/3", "")
	if err != nil || len(s3.Tags["keyrelay-description"]) != 256 || !strings.HasPrefix(long, s3.Tags["keyrelay-description"]) {
		t.Errorf("description tag %q, %v", s3.Tags["keyrelay-description"], err)
	}
	tags := map[string]string{}
	for i := 0; i < 12; i++ {
		tags[fmt.Sprint("t", i)] = "x"
	}
	_, err = p.Put(context.Background(), providers.PutRequest{Name: "t/2", Value: []byte("v"), Owner: owner, Tags: tags})
	wantKind(t, err, providers.ErrInvalid, providers.Permanent)
}

func wantKind(t *testing.T, err, target error, kind providers.Kind) {
	t.Helper()
	var pe *providers.Error
	if err == nil || !errors.Is(err, target) || !errors.As(err, &pe) || pe.Kind != kind {
		t.Fatalf("error %v, want %v of kind %v", err, target, kind)
	}
	t.Logf("error: %v", err)
}

func noLeak(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, bad := range []string{sentinel, testToken, "api-version", "https://"} {
			if strings.Contains(s, bad) {
				t.Errorf("error text contains %q: %s", bad, s)
			}
		}
	}
}

// TestClientSecretCredential runs azidentity's client-secret credential
// against the fake's token endpoint (authority_host), through the CA
// bundle, from options as an operator would write them.
func TestClientSecretCredential(t *testing.T) {
	f := newFixture(t)
	f.srv.ClientID = "11111111-2222-3333-4444-555555555555"
	f.srv.ClientSecret = "client-secret-value-1"
	opts := map[string]string{
		"vault_url": f.srv.URL, "ca_bundle": f.cfg.CABundle, "authority_host": f.srv.URL,
		"disable_instance_discovery": "true", "disable_challenge_resource_verification": "true",
	}
	env := map[string]string{"AZURE_TENANT_ID": kvfake.DefaultTenant, "AZURE_CLIENT_ID": f.srv.ClientID, "AZURE_CLIENT_SECRET": f.srv.ClientSecret}
	r := providers.NewRegistry()
	keyvault.Register(r)
	p, err := r.Open(context.Background(), keyvault.Name, providers.Config{Options: opts, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Put(context.Background(), providers.PutRequest{Name: "cred", Value: []byte("v"), Owner: owner}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if f.srv.TokensIssued() < 1 || f.srv.Challenged() < 1 {
		t.Errorf("tokens %d, challenges %d", f.srv.TokensIssued(), f.srv.Challenged())
	}
	// A wrong secret: permanent access denied, secret not echoed.
	// (A new registry: instances are cached by options, not environment.)
	env["AZURE_CLIENT_SECRET"] = "wrong-secret-value-2"
	r = providers.NewRegistry()
	keyvault.Register(r)
	q, err := r.Open(context.Background(), keyvault.Name, providers.Config{Options: opts, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = q.Get(context.Background(), "cred", "")
	wantKind(t, err, providers.ErrAccessDenied, providers.Permanent)
	if strings.Contains(err.Error(), "wrong-secret-value-2") || strings.Contains(err.Error(), "https://") {
		t.Errorf("error leaks: %v", err)
	}
}
