package kms

import (
	"encoding/base64"
	"errors"
	"net/http"
	"testing"
	"time"

	"cloud.google.com/go/auth"
	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/seal"
)

// startTLSFake starts a StartTLS fake with testKey, and NewClient's client
// on it (ca_bundle) whose calls carry access tokens the fake issued.
func startTLSFake(t *testing.T) (*kmsfake.Server, *kmsapi.KeyManagementClient) {
	t.Helper()
	fake, err := kmsfake.StartTLS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	if _, err := fake.CreateKey(testKey); err != nil {
		t.Fatal(err)
	}
	client, err := newClient(bg, map[string]string{OptionEndpoint: fake.Addr(), OptionCABundle: fake.CAFile()},
		func() (*auth.Credentials, error) { return fake.Credentials(), nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return fake, client
}

// A call Cloud KMS answers UNAUTHENTICATED for an expired token is sent
// once more with a new token, and succeeds.
func TestExpiredTokenIsRefreshedOnce(t *testing.T) {
	wc := seal.Context{Alg: events.AlgA256GCMGCPKMS, TeamID: "team-a"}
	dataKey := make([]byte, 32)
	var ahead time.Duration
	for how, expire := range map[string]func(*kmsfake.Server){
		"revoked": (*kmsfake.Server).ExpireTokens,
		"server clock ahead": func(f *kmsfake.Server) {
			ahead += 2 * time.Hour
			d := ahead
			f.SetClock(func() time.Time { return time.Now().Add(d) })
		},
	} {
		t.Run(how, func(t *testing.T) {
			fake, client := startTLSFake(t)
			w, err := NewWrapper(client, testKey)
			if err != nil {
				t.Fatal(err)
			}
			d := NewDecrypter(client, testKey)
			enc, err := client.Encrypt(bg, &kmspb.EncryptRequest{Name: testKey, Plaintext: []byte(sentinel)})
			if err != nil {
				t.Fatal(err)
			}
			b64 := base64.StdEncoding.EncodeToString(enc.GetCiphertext())
			var wrapped seal.Wrapped
			ops := []struct {
				name string
				call func() error
			}{
				{"Encrypt", func() error { wrapped, err = w.Wrap(bg, dataKey, wc); return err }},
				{"Decrypt", func() error { _, err := w.Unwrap(bg, wrapped.KID, wrapped.EDK, wc); return err }},
				{"LiteLLM Decrypt", func() error { _, err := d.Decrypt(bg, b64); return err }},
			}
			for _, op := range ops {
				issued := fake.TokensIssued()
				expire(fake)
				if err := op.call(); err != nil {
					t.Fatalf("%s after the token expired: %v", op.name, err)
				}
				if n := fake.TokensIssued() - issued; n != 1 {
					t.Errorf("%s: %d new tokens, want 1", op.name, n)
				}
			}
		})
	}
}

// A token Cloud KMS refuses again after the refresh is a permanent
// ErrAccessDenied, after one refresh.
func TestTokenRefusedAfterRefreshIsAccessDenied(t *testing.T) {
	fake, client := startTLSFake(t)
	w, err := NewWrapper(client, testKey)
	if err != nil {
		t.Fatal(err)
	}
	wc := seal.Context{Alg: events.AlgA256GCMGCPKMS, TeamID: "team-a"}
	if _, err := w.Wrap(bg, make([]byte, 32), wc); err != nil {
		t.Fatal(err)
	}
	fake.SetTokenLifetime(0) // every new token is expired on arrival
	fake.ExpireTokens()
	issued, calls := fake.TokensIssued(), fake.Calls("Encrypt")
	_, err = w.Wrap(bg, make([]byte, 32), wc)
	if !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) || Code(err) != codes.Unauthenticated {
		t.Fatalf("Encrypt with tokens refused: %v, want permanent ErrAccessDenied (UNAUTHENTICATED)", err)
	}
	if n := fake.TokensIssued() - issued; n != 1 {
		t.Errorf("%d new tokens, want 1 (one refresh)", n)
	}
	if n := fake.Calls("Encrypt") - calls; n != 2 {
		t.Errorf("%d Encrypt calls, want 2 (the call and its one retry)", n)
	}
}

// A token endpoint that is down fails the call as retryable
// ErrUnavailable (our infrastructure, not the event); once it is back the
// call goes through.
func TestTokenEndpointDownIsRetryable(t *testing.T) {
	fake, client := startTLSFake(t)
	w, err := NewWrapper(client, testKey)
	if err != nil {
		t.Fatal(err)
	}
	wc := seal.Context{Alg: events.AlgA256GCMGCPKMS, TeamID: "team-a"}
	fake.FailTokenRequests(http.StatusServiceUnavailable, 1)
	if _, err := w.Wrap(bg, make([]byte, 32), wc); !errors.Is(err, providers.ErrUnavailable) || !providers.IsRetryable(err) {
		t.Fatalf("Encrypt while the token endpoint is down: %v, want retryable ErrUnavailable", err)
	}
	if _, err := w.Wrap(bg, make([]byte, 32), wc); err != nil {
		t.Fatalf("Encrypt once the token endpoint is back: %v", err)
	}
}
