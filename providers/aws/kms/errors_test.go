package kms

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// faultClient is a real SDK client talking to handler, which answers the
// KMS JSON 1.1 protocol (X-Amz-Target, error "__type") with faults. One
// attempt per call, so every fault reaches the classifier.
func faultClient(t *testing.T, handler http.HandlerFunc) *awskms.Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return clientFor(srv.URL)
}

func clientFor(url string) *awskms.Client {
	return awskms.NewFromConfig(aws.Config{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(url),
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDFAULT", "fault-secret-key-value", ""),
		RetryMaxAttempts: 1,
	})
}

func kmsError(status int, typ, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("X-Amzn-Requestid", "6f1c4b52-request-id-noise")
		w.WriteHeader(status)
		if typ == "" && msg == "" {
			return
		}
		body := fmt.Sprintf(`{"__type":%q`, typ)
		if msg != "" {
			body += fmt.Sprintf(`,"message":%q`, msg)
		}
		_, _ = io.WriteString(w, body+"}")
	}
}

// Every class of KMS failure, through the real SDK, for each operation.
func TestErrorClassification(t *testing.T) {
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}()
	secretInMessage := "Value '" + sentinel + "' at 'plaintext' failed; blob " + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 48))
	tests := []struct {
		name    string
		handler http.HandlerFunc
		url     string // instead of handler
		kind    providers.Kind
		is      error
		code    string
		keepMsg string // a fragment of KMS's message the error must keep
	}{
		{name: "throttling", handler: kmsError(400, "ThrottlingException", "Rate exceeded"), kind: providers.Throttled, is: providers.ErrThrottled, code: "ThrottlingException"},
		{name: "limit exceeded (a quota, not a rate)", handler: kmsError(400, "LimitExceededException", ""), kind: providers.Permanent, is: ErrQuotaExceeded, code: "LimitExceededException"},
		{name: "429 without a type", handler: kmsError(429, "", ""), kind: providers.Throttled, is: providers.ErrThrottled},
		{name: "KMS internal error", handler: kmsError(500, "KMSInternalException", secretInMessage), kind: providers.Retryable, is: providers.ErrUnavailable, code: "KMSInternalException"},
		{name: "dependency timeout", handler: kmsError(503, "DependencyTimeoutException", ""), kind: providers.Retryable, is: providers.ErrUnavailable, code: "DependencyTimeoutException"},
		{name: "key unavailable", handler: kmsError(500, "KeyUnavailableException", "try later"), kind: providers.Retryable, is: providers.ErrUnavailable, code: "KeyUnavailableException", keepMsg: "try later"},
		{name: "503 without a body", handler: kmsError(503, "", ""), kind: providers.Retryable, is: providers.ErrUnavailable},
		{name: "502 HTML from a proxy", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(502)
			_, _ = io.WriteString(w, "<html>bad gateway "+sentinel+"</html>")
		}, kind: providers.Retryable, is: providers.ErrUnavailable},
		{name: "expired token", handler: kmsError(400, "ExpiredTokenException", ""), kind: providers.Retryable, is: providers.ErrUnavailable, code: "ExpiredTokenException"},
		{name: "access denied", handler: kmsError(400, "AccessDeniedException",
			"User: arn:aws:iam::111122223333:user/gateway is not authorized to perform: kms:Decrypt on this resource. Token AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHw=="),
			kind: providers.Permanent, is: providers.ErrAccessDenied, code: "AccessDeniedException", keepMsg: "user/gateway is not authorized"},
		{name: "signature expired (clock skew)", handler: kmsError(400, "InvalidSignatureException",
			"Signature expired: 20261207T060000Z is now earlier than 20261207T064500Z (20261207T070000Z - 15 min.)"),
			kind: providers.Retryable, is: ErrClockSkew, code: "InvalidSignatureException"},
		{name: "signature mismatch", handler: kmsError(400, "InvalidSignatureException",
			"The request signature we calculated does not match the signature you provided."),
			kind: providers.Permanent, is: providers.ErrAccessDenied, code: "InvalidSignatureException"},
		{name: "unrecognized client", handler: kmsError(400, "UnrecognizedClientException", "The security token included in the request is invalid"), kind: providers.Permanent, is: providers.ErrAccessDenied, code: "UnrecognizedClientException"},
		{name: "invalid ciphertext (namespaced type)", handler: kmsError(400, "com.amazonaws.kms#InvalidCiphertextException", ""), kind: providers.Permanent, is: ErrInvalidCiphertext, code: "InvalidCiphertextException"},
		{name: "incorrect key", handler: kmsError(400, "IncorrectKeyException", secretInMessage), kind: providers.Permanent, is: ErrInvalidCiphertext, code: "IncorrectKeyException"},
		{name: "validation echoing input", handler: kmsError(400, "ValidationException", secretInMessage), kind: providers.Permanent, is: providers.ErrInvalid, code: "ValidationException"},
		{name: "disabled key", handler: kmsError(400, "DisabledException", "arn:aws:kms:us-east-1:111122223333:key/k is disabled."), kind: providers.Permanent, is: ErrKeyUnusable, code: "DisabledException", keepMsg: "is disabled"},
		{name: "unknown 4xx", handler: kmsError(400, "SomethingNewException", secretInMessage), kind: providers.Permanent, is: providers.ErrInvalid, code: "SomethingNewException"},
		{name: "connection refused", url: closed, kind: providers.Retryable, is: providers.ErrUnavailable},
		{name: "connection dropped", handler: func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}, kind: providers.Retryable, is: providers.ErrUnavailable},
		{name: "timeout", handler: func(w http.ResponseWriter, r *http.Request) {
			// Reading the body lets the server notice the client hanging up.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, kind: providers.Retryable, is: providers.ErrUnavailable},
	}
	ops := map[string]func(api API) error{
		"Decrypter.Decrypt": func(api API) error {
			d := NewDecrypter(api, "")
			d.timeout = 300 * time.Millisecond
			_, err := d.Decrypt(bg, "aws_kms/"+base64.StdEncoding.EncodeToString([]byte(sentinel)))
			return err
		},
		"Sealer.Seal": func(api API) error {
			s := testSealer(t, api, "alias/k", seal.Config{CallTimeout: 300 * time.Millisecond, MaxAttempts: 1})
			_, err := s.Seal(bg, []byte(sentinel), events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1})
			return err
		},
		"Sealer.Open": func(api API) error {
			s := testSealer(t, api, "", seal.Config{CallTimeout: 300 * time.Millisecond, MaxAttempts: 1})
			sv := &events.SealedValue{Alg: events.AlgA256GCMKMS, KID: "arn:aws:kms:us-east-1:111122223333:key/k",
				EDK: []byte(sentinel), Nonce: make([]byte, 12), Ciphertext: append([]byte(sentinel), make([]byte, 16)...)}
			_, err := s.Open(bg, sv, events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1})
			return err
		},
	}
	for _, tc := range tests {
		for opName, op := range ops {
			t.Run(tc.name+"/"+opName, func(t *testing.T) {
				var api API
				if tc.url != "" {
					api = clientFor(tc.url)
				} else {
					api = faultClient(t, tc.handler)
				}
				err := op(api)
				if err == nil {
					t.Fatal("succeeded")
				}
				var pe *providers.Error
				if !errors.As(err, &pe) {
					t.Fatalf("error %v (%T) is not a *providers.Error", err, err)
				}
				if pe.Kind != tc.kind || pe.Provider != Provider {
					t.Errorf("kind %v provider %q, want %v %q (%v)", pe.Kind, pe.Provider, tc.kind, Provider, err)
				}
				if got, want := providers.IsRetryable(err), tc.kind != providers.Permanent; got != want {
					t.Errorf("IsRetryable = %v, want %v", got, want)
				}
				if !errors.Is(err, tc.is) {
					t.Errorf("error %v is not %v", err, tc.is)
				}
				if tc.code != "" && Code(err) != tc.code {
					t.Errorf("Code = %q, want %q", Code(err), tc.code)
				}
				if tc.keepMsg != "" && !strings.Contains(err.Error(), tc.keepMsg) {
					t.Errorf("error %q lost KMS's message %q", err, tc.keepMsg)
				}
				if opName == "Sealer.Open" && tc.is == ErrInvalidCiphertext && !errors.Is(err, events.ErrOpenFailed) {
					t.Errorf("an invalid edk is not ErrOpenFailed: %v", err)
				}
				if strings.Contains(err.Error(), "fault-secret-key-value") || strings.Contains(err.Error(), "AKIDFAULT") {
					t.Errorf("error names credentials: %v", err)
				}
				if strings.Contains(err.Error(), "6f1c4b52") {
					t.Errorf("error carries the request id: %v", err)
				}
				assertClean(t, err, bytes.Repeat([]byte{7}, 48))
			})
		}
	}
}

func TestSanitizeMessage(t *testing.T) {
	for in, want := range map[string]string{
		"Key 'arn:aws:kms:us-east-1:111122223333:key/0b7f4a52-9c3e-4d1a-8e6f-2a1b3c4d5e01' does not exist": "Key 'arn:aws:kms:us-east-1:111122223333:key/0b7f4a52-9c3e-4d1a-8e6f-2a1b3c4d5e01' does not exist",
		"blob AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHw== end":                                            "blob [redacted] end",
		"binary \x00\x01 inside":    "[message withheld: not printable]",
		"non-ASCII ü":               "[message withheld: not printable]",
		strings.Repeat("a b ", 100): strings.Repeat("a b ", 60) + "...",
	} {
		if got := sanitizeMessage(in); got != want {
			t.Errorf("sanitizeMessage(%q) = %q, want %q", in, got, want)
		}
	}
}

// A sealed value and its JSON never show the plaintext; String shows
// neither edk nor ct.
func TestSealedValueHidesSecrets(t *testing.T) {
	env := startKMS(t)
	s := testSealer(t, env.client, env.alias)
	sv, err := s.Seal(bg, []byte(sentinel), events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := mustJSON(t, sv)
	for _, text := range []string{sv.String(), string(b), fmt.Sprintf("%v", sv)} {
		if strings.Contains(text, sentinel) || strings.Contains(text, base64.StdEncoding.EncodeToString([]byte(sentinel))) {
			t.Errorf("leaks the value: %s", text)
		}
	}
	if strings.Contains(sv.String(), base64.StdEncoding.EncodeToString(sv.EDK)) {
		t.Errorf("String shows the edk: %s", sv)
	}
}
