package kvfake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

type kvErr struct {
	Error struct{ Code, Message string } `json:"error"`
}

func do(t *testing.T, s *kvfake.Server, method, path, body string, auth bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		req.Header.Set("Authorization", "Bearer tok")
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

func code(t *testing.T, b []byte) string {
	t.Helper()
	var e kvErr
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q is not Key Vault's shape: %v", b, err)
	}
	return e.Error.Code
}

func TestWire(t *testing.T) {
	s := kvfake.New()
	defer s.Close()
	const av = "?api-version=7.6"

	res, _ := do(t, s, "GET", "/secrets/a"+av, "", false)
	if res.StatusCode != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), `authorization="https://login.microsoftonline.com/`+kvfake.DefaultTenant+`"`) ||
		!strings.Contains(res.Header.Get("WWW-Authenticate"), `resource="https://vault.azure.net"`) {
		t.Fatalf("unauthenticated: %d %q", res.StatusCode, res.Header.Get("WWW-Authenticate"))
	}
	if s.Challenged() != 1 {
		t.Errorf("Challenged = %d", s.Challenged())
	}
	res, b := do(t, s, "GET", "/secrets/a", "", true)
	if res.StatusCode != 400 || code(t, b) != "BadParameter" {
		t.Fatalf("no api-version: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "GET", "/secrets/a"+av, "", true)
	if res.StatusCode != 404 || code(t, b) != "SecretNotFound" {
		t.Fatalf("missing: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "PUT", "/secrets/My-Secret"+av, `{"value":"v1","tags":{"a":"b"},"contentType":"text/plain"}`, true)
	if res.StatusCode != 200 {
		t.Fatalf("set: %d %s", res.StatusCode, b)
	}
	var sb struct {
		ID         string            `json:"id"`
		Value      string            `json:"value"`
		Tags       map[string]string `json:"tags"`
		Attributes struct{ Created int64 }
	}
	_ = json.Unmarshal(b, &sb)
	if !strings.HasPrefix(sb.ID, s.URL+"/secrets/My-Secret/") || sb.Value != "v1" || sb.Tags["a"] != "b" || sb.Attributes.Created == 0 {
		t.Fatalf("bundle %s", b)
	}
	// Case-insensitive names.
	res, b = do(t, s, "GET", "/secrets/my-secret/"+av, "", true)
	if res.StatusCode != 200 || !strings.Contains(string(b), `"v1"`) {
		t.Fatalf("case-insensitive get: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "PUT", "/secrets/bad_name"+av, `{"value":"v"}`, true)
	if res.StatusCode != 400 || code(t, b) != "BadParameter" {
		t.Fatalf("bad name: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "PATCH", "/secrets/my-secret/"+av, `{"tags":{"c":"d"}}`, true)
	if res.StatusCode != 200 || strings.Contains(string(b), `"value"`) || !strings.Contains(string(b), `"c":"d"`) {
		t.Fatalf("patch: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "DELETE", "/secrets/my-secret"+av, "", true)
	if res.StatusCode != 200 || !strings.Contains(string(b), "recoveryId") {
		t.Fatalf("delete: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "PUT", "/secrets/my-secret"+av, `{"value":"v2"}`, true)
	if res.StatusCode != 409 || code(t, b) != "Conflict" {
		t.Fatalf("set on deleted: %d %s", res.StatusCode, b)
	}
	res, _ = do(t, s, "GET", "/deletedsecrets/my-secret"+av, "", true)
	if res.StatusCode != 200 {
		t.Fatalf("get deleted: %d", res.StatusCode)
	}
	res, _ = do(t, s, "POST", "/deletedsecrets/my-secret/recover"+av, "", true)
	if res.StatusCode != 200 {
		t.Fatalf("recover: %d", res.StatusCode)
	}
	do(t, s, "DELETE", "/secrets/my-secret"+av, "", true)
	res, _ = do(t, s, "DELETE", "/deletedsecrets/my-secret"+av, "", true)
	if res.StatusCode != 204 {
		t.Fatalf("purge: %d", res.StatusCode)
	}
	if st, _ := s.SecretState("my-secret"); st != "" {
		t.Fatalf("state after purge %q", st)
	}
	s.Inject(kvfake.Fault{Method: "GET", Status: 429, Code: "Throttled", RetryAfter: "3"})
	res, b = do(t, s, "GET", "/secrets/x"+av, "", true)
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "3" || code(t, b) != "Throttled" {
		t.Fatalf("fault: %d %q %s", res.StatusCode, res.Header.Get("Retry-After"), b)
	}
}

func TestVersionPaging(t *testing.T) {
	s := kvfake.New()
	defer s.Close()
	for i := 0; i < kvfake.PageSize+3; i++ {
		do(t, s, "PUT", "/secrets/p?api-version=7.6", `{"value":"v"}`, true)
	}
	res, b := do(t, s, "GET", "/secrets/p/versions?api-version=7.6", "", true)
	var page struct {
		Value    []json.RawMessage `json:"value"`
		NextLink *string           `json:"nextLink"`
	}
	_ = json.Unmarshal(b, &page)
	if res.StatusCode != 200 || len(page.Value) != kvfake.PageSize || page.NextLink == nil {
		t.Fatalf("first page: %d, %d items, next %v", res.StatusCode, len(page.Value), page.NextLink)
	}
	_, b = do(t, s, "GET", strings.TrimPrefix(*page.NextLink, s.URL), "", true)
	page.NextLink = nil
	page.Value = nil
	_ = json.Unmarshal(b, &page)
	if len(page.Value) != 3 || page.NextLink != nil {
		t.Fatalf("second page: %d items, next %v", len(page.Value), page.NextLink)
	}
}
