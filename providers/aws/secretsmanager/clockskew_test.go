package secretsmanager_test

import (
	"errors"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// A host clock more than 15 minutes off AWS's: the SDK's retryer corrects
// the signing time from the refusal's Date header, so a Put with the
// default max_attempts succeeds.
func TestClockSkewCorrectedBySDK(t *testing.T) {
	for label, offset := range map[string]time.Duration{"behind": time.Hour, "ahead": -time.Hour} {
		t.Run(label, func(t *testing.T) {
			f := kumofront.Start(t)
			f.SetClockOffset(offset)
			p := open(t, f, nil)
			name := uniq("skew-sdk")
			mustPut(t, p, name, "v1", "e1")
			if f.SkewRejections() != 1 {
				t.Errorf("SkewRejections %d, want 1 (the first request; the client keeps the skew)", f.SkewRejections())
			}
			mustPut(t, p, name, "v2", "e2")
			if f.SkewRejections() != 1 {
				t.Errorf("SkewRejections %d after another Put, want 1", f.SkewRejections())
			}
		})
	}
}

// With no attempt left to the SDK (max_attempts 1), the refusal reaches
// the provider: it is a retryable error matching ErrClockSkew, not a
// permanent access denial that would dead-letter the event, and the
// retry succeeds because the client learnt the skew.
func TestClockSkewIsRetryable(t *testing.T) {
	f := kumofront.Start(t)
	f.SetClockOffset(30 * time.Minute)
	p := open(t, f, map[string]string{"max_attempts": "1"})
	name := uniq("skew-retry")
	_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("v1"), IdempotencyKey: "e1", Owner: owner})
	checkErr(t, err, providers.Retryable, providers.ErrAccessDenied, "InvalidSignatureException", 0)
	if !errors.Is(err, secretsmanager.ErrClockSkew) {
		t.Errorf("error %q does not match ErrClockSkew", err)
	}
	mustPut(t, p, name, "v1", "e1")
}

// The code Secrets Manager's API reference lists for a stale signing time,
// RequestExpired, is not among the SDK's clock skew codes: the SDK does
// not retry it, but keeps the skew the response's Date showed, so the
// provider's retryable error is followed by a retry that succeeds.
func TestRequestExpiredIsRetryable(t *testing.T) {
	f := kumofront.Start(t)
	f.SetClockOffset(-30 * time.Minute)
	f.SetSkewErrorCode("RequestExpired")
	p := open(t, f, nil)
	name := uniq("skew-expired")
	_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("v1"), IdempotencyKey: "e1", Owner: owner})
	checkErr(t, err, providers.Retryable, providers.ErrAccessDenied, "RequestExpired", 0)
	if f.SkewRejections() != 1 {
		t.Errorf("SkewRejections %d, want 1 (the SDK does not retry RequestExpired)", f.SkewRejections())
	}
	mustPut(t, p, name, "v1", "e1")
}
