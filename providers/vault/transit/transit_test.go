package transit_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers/vault/transit"
	"github.com/keyrelay/keyrelay/seal"
	"github.com/keyrelay/keyrelay/seal/sealtest"
)

// startTransit starts a Vault dev server, enables the Transit engine at
// transit/ through the API and creates the key keyrelay.
func startTransit(t *testing.T) (*testenv.Vault, *api.Client) {
	t.Helper()
	v := testenv.StartVault(t, testenv.VaultOptions{})
	c := v.Client(t)
	ctx := context.Background()
	if err := c.Sys().MountWithContext(ctx, "transit", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("enable transit: %v", err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/keyrelay", map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatalf("create key: %v", err)
	}
	return v, c
}

// TestConformance runs the wrapper suite against the real Vault dev
// server; a proxy in front stages outages (503) and Vault's rate-limit
// answer (429 with Retry-After); rotation is transit/keys/keyrelay/rotate.
func TestConformance(t *testing.T) {
	v, root := startTransit(t)
	proxy := sealtest.NewProxy(t, v.Addr)
	client, err := transit.NewClient(map[string]string{transit.OptionAddress: proxy.URL, transit.OptionToken: v.Token}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	jsonHdr := func(h ...string) http.Header {
		out := http.Header{"Content-Type": {"application/json"}}
		for i := 0; i+1 < len(h); i += 2 {
			out.Set(h[i], h[i+1])
		}
		return out
	}
	sealtest.Run(t, sealtest.Options{
		New: func(t *testing.T) seal.Wrapper {
			w, err := transit.NewWrapper(client.Logical(), "", "keyrelay")
			if err != nil {
				t.Fatal(err)
			}
			return w
		},
		Outage: func(t *testing.T, n int) {
			proxy.Fail(n, http.StatusServiceUnavailable, jsonHdr(), `{"errors":["Vault is sealed"]}`)
		},
		Throttle: func(t *testing.T, n int, after time.Duration) {
			secs := int((after + time.Second - 1) / time.Second)
			proxy.Fail(n, http.StatusTooManyRequests, jsonHdr("Retry-After", strconv.Itoa(secs)),
				`{"errors":["request path \"transit/encrypt/keyrelay\": rate limit quota exceeded"]}`)
		},
		Rotate: func(t *testing.T) {
			if _, err := root.Logical().Write("transit/keys/keyrelay/rotate", nil); err != nil {
				t.Fatal(err)
			}
		},
		Features: sealtest.Features{BindsContext: true, RetryAfter: true},
	})
}

// TestNewFromOptions: New reads the options map (and LiteLLM's
// HCP_VAULT_* variables), seals with the key's newest version and records
// it in the wrapped key.
func TestNewFromOptions(t *testing.T) {
	v, root := startTransit(t)
	env := map[string]string{"HCP_VAULT_ADDR": v.Addr, "HCP_VAULT_TOKEN": v.Token}
	s, err := transit.New(context.Background(), map[string]string{transit.OptionKeyName: "keyrelay"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	b := events.Binding{TeamID: "team-a", KeyID: "key-1", Generation: 1}
	sv, err := s.Seal(context.Background(), []byte("sk-vault"), b)
	if err != nil {
		t.Fatal(err)
	}
	if sv.Alg != transit.Alg || sv.KID != "transit/keyrelay" || !strings.HasPrefix(string(sv.EDK), "vault:v1:") {
		t.Fatalf("sealed %s edk %.9s", sv, sv.EDK)
	}
	if _, err := root.Logical().Write("transit/keys/keyrelay/rotate", nil); err != nil {
		t.Fatal(err)
	}
	rw, changed, err := s.Rewrap(context.Background(), sv, b)
	if err != nil || !changed || !strings.HasPrefix(string(rw.EDK), "vault:v2:") {
		t.Fatalf("rewrap: %v %v %.9s", err, changed, rw.EDK)
	}
	for _, bad := range []map[string]string{
		{transit.OptionKeyName: "a.b"},
		{transit.OptionKeyName: "k", transit.OptionMount: "../sys"},
		{transit.OptionKeyName: "k", seal.OptionMaxAttempts: "0x"},
	} {
		if _, err := transit.New(context.Background(), bad, func(k string) string { return env[k] }); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	if _, err := transit.New(context.Background(), map[string]string{}, func(string) string { return "" }); err == nil {
		t.Error("no address accepted")
	}
}
