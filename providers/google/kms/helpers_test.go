package kms

import (
	"context"
	"sync/atomic"
	"testing"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrelay/keyrelay/providers/google/kms/kmsfake"
	"github.com/keyrelay/keyrelay/seal"
)

var bg = context.Background()

// sentinel is planted in values; it must never appear in an error.
const sentinel = "sk-SENTINEL-9c2e51-never-in-errors"

const (
	testKey  = "projects/p1/locations/global/keyRings/keyrelay/cryptoKeys/events"
	otherKey = "projects/p1/locations/global/keyRings/keyrelay/cryptoKeys/other"
)

type fakeEnv struct {
	fake   *kmsfake.Server
	client *kmsapi.KeyManagementClient
}

// startFake starts the fake with testKey and otherKey, and the official
// client pointed at it over real gRPC.
func startFake(t *testing.T) *fakeEnv {
	t.Helper()
	fake, err := kmsfake.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	for _, k := range []string{testKey, otherKey} {
		if _, err := fake.CreateKey(k); err != nil {
			t.Fatal(err)
		}
	}
	client, err := kmsapi.NewKeyManagementClient(bg, option.WithEndpoint(fake.Addr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return &fakeEnv{fake: fake, client: client}
}

// opts are New's options for the fake.
func (e *fakeEnv) opts(extra map[string]string) map[string]string {
	o := map[string]string{OptionEndpoint: e.fake.Addr(), OptionInsecure: "true", OptionKeyName: testKey}
	for k, v := range extra {
		o[k] = v
	}
	return o
}

func (e *fakeEnv) sealer(t *testing.T, extra map[string]string) *seal.Sealer {
	t.Helper()
	s, err := New(bg, e.opts(extra), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// encrypt encrypts as a LiteLLM operator would with gcloud / the client.
func (e *fakeEnv) encrypt(t *testing.T, key string, pt []byte) []byte {
	t.Helper()
	resp, err := e.client.Encrypt(bg, &kmspb.EncryptRequest{Name: key, Plaintext: pt})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Ciphertext
}

// tamperAPI lets a test corrupt responses.
type tamperAPI struct {
	API
	encrypt func(*kmspb.EncryptResponse)
	decrypt func(*kmspb.DecryptResponse)
	calls   atomic.Int64
}

func (a *tamperAPI) Encrypt(ctx context.Context, req *kmspb.EncryptRequest, opts ...gax.CallOption) (*kmspb.EncryptResponse, error) {
	a.calls.Add(1)
	r, err := a.API.Encrypt(ctx, req, opts...)
	if err == nil && a.encrypt != nil {
		a.encrypt(r)
	}
	return r, err
}

func (a *tamperAPI) Decrypt(ctx context.Context, req *kmspb.DecryptRequest, opts ...gax.CallOption) (*kmspb.DecryptResponse, error) {
	a.calls.Add(1)
	r, err := a.API.Decrypt(ctx, req, opts...)
	if err == nil && a.decrypt != nil {
		a.decrypt(r)
	}
	return r, err
}
