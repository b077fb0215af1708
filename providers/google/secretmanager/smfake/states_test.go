package smfake_test

import (
	"context"
	"testing"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// TestDestroyedIsFinal: a destroyed version changes state no more, a
// second destroy included; state changes check the version's etag.
func TestDestroyedIsFinal(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	ctx := context.Background()
	name := parent + "/secrets/final"
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "final", Secret: &secretmanagerpb.Secret{Replication: auto}}); err != nil {
		t.Fatal(err)
	}
	v, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v.GetName(), Etag: v.GetEtag()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: v.GetName(), Etag: v.GetEtag()})
	wantCode(t, "destroy with the etag from before the disable", err, codes.FailedPrecondition)
	if _, err := c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: v.GetName(), Etag: d.GetEtag()}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: v.GetName()})
	wantCode(t, "destroy twice", err, codes.FailedPrecondition)
	_, err = c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v.GetName()})
	wantCode(t, "disable destroyed", err, codes.FailedPrecondition)
	_, err = c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: name + "/versions/9"})
	wantCode(t, "destroy missing version", err, codes.NotFound)
	if got := f.Data(name, 1); got != nil {
		t.Errorf("destroyed version still holds %d bytes", len(got))
	}
}
