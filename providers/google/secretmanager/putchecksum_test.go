package secretmanager_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// A value corrupted in transit on its way to Secret Manager fails
// AddSecretVersion's data_crc32c check (INVALID_ARGUMENT) and writes
// nothing: the same Put sent again is intact. It must be a retryable
// ErrUnavailable, as a corrupted read is, not a permanent ErrInvalid that
// dead-letters the event.
func TestPutChecksumMismatchIsRetryable(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	const name = "crc/add"
	put(t, p, name, "v1", "e1")

	fake.CorruptAdd(1)
	_, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte(secretValue), IdempotencyKey: "e2", Owner: owner})
	if !errors.Is(err, providers.ErrUnavailable) || !providers.IsRetryable(err) {
		t.Fatalf("Put corrupted in transit: %v, want retryable ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), secretValue[5:]) {
		t.Fatal("the error holds the value")
	}
	// The retry writes the value once.
	if r := put(t, p, name, secretValue, "e2"); r.Duplicate || r.Version != "2" {
		t.Fatalf("retried Put: %+v, want version 2 written", r)
	}
	if got := fake.Data(p.SecretName(name), 2); string(got) != secretValue {
		t.Fatal("version 2 does not hold the value")
	}
}
