package secretmanager_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// serviceAccountFile writes a service-account key whose token endpoint is
// a local server handing out a dummy token.
func serviceAccountFile(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"dummy-token","token_type":"Bearer","expires_in":3600}`))
	}))
	t.Cleanup(tok.Close)
	b, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     project,
		"private_key_id": "k1",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "keyrelay@" + project + ".iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tok.URL + "/token",
	})
	f := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestTLSWithCABundleAndServiceAccount(t *testing.T) {
	fake := smfake.StartTLS(t)
	opts := map[string]string{
		secretmanager.OptionProject:         project,
		secretmanager.OptionEndpoint:        fake.Addr(),
		secretmanager.OptionCABundle:        fake.CAFile(),
		secretmanager.OptionCredentialsFile: serviceAccountFile(t),
	}
	p, err := secretmanager.Factory(context.Background(), providers.Config{Options: opts, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.(providers.Closer).Close()
	ctx := context.Background()
	if _, err := p.Put(ctx, providers.PutRequest{Name: "tls/key", Value: []byte("v"), Owner: owner}); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}
	if s, err := p.Get(ctx, "tls/key", ""); err != nil || string(s.Value) != "v" {
		t.Fatalf("Get over TLS: %v %v", s, err)
	}

	// Without the CA bundle the certificate is not trusted.
	delete(opts, secretmanager.OptionCABundle)
	q, err := secretmanager.Factory(ctx, providers.Config{Options: opts, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer q.(providers.Closer).Close()
	if _, err := q.Get(ctx, "tls/key", ""); err == nil || errors.Is(err, providers.ErrNotFound) {
		t.Fatalf("Get trusting an unknown certificate: %v", err)
	}
}
