package smfake_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"testing"
	"time"

	"cloud.google.com/go/auth"
	sm "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// tlsClient is the official client on a StartTLS fake with creds (nil:
// no authentication).
func tlsClient(t *testing.T, f *smfake.Server, creds *auth.Credentials) *sm.Client {
	t.Helper()
	pem, err := os.ReadFile(f.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	opts := []option.ClientOption{option.WithEndpoint(f.Addr()),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})))}
	if creds == nil {
		opts = append(opts, option.WithoutAuthentication())
	} else {
		opts = append(opts, option.WithAuthCredentials(creds))
	}
	c, err := sm.NewClient(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	c.CallOptions = &sm.CallOptions{}
	t.Cleanup(func() { c.Close() })
	return c
}

// staticToken is credentials that always send tok.
func staticToken(tok string) *auth.Credentials {
	return auth.NewCredentials(&auth.CredentialsOptions{TokenProvider: tokenFunc(func(context.Context) (*auth.Token, error) {
		return &auth.Token{Value: tok, Type: "Bearer"}, nil
	})})
}

type tokenFunc func(context.Context) (*auth.Token, error)

func (f tokenFunc) Token(ctx context.Context) (*auth.Token, error) { return f(ctx) }

// selfSignedJWT is a service account's self-signed JWT expiring at exp
// (the fake does not check its signature).
func selfSignedJWT(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		enc(fmt.Appendf(nil, `{"iss":"sa@p.iam.gserviceaccount.com","sub":"sa@p.iam.gserviceaccount.com","scope":"https://www.googleapis.com/auth/cloud-platform","iat":%d,"exp":%d}`, exp.Add(-time.Hour).Unix(), exp.Unix())) +
		"." + enc([]byte("signature"))
}

// wantRefused checks an UNAUTHENTICATED answer and its ErrorInfo reason
// ("" for none).
func wantRefused(t *testing.T, what string, err error, reason, method string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.Unauthenticated {
		t.Fatalf("%s: %v, want UNAUTHENTICATED", what, err)
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	switch {
	case reason == "" && info != nil:
		t.Fatalf("%s: ErrorInfo %v, want none", what, info)
	case reason == "":
	case info == nil || info.GetReason() != reason || info.GetDomain() != "googleapis.com" ||
		info.GetMetadata()["service"] != "secretmanager.googleapis.com" ||
		info.GetMetadata()["method"] != "google.cloud.secretmanager.v1.SecretManagerService."+method:
		t.Fatalf("%s: ErrorInfo %v, want reason %s for %s", what, info, reason, method)
	}
}

// A StartTLS fake accepts only tokens that are good by its clock, and
// refuses the others as Google does.
func TestAccessTokens(t *testing.T) {
	f := smfake.StartTLS(t)
	ctx := context.Background()
	create := func(c *sm.Client, id string) error {
		_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: id, Secret: &secretmanagerpb.Secret{Replication: auto}})
		return err
	}

	c := tlsClient(t, f, f.Credentials())
	if err := create(c, "a"); err != nil {
		t.Fatalf("with an issued token: %v", err)
	}
	f.ExpireTokens()
	calls := f.Calls("GetSecret")
	_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: parent + "/secrets/a"})
	wantRefused(t, "revoked token", err, "ACCESS_TOKEN_EXPIRED", "GetSecret")
	if f.Calls("GetSecret") != calls || f.Errors("GetSecret", codes.Unauthenticated) != 1 {
		t.Fatalf("a refused call: Calls %d -> %d, Errors %d", calls, f.Calls("GetSecret"), f.Errors("GetSecret", codes.Unauthenticated))
	}
	if err := create(tlsClient(t, f, f.Credentials()), "b"); err != nil {
		t.Fatalf("with a token issued after ExpireTokens: %v", err)
	}

	// The server's clock decides.
	f.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	wantRefused(t, "token expired by the server's clock", create(c, "c"), "ACCESS_TOKEN_EXPIRED", "CreateSecret")
	f.SetClock(time.Now)

	// Self-signed JWTs are good until their exp.
	good := selfSignedJWT(time.Now().Add(time.Hour))
	if err := create(tlsClient(t, f, staticToken(good)), "d"); err != nil {
		t.Fatalf("with a self-signed JWT: %v", err)
	}
	wantRefused(t, "expired JWT", create(tlsClient(t, f, staticToken(selfSignedJWT(time.Now().Add(-time.Second)))), "e"), "ACCESS_TOKEN_EXPIRED", "CreateSecret")
	f.ExpireTokens()
	wantRefused(t, "revoked JWT", create(tlsClient(t, f, staticToken(good)), "f"), "ACCESS_TOKEN_EXPIRED", "CreateSecret")

	// Tokens that expire on arrival.
	f.SetTokenLifetime(0)
	wantRefused(t, "token of lifetime 0", create(tlsClient(t, f, f.Credentials()), "g"), "ACCESS_TOKEN_EXPIRED", "CreateSecret")
	f.SetTokenLifetime(time.Hour)

	wantRefused(t, "unknown token", create(tlsClient(t, f, staticToken("ya29.unknown")), "h"), "", "")
	wantRefused(t, "no token", create(tlsClient(t, f, nil), "i"), "CREDENTIALS_MISSING", "CreateSecret")
	if n := len(f.SecretNames()); n != 3 {
		t.Fatalf("%d secrets, want 3 (a, b, d)", n)
	}
}
