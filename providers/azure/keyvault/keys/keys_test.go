package keys_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/keys"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
	"github.com/keyrelay/keyrelay/seal"
	"github.com/keyrelay/keyrelay/seal/sealtest"
)

const testToken = "kvfake-static-token"

type staticCred struct{}

func (staticCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: testToken, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

type fixture struct {
	srv    *kvfake.Server
	client *azkeys.Client
}

// newFixture starts the fake vault with key "keyrelay-kek" and an azkeys
// client on it (bearer challenge, TLS with the fake's CA).
func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := kvfake.New()
	srv.Token = testToken
	t.Cleanup(srv.Close)
	c, err := keys.NewClientWithCredential(srv.URL, staticCred{}, azcore.ClientOptions{Transport: srv.Client()}, true)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, client: c}
	f.createKey(t)
	return f
}

func (f *fixture) createKey(t *testing.T) {
	t.Helper()
	kty := azkeys.KeyTypeRSA
	if _, err := f.client.CreateKey(context.Background(), "keyrelay-kek", azkeys.CreateKeyParameters{Kty: &kty, KeySize: to.Ptr[int32](2048)}, nil); err != nil {
		t.Fatalf("create key: %v", err)
	}
}

// TestConformance runs the wrapper suite against the Azure fake's keys
// API: outages are 503, throttling 429 with Retry-After, rotation a new
// key version (Create Key again).
func TestConformance(t *testing.T) {
	f := newFixture(t)
	stage := func(n, status int, code, after string) {
		f.srv.ClearFaults()
		if n > 0 {
			f.srv.Inject(kvfake.Fault{PathPrefix: "/keys/", Status: status, Code: code, RetryAfter: after, Times: n})
		}
	}
	sealtest.Run(t, sealtest.Options{
		New: func(t *testing.T) seal.Wrapper {
			w, err := keys.NewWrapper(f.client, "keyrelay-kek")
			if err != nil {
				t.Fatal(err)
			}
			return w
		},
		Outage: func(t *testing.T, n int) { stage(n, 503, "ServiceUnavailable", "") },
		Throttle: func(t *testing.T, n int, after time.Duration) {
			stage(n, 429, "Throttled", strconv.Itoa(int((after+time.Second-1)/time.Second)))
		},
		Rotate:   f.createKey,
		Features: sealtest.Features{RetryAfter: true},
	})
	if f.srv.APIVersion() == "" {
		t.Error("no api-version seen")
	}
}

// TestKeysAPI checks the fake's REST behaviour the wrapper relies on:
// versions recorded, 404 KeyNotFound, 400 BadParameter for a bad
// ciphertext, api-version required.
func TestKeysAPI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	w, _ := keys.NewWrapper(f.client, "keyrelay-kek")
	dk := bytes.Repeat([]byte{7}, 32)
	wr, err := w.Wrap(ctx, dk, seal.Context{})
	if err != nil {
		t.Fatal(err)
	}
	v, _, ok := keys.Version(wr.EDK)
	if vs := f.srv.KeyVersions("keyrelay-kek"); !ok || len(vs) != 1 || vs[0] != v {
		t.Fatalf("edk version %q, vault versions %v", v, vs)
	}
	if got, err := w.Unwrap(ctx, "keyrelay-kek", wr.EDK, seal.Context{}); err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("unwrap: %v", err)
	}
	_, err = w.Unwrap(ctx, "no-such-key", wr.EDK, seal.Context{})
	if err == nil || !strings.Contains(err.Error(), "HTTP 404 KeyNotFound") || !errors.Is(err, keys.ErrKeyUnusable) || providers.IsRetryable(err) {
		t.Errorf("unknown key: %v", err)
	}
	bad := bytes.Clone(wr.EDK)
	bad[len(bad)-1] ^= 1
	_, err = w.Unwrap(ctx, "keyrelay-kek", bad, seal.Context{})
	if err == nil || !strings.Contains(err.Error(), "HTTP 400 BadParameter") || !errors.Is(err, events.ErrOpenFailed) {
		t.Errorf("bad ciphertext: %v", err)
	}
	if !w.Classify(err).Refused {
		t.Error("a refused ciphertext is not classified as refused")
	}
	if _, err := keys.New(ctx, map[string]string{keys.OptionVaultURL: "http://plain"}, func(string) string { return "" }); err == nil {
		t.Error("a plain-HTTP vault URL was accepted")
	}
}

// TestNewFromOptions builds the Sealer from keyrelay.sealing.azure_keys
// options against the fake: TLS through ca_bundle, a client secret
// exchanged at the fake's Entra ID token endpoint (authority_host), the
// bearer challenge, then a seal and an open.
func TestNewFromOptions(t *testing.T) {
	f := newFixture(t)
	f.srv.Token = ""
	f.srv.ClientID, f.srv.ClientSecret = "client-1", "client-secret-value-1"
	ca, err := f.srv.WriteCABundle(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AZURE_KEY_VAULT_URI": f.srv.URL, "AZURE_CLIENT_SECRET": "client-secret-value-1"}
	s, err := keys.New(context.Background(), map[string]string{
		keys.OptionKeyName: "keyrelay-kek", keys.OptionCABundle: ca, keys.OptionAuthorityHost: f.srv.URL,
		keys.OptionTenantID: kvfake.DefaultTenant, keys.OptionClientID: "client-1",
		keys.OptionDisableInstanceDiscovery: "true", keys.OptionDisableChallRes: "true",
	}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sv, err := s.Seal(context.Background(), []byte(sealtest.Sentinel), b)
	if err != nil {
		t.Fatal(err)
	}
	if sv.Alg != keys.Alg || sv.KID != "keyrelay-kek" {
		t.Fatalf("sealed %s", sv)
	}
	if pt, err := s.Open(context.Background(), sv, b); err != nil || string(pt) != sealtest.Sentinel {
		t.Fatalf("open: %v", err)
	}
	if f.srv.TokensIssued() == 0 {
		t.Error("no token was issued: the client secret was not used")
	}
}
