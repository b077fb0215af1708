package keyvault_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
)

// bootingIMDS is the transport of a DefaultAzureCredential on a node whose
// instance metadata service (169.254.169.254) refuses connections the
// first times (the node or a pod identity agent still starting), then
// answers with testToken.
type bootingIMDS struct {
	mu      sync.Mutex
	refuses int
	calls   int
}

func (b *bootingIMDS) Do(r *http.Request) (*http.Response, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.URL.Hostname() != "169.254.169.254" {
		return nil, errors.New("unexpected request to " + r.URL.Hostname())
	}
	b.calls++
	if b.refuses > 0 {
		b.refuses--
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	if r.Header.Get("Metadata") == "" {
		// DefaultAzureCredential's probe: any answer means "available".
		return &http.Response{StatusCode: http.StatusBadRequest, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(nil)), Request: r}, nil
	}
	body := `{"access_token":"` + testToken + `","expires_in":"3599","expires_on":"4102444800","resource":"https://vault.azure.net","token_type":"Bearer"}`
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": []string{"application/json"}},
		Body: io.NopCloser(bytes.NewReader([]byte(body))), Request: r}, nil
}

// defaultCredentialOnly makes DefaultAzureCredential see a production
// environment with nothing but the managed identity endpoint: no client
// secret, certificate or workload identity variables, no developer tools.
func defaultCredentialOnly(t *testing.T) {
	t.Setenv("AZURE_TOKEN_CREDENTIALS", "prod")
	for _, k := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
		"AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
		"MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST"} {
		t.Setenv(k, "") // restored after the test
		// azidentity tells set from unset (os.LookupEnv).
		if err := os.Unsetenv(k); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDefaultCredentialUnavailableIsRetryable: DefaultAzureCredential
// with every source unavailable, because the managed identity endpoint
// refuses connections at boot, is an outage that passes: the write must
// be retryable ErrUnavailable (not a permanent access denied that
// dead-letters the event), and the same provider writes once the endpoint
// answers.
func TestDefaultCredentialUnavailableIsRetryable(t *testing.T) {
	defaultCredentialOnly(t)
	f := newFixture(t)
	imds := &bootingIMDS{refuses: 1}
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: azcore.ClientOptions{Transport: imds}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyvault.New(context.Background(), f.cfg, nil, keyvault.WithCredential(cred))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	req := providers.PutRequest{Name: "boot", Value: []byte(sentinel), IdempotencyKey: "e1", Owner: owner}
	_, err = p.Put(context.Background(), req)
	if err == nil {
		t.Fatal("Put succeeded while no credential source was available")
	}
	t.Logf("Put: %v", err)
	wantKind(t, err, providers.ErrUnavailable, providers.Retryable)
	if errors.Is(err, providers.ErrAccessDenied) {
		t.Errorf("Put while the identity endpoint refused connections: %v, want no ErrAccessDenied", err)
	}
	noLeak(t, err)
	if _, err := p.Put(context.Background(), req); err != nil {
		t.Fatalf("Put once the identity endpoint answers: %v", err)
	}
}
