package secretsmanager_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

const secretValue = "sk-SENTINEL-0123456789"

func TestInjectedFaults(t *testing.T) {
	tests := map[string]struct {
		fault      kumofront.Fault
		kind       providers.Kind
		sentinel   error
		code       string
		retryAfter time.Duration
		// contains and absent are checked against the error text.
		contains []string
		absent   []string
	}{
		"internal error": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 500, Code: "InternalServiceError", Message: "An error occurred on the server side."},
			kind:  providers.Retryable, sentinel: providers.ErrUnavailable, code: "InternalServiceError",
			contains: []string{"PutSecretValue: InternalServiceError (HTTP 500): An error occurred on the server side."},
		},
		"503 without a known code": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 503, Code: "Unavailable"},
			kind:  providers.Retryable, sentinel: providers.ErrUnavailable, code: "Unavailable",
		},
		"throttled with x-amz-retry-after": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ThrottlingException", Message: "Rate exceeded",
				Header: http.Header{"X-Amz-Retry-After": {"1500"}}},
			kind: providers.Throttled, sentinel: providers.ErrThrottled, code: "ThrottlingException", retryAfter: 1500 * time.Millisecond,
		},
		"throttled with retry-after": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ThrottlingException", Header: http.Header{"Retry-After": {"3"}}},
			kind:  providers.Throttled, sentinel: providers.ErrThrottled, code: "ThrottlingException", retryAfter: 3 * time.Second,
		},
		"throttled without a hint": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ThrottlingException"},
			kind:  providers.Throttled, sentinel: providers.ErrThrottled, code: "ThrottlingException", retryAfter: secretsmanager.DefaultThrottleRetryAfter,
		},
		"hint capped": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ThrottlingException", Header: http.Header{"X-Amz-Retry-After": {"3600000"}}},
			kind:  providers.Throttled, sentinel: providers.ErrThrottled, code: "ThrottlingException", retryAfter: secretsmanager.MaxRetryAfter,
		},
		"429 with an unknown code": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 429, Code: "SlowDownPlease"},
			kind:  providers.Throttled, sentinel: providers.ErrThrottled, code: "SlowDownPlease", retryAfter: secretsmanager.DefaultThrottleRetryAfter,
		},
		"access denied": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "AccessDeniedException",
				Message: "User: arn:aws:sts::111122223333:assumed-role/relay/s is not authorized to perform: secretsmanager:PutSecretValue"},
			kind: providers.Permanent, sentinel: providers.ErrAccessDenied, code: "AccessDeniedException",
			contains: []string{"arn:aws:sts::111122223333:assumed-role/relay/s is not authorized"},
		},
		"unrecognized client": {
			fault: kumofront.Fault{Action: "DescribeSecret", Status: 400, Code: "UnrecognizedClientException",
				Message: "The security token AKIAIOSFODNN7EXAMPLE included in the request is invalid."},
			kind: providers.Permanent, sentinel: providers.ErrAccessDenied, code: "UnrecognizedClientException",
			absent: []string{"AKIAIOSFODNN7EXAMPLE"}, contains: []string{"<access-key-id>"},
		},
		"expired token": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ExpiredTokenException"},
			kind:  providers.Retryable, sentinel: providers.ErrAccessDenied, code: "ExpiredTokenException",
		},
		"kms decryption failure": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "DecryptionFailure", Message: "KMS key is disabled"},
			kind:  providers.Permanent, sentinel: providers.ErrAccessDenied, code: "DecryptionFailure",
		},
		"validation quoting the value": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ValidationException",
				Message: "1 validation error detected: Value '" + secretValue + "' at 'secretString' failed to satisfy constraint"},
			kind: providers.Permanent, sentinel: providers.ErrInvalid, code: "ValidationException",
			absent: []string{"SENTINEL"},
		},
		"message echoing the value unquoted": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "InvalidParameterException", Message: "bad value " + secretValue},
			kind:  providers.Permanent, sentinel: providers.ErrInvalid, code: "InvalidParameterException",
			absent: []string{"SENTINEL"}, contains: []string{"withheld"},
		},
		"quoted text redacted": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "InvalidRequestException", Message: `field "x-secret" is wrong`},
			kind:  providers.Permanent, sentinel: providers.ErrInvalid, code: "InvalidRequestException",
			absent: []string{"x-secret"}, contains: []string{"'<redacted>'"},
		},
		"limit exceeded": {
			// The versions quota, not a rate (TestVersionsQuotaIsNotThrottling).
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "LimitExceededException"},
			kind:  providers.Retryable, sentinel: secretsmanager.ErrQuotaExceeded, code: "LimitExceededException", retryAfter: secretsmanager.VersionQuotaRetryAfter,
		},
		"deleted mid-write (every round)": {
			// A secret that keeps vanishing between describe and write:
			// Put gives up after its rounds with a retryable conflict.
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ResourceNotFoundException"},
			kind:  providers.Retryable, sentinel: providers.ErrConflict, code: "ResourceNotFoundException",
		},
		"unknown 4xx": {
			fault: kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "BrandNewException"},
			kind:  providers.Permanent, sentinel: providers.ErrInvalid, code: "BrandNewException",
		},
		"dropped connection": {
			fault: kumofront.Fault{Action: "PutSecretValue", Drop: true},
			kind:  providers.Retryable, sentinel: providers.ErrUnavailable, contains: []string{"network"},
		},
	}
	for label, tc := range tests {
		t.Run(label, func(t *testing.T) {
			f := kumofront.Start(t)
			p := open(t, f, map[string]string{"max_attempts": "1"})
			name := uniq("fault")
			mustPut(t, p, name, "v0", "e0")
			tc.fault.SecretID = name
			f.Inject(tc.fault)
			_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte(secretValue), IdempotencyKey: "e1", Owner: owner})
			checkErr(t, err, tc.kind, tc.sentinel, tc.code, tc.retryAfter)
			text := fmt.Sprintf("%v | %+v | %#v", err, err, err)
			for _, s := range tc.contains {
				if !strings.Contains(text, s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			for _, s := range append(tc.absent, "SENTINEL", "RequestID", "operation error", kumofront.SecretAccessKey) {
				if strings.Contains(text, s) {
					t.Errorf("error %q contains %q", text, s)
				}
			}
		})
	}
}

func checkErr(t *testing.T, err error, kind providers.Kind, sentinel error, code string, retryAfter time.Duration) {
	t.Helper()
	var pe *providers.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *providers.Error", err, err)
	}
	if pe.Kind != kind || pe.Provider != secretsmanager.Name || pe.Op == "" {
		t.Errorf("error %q: kind %v provider %q op %q, want kind %v", err, pe.Kind, pe.Provider, pe.Op, kind)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q does not match %v", err, sentinel)
	}
	if (kind != providers.Permanent) != providers.IsRetryable(err) {
		t.Errorf("IsRetryable(%q) = %v for kind %v", err, providers.IsRetryable(err), kind)
	}
	var ae *secretsmanager.APIError
	if code != "" && (!errors.As(err, &ae) || ae.Code != code) {
		t.Errorf("error %q: APIError code %v, want %q", err, ae, code)
	}
	if got := providers.RetryAfter(err); got != retryAfter {
		t.Errorf("RetryAfter = %v, want %v", got, retryAfter)
	}
}

func TestSDKRetriesTransientErrors(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, map[string]string{"max_attempts": "2"})
	name := uniq("sdk-retry")
	mustPut(t, p, name, "v0", "e0")
	f.Inject(kumofront.Fault{Action: "PutSecretValue", SecretID: name, Status: 500, Code: "InternalServiceError", Times: 1})
	r := mustPut(t, p, name, "v1", "e1")
	if got := f.Calls("PutSecretValue", name); got != 2 {
		t.Errorf("%d PutSecretValue calls, want 2 (one retried by the SDK)", got)
	}
	if r.Version != secretsmanager.ClientRequestToken("e1") {
		t.Errorf("version %q", r.Version)
	}
	// Permanent errors are not retried.
	f.ResetRequests()
	f.Inject(kumofront.Fault{Action: "PutSecretValue", SecretID: name, Status: 400, Code: "AccessDeniedException", Times: 1})
	if _, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner}); err == nil {
		t.Fatal("no error")
	}
	if got := f.Calls("PutSecretValue", name); got != 1 {
		t.Errorf("%d PutSecretValue calls for a permanent error, want 1", got)
	}
}

func TestContextEnds(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, map[string]string{"max_attempts": "1"})
	name := uniq("ctx")
	mustPut(t, p, name, "v0", "e0")
	f.Inject(kumofront.Fault{Action: "PutSecretValue", SecretID: name, Delay: 5 * time.Second})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("v1"), IdempotencyKey: "e1", Owner: owner})
	if !errors.Is(err, context.DeadlineExceeded) || !providers.IsRetryable(err) {
		t.Errorf("deadline: %v, want a retryable DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner})
	if !errors.Is(err, context.Canceled) || providers.IsRetryable(err) {
		t.Errorf("cancel: %v, want a non-retryable Canceled", err)
	}
}

// A secret deleted between Put's describe and its write is described again
// and written within the same Put (recreated or restored), not failed.
func TestDeletedDuringPut(t *testing.T) {
	tests := map[string]kumofront.Fault{
		"gone": {Action: "PutSecretValue", Status: 400, Code: "ResourceNotFoundException", Times: 1},
		"scheduled for delete": {Action: "PutSecretValue", Status: 400, Code: "InvalidRequestException", Times: 1,
			Message: "You can't perform this operation on the secret because it was marked for deletion."},
	}
	for label, fault := range tests {
		t.Run(label, func(t *testing.T) {
			f := kumofront.Start(t)
			p := open(t, f, map[string]string{"max_attempts": "1"})
			name := uniq("raced")
			mustPut(t, p, name, "v0", "e0")
			fault.SecretID = name
			f.Inject(fault)
			r := mustPut(t, p, name, "v1", "e1")
			if r.Version != secretsmanager.ClientRequestToken("e1") || f.Calls("DescribeSecret", name) < 3 {
				t.Errorf("Put %+v after %d describes, want the write done on a second round", r, f.Calls("DescribeSecret", name))
			}
		})
	}
}
