package kms

import (
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// countingFront answers every KMS request with the error typ (HTTP 400)
// and counts the requests that reach it.
func countingFront(t *testing.T, typ string) (url string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	h := kmsError(400, typ, "")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, requests
}

// TestLimitExceededIsAQuotaNotThrottling: KMS throttles request rates
// with ThrottlingException; LimitExceededException is a quota (keys,
// aliases, grants) that none of the operations keyrelay calls can wait
// out. Through a client built by NewClient (the SDK's standard retryer,
// max_attempts 3) and the Sealer's own retries (3 attempts), each of
// GenerateDataKey, Encrypt and Decrypt sends one request and fails
// permanently with ErrQuotaExceeded, not ErrThrottled; a
// ThrottlingException is still retried by the SDK.
func TestLimitExceededIsAQuotaNotThrottling(t *testing.T) {
	binding := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sealCfg := seal.Config{CallTimeout: 5 * time.Second, MaxAttempts: 3}
	ops := map[string]func(t *testing.T, api API) error{
		"GenerateDataKey (Sealer.Seal)": func(t *testing.T, api API) error {
			_, err := testSealer(t, api, "alias/k", sealCfg).Seal(bg, []byte(sentinel), binding)
			return err
		},
		"Encrypt (Wrapper.Wrap)": func(t *testing.T, api API) error {
			w, err := NewWrapper(api, "alias/k")
			if err != nil {
				t.Fatal(err)
			}
			_, err = w.Wrap(bg, make([]byte, 32), seal.Context{})
			return err
		},
		"Decrypt (Sealer.Open)": func(t *testing.T, api API) error {
			sv := &events.SealedValue{Alg: events.AlgA256GCMKMS, KID: "arn:aws:kms:us-east-1:111122223333:key/k",
				EDK: []byte("edk"), Nonce: make([]byte, 12), Ciphertext: make([]byte, 32)}
			_, err := testSealer(t, api, "", sealCfg).Open(bg, sv, binding)
			return err
		},
		"Decrypt (Decrypter)": func(t *testing.T, api API) error {
			_, err := NewDecrypter(api, "").Decrypt(bg, "aws_kms/"+base64.StdEncoding.EncodeToString([]byte("blob")))
			return err
		},
	}
	client := func(t *testing.T, url string) API {
		c, err := NewClient(bg, map[string]string{"endpoint": url, "region": "us-east-1", "max_attempts": "3",
			"aws_access_key_id": "AKIDFAULT", "aws_secret_access_key": "fault-secret-key-value"}, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			url, requests := countingFront(t, "LimitExceededException")
			err := op(t, client(t, url))
			var pe *providers.Error
			if !errors.As(err, &pe) || pe.Kind != providers.Permanent || providers.IsRetryable(err) {
				t.Errorf("error %v is not a permanent *providers.Error", err)
			}
			if !errors.Is(err, ErrQuotaExceeded) || !errors.Is(err, providers.ErrInvalid) || errors.Is(err, providers.ErrThrottled) {
				t.Errorf("error %v: want ErrQuotaExceeded and ErrInvalid, not ErrThrottled", err)
			}
			if Code(err) != "LimitExceededException" {
				t.Errorf("Code = %q", Code(err))
			}
			if n := requests.Load(); n != 1 {
				t.Errorf("LimitExceededException was retried: %d requests, want 1", n)
			}
		})
	}
	t.Run("ThrottlingException is still retried by the SDK", func(t *testing.T) {
		url, requests := countingFront(t, "ThrottlingException")
		err := ops["Encrypt (Wrapper.Wrap)"](t, client(t, url))
		if !errors.Is(err, providers.ErrThrottled) {
			t.Errorf("error %v is not ErrThrottled", err)
		}
		if n := requests.Load(); n != 3 {
			t.Errorf("%d requests, want 3 (max_attempts)", n)
		}
	})
}
