package secretmanager_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

const secretValue = "sk-SENTINEL-3f9a-never-in-errors"

// A payload whose data_crc32c does not match (corrupted in transit) is a
// retryable ErrUnavailable, never a value.
func TestGetChecksumMismatch(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	const name = "crc/get"
	put(t, p, name, secretValue, "e1")

	fake.CorruptAccess(1)
	s, err := p.Get(ctx, name, "")
	if !errors.Is(err, providers.ErrUnavailable) || !providers.IsRetryable(err) {
		t.Fatalf("Get of a corrupted payload: %v, %v; want retryable ErrUnavailable", s, err)
	}
	if strings.Contains(err.Error(), secretValue[5:]) {
		t.Fatal("the error holds the value")
	}
	if s, err := p.Get(ctx, name, ""); err != nil || string(s.Value) != secretValue {
		t.Fatalf("Get of an intact payload: %v", err)
	}
}

// A Put whose latest version has no recorded event reads that version to
// tell whether an earlier attempt wrote it. A corrupted read fails the
// Put (retryable) instead of passing for another value and writing the
// value a second time.
func TestPutAdoptChecksumMismatch(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	const name = "crc/adopt"
	put(t, p, name, "v1", "e1")

	// An earlier attempt of event e2 added version 2 and lost its answer
	// before it recorded the event.
	cl := rawClient(fake)
	defer cl.Close()
	if _, err := cl.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
		Parent: p.SecretName(name), Payload: &secretmanagerpb.SecretPayload{Data: []byte(secretValue)},
	}); err != nil {
		t.Fatal(err)
	}
	adds := fake.Calls("AddSecretVersion")

	fake.CorruptAccess(1)
	_, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte(secretValue), IdempotencyKey: "e2", Owner: owner})
	if !errors.Is(err, providers.ErrUnavailable) || !providers.IsRetryable(err) {
		t.Fatalf("Put over a corrupted read: %v, want retryable ErrUnavailable", err)
	}
	if n := fake.Calls("AddSecretVersion") - adds; n != 0 || fake.Data(p.SecretName(name), 3) != nil {
		t.Fatalf("Put over a corrupted read added %d versions", n)
	}

	// The retry reads version 2 intact and records e2 for it.
	if r := put(t, p, name, secretValue, "e2"); !r.Duplicate || r.Version != "2" {
		t.Fatalf("Put after an intact read: %+v, want version 2 adopted", r)
	}
	if n := fake.Calls("AddSecretVersion") - adds; n != 0 {
		t.Fatalf("adopting Put added %d versions", n)
	}
}
