package kmsfake_test

import (
	"context"
	"testing"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
)

const key = "projects/p/locations/global/keyRings/r/cryptoKeys/k"

func setup(t *testing.T) (*kmsfake.Server, *kmsapi.KeyManagementClient) {
	t.Helper()
	f, err := kmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if _, err := f.CreateKey(key); err != nil {
		t.Fatal(err)
	}
	c, err := kmsapi.NewKeyManagementClient(context.Background(), option.WithEndpoint(f.Addr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return f, c
}

func code(err error) codes.Code { return status.Code(err) }

func TestEncryptDecrypt(t *testing.T) {
	f, c := setup(t)
	ctx := context.Background()
	pt, aad := []byte("hello"), []byte("ctx")
	enc, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: key, Plaintext: pt, AdditionalAuthenticatedData: aad,
		PlaintextCrc32C: wrap(kmsfake.CRC32C(pt)), AdditionalAuthenticatedDataCrc32C: wrap(kmsfake.CRC32C(aad))})
	if err != nil {
		t.Fatal(err)
	}
	if enc.Name != key+"/cryptoKeyVersions/1" || !enc.VerifiedPlaintextCrc32C || !enc.VerifiedAdditionalAuthenticatedDataCrc32C ||
		enc.CiphertextCrc32C.GetValue() != kmsfake.CRC32C(enc.Ciphertext) {
		t.Fatalf("Encrypt response %v", enc)
	}
	if _, err := f.Rotate(key); err != nil {
		t.Fatal(err)
	}
	dec, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: key, Ciphertext: enc.Ciphertext, AdditionalAuthenticatedData: aad})
	if err != nil || string(dec.Plaintext) != "hello" || dec.UsedPrimary || dec.PlaintextCrc32C.GetValue() != kmsfake.CRC32C(pt) {
		t.Fatalf("Decrypt = %v, %v", dec, err)
	}
	for name, req := range map[string]*kmspb.DecryptRequest{
		"no aad":       {Name: key, Ciphertext: enc.Ciphertext},
		"other aad":    {Name: key, Ciphertext: enc.Ciphertext, AdditionalAuthenticatedData: []byte("ctx2")},
		"garbage":      {Name: key, Ciphertext: []byte("garbage")},
		"empty":        {Name: key},
		"version name": {Name: key + "/cryptoKeyVersions/1", Ciphertext: enc.Ciphertext, AdditionalAuthenticatedData: aad},
		"bad crc":      {Name: key, Ciphertext: enc.Ciphertext, AdditionalAuthenticatedData: aad, CiphertextCrc32C: wrap(1)},
	} {
		if _, err := c.Decrypt(ctx, req); code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if _, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: key + "x", Ciphertext: enc.Ciphertext}); code(err) != codes.NotFound {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: key + "/cryptoKeyVersions/9", Plaintext: pt}); code(err) != codes.NotFound {
		t.Errorf("unknown version: %v", err)
	}
	if err := f.SetVersionEnabled(key+"/cryptoKeyVersions/2", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: key, Plaintext: pt}); code(err) != codes.FailedPrecondition {
		t.Errorf("disabled primary: %v", err)
	}
	f.FailNext("Decrypt", codes.PermissionDenied, "denied", 1)
	if _, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: key, Ciphertext: enc.Ciphertext, AdditionalAuthenticatedData: aad}); code(err) != codes.PermissionDenied {
		t.Errorf("injected: %v", err)
	}
	if _, err := c.Decrypt(ctx, &kmspb.DecryptRequest{Name: key, Ciphertext: enc.Ciphertext, AdditionalAuthenticatedData: aad}); err != nil {
		t.Errorf("after the one injected fault: %v", err)
	}
	if f.Calls("Decrypt") != 10 {
		t.Errorf("Calls = %d", f.Calls("Decrypt"))
	}
	if _, err := c.GetCryptoKey(ctx, &kmspb.GetCryptoKeyRequest{Name: key}); code(err) != codes.Unimplemented {
		t.Errorf("GetCryptoKey: %v", err)
	}
}

func wrap(v int64) *wrapperspb.Int64Value { return wrapperspb.Int64(v) }
