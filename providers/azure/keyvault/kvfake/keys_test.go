package kvfake_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

// TestKeysWire checks the keys API on the wire: the bearer challenge and
// api-version as for secrets, create/get with versions, wrapkey and
// unwrapkey with RSA-OAEP-256, and the REST reference's errors.
func TestKeysWire(t *testing.T) {
	s := kvfake.New()
	s.Token = "tok"
	defer s.Close()
	const av = "?api-version=7.6"
	type table = map[string]struct {
		method, path, body string
		auth               bool
		status             int
		code               string
	}
	for name, tc := range (table{
		"no token":        {"POST", "/keys/k1/create" + av, `{"kty":"RSA"}`, false, 401, "Unauthorized"},
		"no api-version":  {"POST", "/keys/k1/create", `{"kty":"RSA"}`, true, 400, "BadParameter"},
		"bad name":        {"POST", "/keys/k_1/create" + av, `{"kty":"RSA"}`, true, 400, "BadParameter"},
		"unsupported kty": {"POST", "/keys/k1/create" + av, `{"kty":"oct"}`, true, 400, "BadParameter"},
		"get unknown":     {"GET", "/keys/nope" + av, "", true, 404, "KeyNotFound"},
		"wrap unknown":    {"POST", "/keys/nope//wrapkey" + av, `{"alg":"RSA-OAEP-256","value":"AAAA"}`, true, 404, "KeyNotFound"},
		"unknown version": {"GET", "/keys/nope/0123" + av, "", true, 404, "KeyNotFound"},
	}) {
		t.Run(name, func(t *testing.T) {
			res, b := do(t, s, tc.method, tc.path, tc.body, tc.auth)
			if res.StatusCode != tc.status || code(t, b) != tc.code {
				t.Fatalf("%d %s", res.StatusCode, b)
			}
			if tc.status == 401 && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer authorization=") {
				t.Errorf("no bearer challenge")
			}
		})
	}
	res, b := do(t, s, "POST", "/keys/k1/create"+av, `{"kty":"RSA","key_size":2048}`, true)
	if res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, b)
	}
	var bundle struct {
		Key struct {
			KID string `json:"kid"`
			N   string `json:"n"`
		} `json:"key"`
	}
	_ = json.Unmarshal(b, &bundle)
	ver := bundle.Key.KID[strings.LastIndexByte(bundle.Key.KID, '/')+1:]
	if len(ver) != 32 || bundle.Key.N == "" {
		t.Fatalf("bundle %s", b)
	}
	res, b = do(t, s, "POST", "/keys/k1/"+ver+"/wrapkey"+av, `{"alg":"RSA-OAEP-256","value":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}`, true)
	var op struct{ KID, Value string }
	if err := json.Unmarshal(b, &op); err != nil || res.StatusCode != 200 || !strings.HasSuffix(op.KID, ver) {
		t.Fatalf("wrapkey: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "POST", "/keys/K1/"+ver+"/unwrapkey"+av, `{"alg":"RSA-OAEP-256","value":"`+op.Value+`"}`, true)
	var un struct{ Value string }
	_ = json.Unmarshal(b, &un)
	if res.StatusCode != 200 || un.Value != "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8" {
		t.Fatalf("unwrapkey (names are case-insensitive): %d %s", res.StatusCode, b)
	}
	bad := []byte(op.Value)
	bad[5] ^= 1
	res, b = do(t, s, "POST", "/keys/k1/"+ver+"/unwrapkey"+av, `{"alg":"RSA-OAEP-256","value":"`+string(bad)+`"}`, true)
	if res.StatusCode != 400 || code(t, b) != "BadParameter" {
		t.Errorf("tampered unwrapkey: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "POST", "/keys/k1/"+ver+"/wrapkey"+av, `{"alg":"RSA1_5","value":"AAAA"}`, true)
	if res.StatusCode != 400 || code(t, b) != "BadParameter" {
		t.Errorf("unsupported alg: %d %s", res.StatusCode, b)
	}
	s.Inject(kvfake.Fault{PathPrefix: "/keys/", Status: 429, Code: "Throttled", RetryAfter: "3", Times: 1})
	res, _ = do(t, s, "GET", "/keys/k1"+av, "", true)
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != "3" {
		t.Errorf("throttled: %d %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
}
