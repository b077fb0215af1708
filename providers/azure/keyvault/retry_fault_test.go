package keyvault_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

// With max_retries set, the SDK's own retry policy must not resend a Set
// Secret whose first attempt landed (Key Vault committed it, the response
// was a 503 or a reset connection): Set Secret is not idempotent, each
// send makes a version. The write goes back to keyrelay's retry, whose
// redelivery finds the event's version (a Duplicate).
func TestSDKRetryDoesNotDuplicateVersion(t *testing.T) {
	f := newFixture(t)
	f.srv.Instant()
	p := f.provider(t, func(c *keyvault.Config) { c.MaxRetries = 3 })
	ctx := context.Background()
	req := providers.PutRequest{Name: "sdk-retry", Value: []byte("v1"), IdempotencyKey: "evt-1", Owner: owner}
	f.srv.Inject(kvfake.Fault{Method: http.MethodPut, PathPrefix: "/secrets/", Status: http.StatusServiceUnavailable, Times: 1, Land: true})
	if _, err := p.Put(ctx, req); err != nil {
		// Retried by the caller, as the worker does.
		r, err := p.Put(ctx, req)
		if err != nil {
			t.Fatalf("retried Put: %v", err)
		}
		if !r.Duplicate {
			t.Errorf("retried Put = %+v, want a Duplicate of the landed write", r)
		}
	}
	vs, err := p.Versions(ctx, "sdk-retry")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 {
		t.Fatalf("one event made %d versions, want 1: %+v", len(vs), vs)
	}
	// Reads are still retried by the SDK.
	f.srv.Inject(kvfake.Fault{Method: http.MethodGet, PathPrefix: "/secrets/", Status: http.StatusServiceUnavailable, Times: 1})
	if _, err := p.Get(ctx, "sdk-retry", ""); err != nil {
		t.Fatalf("Get after one 503 with max_retries 3: %v", err)
	}
}

// flakyIMDS is a managed identity whose endpoint does not answer
// DefaultAzureCredential's one-second probe the first times (a busy node,
// a pod identity agent starting), then answers.
type flakyIMDS struct {
	mu       sync.Mutex
	timeouts int
}

func (c *flakyIMDS) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timeouts > 0 {
		c.timeouts--
		// azidentity's own message for a probe that timed out.
		return azcore.AccessToken{}, azidentity.NewCredentialUnavailableError("ManagedIdentityCredential: managed identity timed out. See https://aka.ms/azsdk/go/identity/troubleshoot#dac for more information")
	}
	return azcore.AccessToken{Token: testToken, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// A managed identity endpoint that is slow to answer is an outage of
// our infrastructure, not a credential keyrelay lacks: the write must be
// retryable, or the event is dead-lettered as access denied.
func TestIMDSTimeoutIsRetryable(t *testing.T) {
	f := newFixture(t)
	chain, err := azidentity.NewChainedTokenCredential([]azcore.TokenCredential{&flakyIMDS{timeouts: 1}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyvault.New(context.Background(), f.cfg, nil, keyvault.WithCredential(chain))
	if err != nil {
		t.Fatal(err)
	}
	req := providers.PutRequest{Name: "imds", Value: []byte(sentinel), IdempotencyKey: "e1", Owner: owner}
	_, err = p.Put(context.Background(), req)
	if err == nil {
		t.Fatal("Put succeeded while the identity endpoint timed out")
	}
	t.Logf("Put: %v", err)
	if !providers.IsRetryable(err) || !errors.Is(err, providers.ErrUnavailable) || errors.Is(err, providers.ErrAccessDenied) {
		t.Errorf("Put while the identity endpoint timed out: %v (retryable %v), want a retryable ErrUnavailable", err, providers.IsRetryable(err))
	}
	noLeak(t, err)
	if _, err := p.Put(context.Background(), req); err != nil {
		t.Fatalf("Put once the identity endpoint answers: %v", err)
	}
}
