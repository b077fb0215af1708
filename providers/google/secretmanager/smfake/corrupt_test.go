package smfake_test

import (
	"bytes"
	"context"
	"hash/crc32"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"

	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// CorruptAccess corrupts the payload and keeps the stored data's
// checksum, as corruption in transit does; the next answers are intact.
func TestCorruptAccess(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	ctx := context.Background()
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s", Secret: &secretmanagerpb.Secret{Replication: auto}}); err != nil {
		t.Fatal(err)
	}
	data := []byte("value")
	if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: parent + "/secrets/s", Payload: &secretmanagerpb.SecretPayload{Data: data}}); err != nil {
		t.Fatal(err)
	}
	sum := int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	f.CorruptAccess(1)
	for i, wantIntact := range []bool{false, true} {
		r, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: parent + "/secrets/s/versions/latest"})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetPayload().GetDataCrc32C() != sum || bytes.Equal(r.GetPayload().GetData(), data) != wantIntact {
			t.Fatalf("answer %d: data %q crc %d, want intact %v with the stored data's crc", i, r.GetPayload().GetData(), r.GetPayload().GetDataCrc32C(), wantIntact)
		}
	}
}
