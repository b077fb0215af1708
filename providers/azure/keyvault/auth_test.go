package keyvault_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

// secretProvider opens a provider that authenticates with azidentity's
// client-secret credential against the fake's token endpoint, as
// production does.
func (f *fixture) secretProvider(t *testing.T) *keyvault.Provider {
	t.Helper()
	f.srv.ClientID = "11111111-2222-3333-4444-555555555555"
	f.srv.ClientSecret = "client-secret-value-1"
	cfg := f.cfg
	cfg.AuthorityHost = f.srv.URL
	cfg.DisableInstanceDiscovery = true
	cfg.TenantID = kvfake.DefaultTenant
	cfg.ClientID = f.srv.ClientID
	cfg.ClientSecret = f.srv.ClientSecret
	p, err := keyvault.New(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// TestTokenEndpointFailures: a token endpoint that cannot be reached (no
// HTTP response) or answers 5xx/429 or a transient AADSTS code is a
// transient failure; invalid client credentials are permanent. After the outage the same provider works.
func TestTokenEndpointFailures(t *testing.T) {
	for name, tc := range map[string]struct {
		fault kvfake.TokenFault
		want  error
		kind  providers.Kind
	}{
		"unreachable":        {kvfake.TokenFault{Drop: true, Times: 100}, providers.ErrUnavailable, providers.Retryable},
		"503":                {kvfake.TokenFault{Status: 503, Times: 100}, providers.ErrUnavailable, providers.Retryable},
		"500":                {kvfake.TokenFault{Status: 500, Times: 100}, providers.ErrUnavailable, providers.Retryable},
		"429":                {kvfake.TokenFault{Status: 429, Error: "temporarily_unavailable", Times: 100}, providers.ErrUnavailable, providers.Retryable},
		"400 invalid_client": {kvfake.TokenFault{Status: 400, Error: "invalid_client", Times: 100}, providers.ErrAccessDenied, providers.Permanent},
		"401 invalid_client": {kvfake.TokenFault{Status: 401, Error: "invalid_client", Times: 100}, providers.ErrAccessDenied, providers.Permanent},
		// Entra ID's "transient error, try again" comes with a 400.
		"400 AADSTS90033": {kvfake.TokenFault{Status: 400, Error: "temporarily_unavailable", Code: 90033, Times: 100}, providers.ErrUnavailable, providers.Retryable},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			p := f.secretProvider(t)
			f.srv.InjectTokenFault(tc.fault)
			_, err := p.Put(context.Background(), providers.PutRequest{Name: "blip", Value: []byte(sentinel), IdempotencyKey: "e1", Owner: owner})
			wantKind(t, err, tc.want, tc.kind)
			noLeak(t, err)
			if providers.IsRetryable(err) != (tc.kind != providers.Permanent) {
				t.Errorf("IsRetryable = %v", providers.IsRetryable(err))
			}
			// The endpoint is back: the same provider writes.
			f.srv.ClearTokenFaults()
			put(t, p, "blip", "v", "e1")
		})
	}
}

// TestTokenRevokedRefreshes: after the vault stops accepting the token the
// provider holds (revocation, or a clock skew that makes it expired for the
// vault), a 401 makes the provider get a new token and retry once: events
// go on without a restart.
func TestTokenRevokedRefreshes(t *testing.T) {
	f := newFixture(t)
	f.srv.Token = ""
	p := f.secretProvider(t)
	ctx := context.Background()
	put(t, p, "rev", "v1", "e1")
	issued := f.srv.TokensIssued()

	if n := f.srv.RevokeTokens(); n < 1 {
		t.Fatalf("revoked %d tokens", n)
	}
	put(t, p, "rev", "v2", "e2")
	if s, err := p.Get(ctx, "rev", ""); err != nil || string(s.Value) != "v2" {
		t.Fatalf("Get after revocation: %v", err)
	}
	if f.srv.TokensIssued() <= issued {
		t.Errorf("no new token after the revocation")
	}

	// Clock skew: the vault's clock runs past the token's expiry while
	// the client still thinks it valid.
	issued = f.srv.TokensIssued()
	f.srv.AdvanceClock(2 * kvfake.DefaultTokenLifetime)
	put(t, p, "rev", "v3", "e3")
	if err := p.UpdateTags(ctx, providers.TagRequest{Name: "rev", Owner: owner, Description: "d"}); err != nil {
		t.Fatalf("UpdateTags: %v", err)
	}
	if f.srv.TokensIssued() <= issued {
		t.Errorf("no new token after the expiry")
	}
	if v, err := p.Versions(ctx, "rev"); err != nil || len(v) != 3 {
		t.Fatalf("Versions: %d, %v", len(v), err)
	}

	// Concurrent calls that meet the same rejected token share one
	// refresh.
	issued = f.srv.TokensIssued()
	f.srv.RevokeTokens()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Put(ctx, providers.PutRequest{Name: fmt.Sprint("conc-", i), Value: []byte("v"), Owner: owner})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Put after revocation: %v", err)
		}
	}
	if n := f.srv.TokensIssued() - issued; n < 1 || n > 2 {
		t.Errorf("%d tokens requested by 8 concurrent calls after one revocation, want 1 (2 at most)", n)
	}
}

// TestVaultRejectsEveryToken: a 401 that a fresh token does not cure is
// permanent access denied, after exactly one refresh.
func TestVaultRejectsEveryToken(t *testing.T) {
	f := newFixture(t)
	f.srv.Token = ""
	p := f.secretProvider(t)
	put(t, p, "rej", "v1", "e1")
	f.srv.Inject(kvfake.Fault{Status: http.StatusUnauthorized, Code: "Unauthorized", Times: 2})
	before := f.srv.TokensIssued()
	_, err := p.Get(context.Background(), "rej", "")
	wantKind(t, err, providers.ErrAccessDenied, providers.Permanent)
	noLeak(t, err)
	if n := f.srv.TokensIssued() - before; n != 1 {
		t.Errorf("%d tokens requested for one 401, want 1", n)
	}
}

// disable marks the current version of name disabled, as an operator
// would in the portal.
func (f *fixture) disable(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	raw := f.raw(t)
	off := false
	pager := raw.NewListSecretPropertiesVersionsPager(keyvault.KVName(name), nil)
	var newest *azsecrets.SecretProperties
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, sp := range page.Value {
			if newest == nil || !sp.Attributes.Created.Before(*newest.Attributes.Created) {
				newest = sp
			}
		}
	}
	if _, err := raw.UpdateSecretProperties(ctx, keyvault.KVName(name), newest.ID.Version(),
		azsecrets.UpdateSecretPropertiesParameters{SecretAttributes: &azsecrets.SecretAttributes{Enabled: &off}}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestDisabledCurrentVersion: a secret whose current version an operator
// disabled reads as ErrSecretDisabled (not a bare access denied); a
// rotation writes a new enabled version, tags can be updated and the
// secret deleted, ownership still checked from its tags.
func TestDisabledCurrentVersion(t *testing.T) {
	f := newFixture(t)
	p := f.provider(t)
	ctx := context.Background()
	put(t, p, "dis", "v1", "e1")
	f.disable(t, "dis")

	_, err := p.Get(ctx, "dis", "")
	wantKind(t, err, keyvault.ErrSecretDisabled, providers.Permanent)
	noLeak(t, err)

	// Another owner is still refused.
	_, err = p.Put(ctx, providers.PutRequest{Name: "dis", Value: []byte("x"), IdempotencyKey: "e9", Owner: providers.Owner{TeamID: "team-b", KeyID: "k"}})
	wantKind(t, err, providers.ErrNotOwned, providers.Permanent)
	// The same event again is a duplicate: a replay does not undo the
	// operator's disabling.
	r, err := p.Put(ctx, providers.PutRequest{Name: "dis", Value: []byte("v1"), IdempotencyKey: "e1", Owner: owner})
	if err != nil || !r.Duplicate {
		t.Fatalf("replay of the disabled version's event: %+v, %v", r, err)
	}
	// A rotation writes its new, enabled version.
	r = put(t, p, "dis", "v2", "e2")
	if r.Duplicate || r.Created {
		t.Fatalf("rotation over a disabled version: %+v", r)
	}
	if s, err := p.Get(ctx, "dis", ""); err != nil || string(s.Value) != "v2" || s.Version != r.Version {
		t.Fatalf("Get after the rotation: %v", err)
	}

	f.disable(t, "dis")
	if err := p.UpdateTags(ctx, providers.TagRequest{Name: "dis", Owner: owner, Description: "new"}); err != nil {
		t.Fatalf("UpdateTags on a disabled version: %v", err)
	}
	vs, err := p.Versions(ctx, "dis")
	if err != nil || len(vs) != 2 || !vs[1].Current || vs[1].Version != r.Version {
		t.Fatalf("Versions of a disabled secret: %+v, %v", vs, err)
	}
	err = p.Delete(ctx, providers.DeleteRequest{Name: "dis", Owner: providers.Owner{TeamID: "team-b", KeyID: "k"}})
	wantKind(t, err, providers.ErrNotOwned, providers.Permanent)
	if err := p.Delete(ctx, providers.DeleteRequest{Name: "dis", Owner: owner, Force: true}); err != nil {
		t.Fatalf("Delete of a disabled secret: %v", err)
	}
	wantPurged(t, f.srv, keyvault.KVName("dis"))
}
