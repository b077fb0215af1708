package kms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"strings"

	"cloud.google.com/go/auth"
	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrelay/keyrelay/providers/google/internal/tokens"
)

// API is the part of the Cloud KMS client keyrelay uses;
// *kmsapi.KeyManagementClient (cloud.google.com/go/kms/apiv1) implements
// it, and tests wrap it to count or fail calls.
type API interface {
	Encrypt(ctx context.Context, req *kmspb.EncryptRequest, opts ...gax.CallOption) (*kmspb.EncryptResponse, error)
	Decrypt(ctx context.Context, req *kmspb.DecryptRequest, opts ...gax.CallOption) (*kmspb.DecryptResponse, error)
}

// NewClient returns a Cloud KMS client configured from opts: "endpoint"
// (host:port, for private endpoints and fakes), "insecure" (plaintext gRPC
// without authentication, only with an explicit endpoint), "ca_bundle" (a
// PEM file of CAs for the endpoint's TLS certificate) and
// "credentials_file" (a service-account JSON key); without the latter,
// Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, as
// LiteLLM requires, or the metadata server). The client's own retries are
// off: keyrelay's retry policy decides. A call Cloud KMS answers
// UNAUTHENTICATED (an access token expired by Google's clock or revoked)
// is sent once more after the credentials are read again, with a new
// token. It makes no network call.
func NewClient(ctx context.Context, opts map[string]string) (*kmsapi.KeyManagementClient, error) {
	return newClient(ctx, opts, nil)
}

// newClient is NewClient with the credentials built by creds (tests: a
// fake's) instead of credentials_file's or Application Default
// Credentials'.
func newClient(ctx context.Context, opts map[string]string, creds func() (*auth.Credentials, error)) (*kmsapi.KeyManagementClient, error) {
	get := func(k string) string { return strings.TrimSpace(opts[k]) }
	endpoint, caBundle, credFile := get(OptionEndpoint), get(OptionCABundle), get(OptionCredentialsFile)
	plain := false
	if v := get(OptionInsecure); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("google_kms: option %s is not a boolean", OptionInsecure)
		}
		plain = b
	}
	if strings.ContainsAny(endpoint, " /\\") {
		return nil, fmt.Errorf("google_kms: option %s must be host:port", OptionEndpoint)
	}
	var co []option.ClientOption
	if endpoint != "" {
		co = append(co, option.WithEndpoint(endpoint))
	}
	switch {
	case plain:
		if endpoint == "" {
			return nil, fmt.Errorf("google_kms: option %s needs an explicit %s (plaintext gRPC is for local fakes only)", OptionInsecure, OptionEndpoint)
		}
		if credFile != "" || caBundle != "" {
			return nil, fmt.Errorf("google_kms: option %s cannot be combined with %s or %s", OptionInsecure, OptionCredentialsFile, OptionCABundle)
		}
		co = append(co, option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	default:
		if caBundle != "" {
			pem, err := os.ReadFile(caBundle)
			if err != nil {
				return nil, fmt.Errorf("google_kms: option %s: cannot read the file", OptionCABundle)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("google_kms: option %s holds no PEM certificate", OptionCABundle)
			}
			co = append(co, option.WithGRPCDialOption(grpc.WithTransportCredentials(
				credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))))
		}
		// Calls carry ts's tokens. Cloud KMS answers a token it no
		// longer accepts with UNAUTHENTICATED, and ts.Intercept sends the
		// call once more with a new one.
		if creds == nil {
			creds = tokens.Detect(credFile, kmsapi.DefaultAuthScopes())
		}
		ts, err := tokens.New(creds, Provider, nil)
		if err != nil {
			return nil, fmt.Errorf("google_kms: cannot load the credentials: %w", err)
		}
		co = append(co, option.WithAuthCredentials(ts.Credentials()),
			option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(ts.Intercept)))
	}
	c, err := kmsapi.NewKeyManagementClient(ctx, co...)
	if err != nil {
		return nil, fmt.Errorf("google_kms: cannot build the client: %w", err)
	}
	c.CallOptions = &kmsapi.KeyManagementCallOptions{}
	return c, nil
}
