package kmsfake_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
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

// A StartTLS fake accepts only tokens good by its clock; an expired one is
// UNAUTHENTICATED with Google's ErrorInfo, and counts as a call.
func TestAccessTokens(t *testing.T) {
	f, err := kmsfake.StartTLS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if _, err := f.CreateKey(key); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(f.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c, err := kmsapi.NewKeyManagementClient(context.Background(), option.WithEndpoint(f.Addr()), option.WithAuthCredentials(f.Credentials()),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	c.CallOptions = &kmsapi.KeyManagementCallOptions{}
	ctx := context.Background()
	req := &kmspb.EncryptRequest{Name: key, Plaintext: []byte("hello")}
	if _, err := c.Encrypt(ctx, req); err != nil {
		t.Fatalf("with an issued token: %v", err)
	}
	for name, expire := range map[string]func(){
		"revoked":            f.ExpireTokens,
		"server clock ahead": func() { f.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) }) },
	} {
		expire()
		_, err := c.Encrypt(ctx, req)
		st := status.Convert(err)
		var info *errdetails.ErrorInfo
		for _, d := range st.Details() {
			if i, ok := d.(*errdetails.ErrorInfo); ok {
				info = i
			}
		}
		if st.Code() != codes.Unauthenticated || info.GetReason() != "ACCESS_TOKEN_EXPIRED" || info.GetDomain() != "googleapis.com" ||
			info.GetMetadata()["service"] != "cloudkms.googleapis.com" || info.GetMetadata()["method"] != "google.cloud.kms.v1.KeyManagementService.Encrypt" {
			t.Fatalf("%s: %v (ErrorInfo %v), want UNAUTHENTICATED ACCESS_TOKEN_EXPIRED", name, err, info)
		}
		f.SetClock(time.Now)
	}
	if n := f.Calls("Encrypt"); n != 3 {
		t.Fatalf("Calls = %d, want 3 (refused calls count)", n)
	}
}
