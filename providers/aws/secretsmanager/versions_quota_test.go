package secretsmanager_test

import (
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// TestVersionsQuotaIsNotThrottling: a secret at its versions quota (a
// hundred versions written within a day) refuses the next write with
// LimitExceededException. That is no request rate: Put fails at once (the
// SDK does not retry it) with a Retryable ErrQuotaExceeded carrying
// VersionQuotaRetryAfter, so the worker retries it with backoff against
// the event's retry budget, and the same write succeeds once AWS has
// removed versions a day old.
func TestVersionsQuotaIsNotThrottling(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil) // the default max_attempts (3): the SDK could retry
	name := uniq("versions-quota")
	mustPut(t, p, name, "v0", "e0")
	// Another writer (or a rotation storm) fills the quota.
	c, ctx := f.Client(), ctxT(t)
	for i := 1; i < kumofront.MaxVersions; i++ {
		tok := uuid.NewString()
		if _, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(name), SecretString: aws.String(tok), ClientRequestToken: aws.String(tok)}); err != nil {
			t.Fatalf("write %d: %v", i+1, err)
		}
	}
	f.ResetRequests()
	req := providers.PutRequest{Name: name, Value: []byte("sk-over-quota"), IdempotencyKey: "e-over", Owner: owner}
	_, err := p.Put(ctx, req)
	checkErr(t, err, providers.Retryable, providers.ErrSecretLimit, "LimitExceededException", secretsmanager.VersionQuotaRetryAfter)
	if !errors.Is(err, secretsmanager.ErrQuotaExceeded) {
		t.Errorf("error %q does not match ErrQuotaExceeded", err)
	}
	if errors.Is(err, providers.ErrThrottled) {
		t.Errorf("error %q matches ErrThrottled: a quota on versions is not a request rate", err)
	}
	if got := f.Calls("PutSecretValue", name); got != 1 {
		t.Errorf("%d PutSecretValue calls, want 1 (the SDK must not retry a quota)", got)
	}

	// A day later AWS has removed the oldest deprecated versions: the
	// retried write goes through.
	f.AgeVersions(name, kumofront.DeprecatedVersionMinAge)
	res, err := p.Put(ctx, req)
	if err != nil {
		t.Fatalf("Put after the versions aged a day: %v", err)
	}
	if res.Version != secretsmanager.ClientRequestToken("e-over") || res.Duplicate {
		t.Errorf("Put after the versions aged a day: %+v", res)
	}
}

// TestSecretsQuotaIsPermanent: LimitExceededException from CreateSecret
// is the account's secrets-per-Region quota, which clears only when
// someone deletes secrets: Put fails at once, Permanent, so the event is
// dead-lettered instead of retried.
func TestSecretsQuotaIsPermanent(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("secrets-quota")
	f.Inject(kumofront.Fault{Action: "CreateSecret", SecretID: name, Status: 400, Code: "LimitExceededException", Message: kumofront.LimitExceededMessage})
	_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("sk-new"), IdempotencyKey: "e1", Owner: owner})
	checkErr(t, err, providers.Permanent, providers.ErrInvalid, "LimitExceededException", 0)
	if !errors.Is(err, secretsmanager.ErrQuotaExceeded) || errors.Is(err, providers.ErrThrottled) {
		t.Errorf("error %q: want ErrQuotaExceeded, not ErrThrottled", err)
	}
	if got := f.Calls("CreateSecret", name); got != 1 {
		t.Errorf("%d CreateSecret calls, want 1 (the SDK must not retry a quota)", got)
	}
}
