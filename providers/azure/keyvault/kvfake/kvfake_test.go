package kvfake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

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
	s.Token = "tok"
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
	// Deletes, recoveries and purges take a moment by default, as Key
	// Vault's do. While the delete runs the deleted secret is not shown,
	// and the name can be neither written, recovered nor purged.
	if res, b = do(t, s, "GET", "/deletedsecrets/my-secret"+av, "", true); res.StatusCode != 404 {
		t.Fatalf("get deleted while the delete runs: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "PUT", "/secrets/my-secret"+av, `{"value":"v2"}`, true)
	if res.StatusCode != 409 || code(t, b) != "Conflict" || innerCode(t, b) != "ObjectIsBeingDeleted" {
		t.Fatalf("set while the delete runs: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "POST", "/deletedsecrets/my-secret/recover"+av, "", true)
	if res.StatusCode != 409 || innerCode(t, b) != "ObjectIsBeingDeleted" || !strings.Contains(string(b), "currently being deleted") {
		t.Fatalf("recover while the delete runs: %d %s", res.StatusCode, b)
	}
	time.Sleep(s.DeleteDelay)
	res, b = do(t, s, "PUT", "/secrets/my-secret"+av, `{"value":"v2"}`, true)
	if res.StatusCode != 409 || code(t, b) != "Conflict" || innerCode(t, b) != "ObjectIsDeletedButRecoverable" {
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
	if res, b = do(t, s, "GET", "/secrets/my-secret"+av, "", true); res.StatusCode != 404 {
		t.Fatalf("get while the recovery runs: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "PUT", "/secrets/my-secret"+av, `{"value":"v2"}`, true)
	if res.StatusCode != 409 || innerCode(t, b) != "ObjectIsBeingRecovered" {
		t.Fatalf("set while the recovery runs: %d %s", res.StatusCode, b)
	}
	time.Sleep(s.RecoverDelay)
	if res, b = do(t, s, "GET", "/secrets/my-secret"+av, "", true); res.StatusCode != 200 {
		t.Fatalf("get after the recovery: %d %s", res.StatusCode, b)
	}
	do(t, s, "DELETE", "/secrets/my-secret"+av, "", true)
	if res, b = do(t, s, "DELETE", "/deletedsecrets/my-secret"+av, "", true); res.StatusCode != 409 {
		t.Fatalf("purge while the delete runs: %d %s", res.StatusCode, b)
	}
	time.Sleep(s.DeleteDelay)
	res, _ = do(t, s, "DELETE", "/deletedsecrets/my-secret"+av, "", true)
	if res.StatusCode != 204 {
		t.Fatalf("purge: %d", res.StatusCode)
	}
	if st, _ := s.SecretState("my-secret"); st != "purging" {
		t.Fatalf("state while the purge runs %q", st)
	}
	time.Sleep(s.PurgeDelay)
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
	s.Token = "tok"
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

// token asks the fake's token endpoint for a client-credentials token.
func token(t *testing.T, s *kvfake.Server) (int, string) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "scope": {"https://vault.azure.net/.default"}}
	res, err := s.Client().PostForm(s.URL+"/"+kvfake.DefaultTenant+"/oauth2/v2.0/token", form)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		Error       string `json:"error"`
	}
	_ = json.NewDecoder(res.Body).Decode(&tr)
	if res.StatusCode == 200 && tr.ExpiresIn != int(kvfake.DefaultTokenLifetime/time.Second) {
		t.Errorf("expires_in %d", tr.ExpiresIn)
	}
	if tr.Error != "" {
		return res.StatusCode, tr.Error
	}
	return res.StatusCode, tr.AccessToken
}

func bearer(t *testing.T, s *kvfake.Server, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+"/secrets/a?api-version=7.6", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode == 401 {
		if res.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without the bearer challenge")
		}
		var e kvErr
		_ = json.Unmarshal(b, &e)
		return 401, e.Error.Message
	}
	return res.StatusCode, ""
}

// TestTokens: the vault accepts only tokens it issued, until they expire
// (by its clock) or are revoked; the token endpoint fails on demand.
func TestTokens(t *testing.T) {
	s := kvfake.New()
	defer s.Close()
	if st, msg := bearer(t, s, "made-up"); st != 401 || !strings.Contains(msg, "AKV10022") {
		t.Fatalf("unknown token: %d %q", st, msg)
	}
	st, tok := token(t, s)
	if st != 200 || tok == "" {
		t.Fatalf("token: %d %q", st, tok)
	}
	if st, _ := bearer(t, s, tok); st != 404 {
		t.Fatalf("issued token: %d, want 404 (authorized, no secret)", st)
	}
	s.AdvanceClock(kvfake.DefaultTokenLifetime)
	if st, msg := bearer(t, s, tok); st != 401 || !strings.Contains(msg, "TokenExpired") {
		t.Fatalf("expired token: %d %q", st, msg)
	}
	_, tok2 := token(t, s)
	if st, _ := bearer(t, s, tok2); st != 404 {
		t.Fatalf("fresh token: %d", st)
	}
	s.AdvanceClock(-time.Hour) // the vault's clock behind the issuer's
	if st, msg := bearer(t, s, tok2); st != 401 || !strings.Contains(msg, "not yet valid") {
		t.Fatalf("token from the future: %d %q", st, msg)
	}
	s.AdvanceClock(time.Hour)
	if n := s.RevokeTokens(); n != 2 {
		t.Errorf("revoked %d tokens, want 2", n)
	}
	if st, msg := bearer(t, s, tok2); st != 401 || !strings.Contains(msg, "AKV10022") {
		t.Fatalf("revoked token: %d %q", st, msg)
	}
	_, tok3 := token(t, s)
	if st, _ := bearer(t, s, tok3); st != 404 {
		t.Fatalf("token after revocation: %d", st)
	}

	s.InjectTokenFault(kvfake.TokenFault{Drop: true})
	if st, msg := token(t, s); st != 0 || msg == "" {
		t.Fatalf("dropped token request answered: %d %q", st, msg)
	}
	s.InjectTokenFault(kvfake.TokenFault{Status: 503})
	if st, msg := token(t, s); st != 503 || msg != "temporarily_unavailable" {
		t.Fatalf("token fault: %d %q", st, msg)
	}
	if st, _ := token(t, s); st != 200 {
		t.Fatalf("after the faults: %d", st)
	}

	// A static Token is accepted until revoked.
	s.Token = "static"
	if st, _ := bearer(t, s, "static"); st != 404 {
		t.Fatalf("static token: %d", st)
	}
	s.RevokeTokens()
	if st, _ := bearer(t, s, "static"); st != 401 {
		t.Fatalf("revoked static token: %d", st)
	}
}

// TestDisabledVersion: reading a disabled version is 403 Forbidden with
// inner error SecretDisabled; its tags stay readable in the versions list,
// and a new version, an update and a delete are allowed.
func TestDisabledVersion(t *testing.T) {
	s := kvfake.New()
	s.Token = "tok"
	defer s.Close()
	const av = "?api-version=7.6"
	do(t, s, "PUT", "/secrets/d"+av, `{"value":"v1","tags":{"owner":"me"},"attributes":{"enabled":false}}`, true)
	res, b := do(t, s, "GET", "/secrets/d"+av, "", true)
	var e struct {
		Error struct {
			Code       string
			Message    string
			InnerError struct{ Code string } `json:"innererror"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	if res.StatusCode != 403 || e.Error.Code != "Forbidden" || e.Error.InnerError.Code != "SecretDisabled" || !strings.Contains(e.Error.Message, "disabled") {
		t.Fatalf("get disabled: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "GET", "/secrets/d/versions"+av, "", true)
	if res.StatusCode != 200 || !strings.Contains(string(b), `"owner":"me"`) || !strings.Contains(string(b), `"enabled":false`) || strings.Contains(string(b), `"v1"`) {
		t.Fatalf("versions of a disabled secret: %d %s", res.StatusCode, b)
	}
	if res, b = do(t, s, "PUT", "/secrets/d"+av, `{"value":"v2"}`, true); res.StatusCode != 200 {
		t.Fatalf("new version over a disabled one: %d %s", res.StatusCode, b)
	}
	if res, b = do(t, s, "GET", "/secrets/d"+av, "", true); res.StatusCode != 200 || !strings.Contains(string(b), `"v2"`) {
		t.Fatalf("get after the new version: %d %s", res.StatusCode, b)
	}
	do(t, s, "PUT", "/secrets/d"+av, `{"value":"v3","attributes":{"enabled":false}}`, true)
	if res, b = do(t, s, "DELETE", "/secrets/d"+av, "", true); res.StatusCode != 200 {
		t.Fatalf("delete of a disabled secret: %d %s", res.StatusCode, b)
	}
}

func TestListSecrets(t *testing.T) {
	s := kvfake.New()
	s.Token = "tok"
	t.Cleanup(s.Close)
	const av = "?api-version=7.6"
	for _, n := range []string{"c", "a", "e", "b", "d"} {
		if res, b := do(t, s, "PUT", "/secrets/"+n+av, `{"value":"v","tags":{"k":"`+n+`"}}`, true); res.StatusCode != 200 {
			t.Fatalf("set %s: %d %s", n, res.StatusCode, b)
		}
	}
	if res, b := do(t, s, "DELETE", "/secrets/d"+av, "", true); res.StatusCode != 200 {
		t.Fatalf("delete: %d %s", res.StatusCode, b)
	}
	var got []string
	pages := 0
	path := "/secrets" + av + "&maxresults=2"
	for path != "" {
		res, b := do(t, s, "GET", path, "", true)
		if res.StatusCode != 200 {
			t.Fatalf("list %s: %d %s", path, res.StatusCode, b)
		}
		var page struct {
			Value []struct {
				ID    string            `json:"id"`
				Value *string           `json:"value"`
				Tags  map[string]string `json:"tags"`
			} `json:"value"`
			NextLink *string `json:"nextLink"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Value) > 2 {
			t.Errorf("page of %d, maxresults 2", len(page.Value))
		}
		for _, it := range page.Value {
			if it.Value != nil {
				t.Errorf("%s: list returned a value", it.ID)
			}
			got = append(got, it.ID[strings.LastIndexByte(it.ID, '/')+1:]+"="+it.Tags["k"])
		}
		path = ""
		if page.NextLink != nil {
			u, err := url.Parse(*page.NextLink)
			if err != nil {
				t.Fatal(err)
			}
			path = u.RequestURI()
		}
	}
	if want := "a=a b=b c=c e=e"; strings.Join(got, " ") != want || pages != 2 {
		t.Errorf("listed %q in %d pages, want %q in 2", got, pages, want)
	}
	if res, b := do(t, s, "GET", "/secrets"+av+"&maxresults=26", "", true); res.StatusCode != 400 || code(t, b) != "BadParameter" {
		t.Errorf("maxresults 26: %d %s", res.StatusCode, b)
	}
}

// innerCode returns the inner error code of a Key Vault error body.
func innerCode(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Error struct {
			InnerError struct{ Code string } `json:"innererror"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q is not Key Vault's shape: %v", b, err)
	}
	return e.Error.InnerError.Code
}

// TestPurgeDelay: Key Vault purges asynchronously. Until the purge is done
// the name reads as neither a secret nor a deleted secret (404), but a
// write is refused with 409 Conflict, inner error ObjectIsBeingDeleted.
func TestPurgeDelay(t *testing.T) {
	s := kvfake.New()
	s.Token = "tok"
	s.PurgeDelay = 300 * time.Millisecond
	defer s.Close()
	const av = "?api-version=7.6"
	do(t, s, "PUT", "/secrets/p"+av, `{"value":"v1"}`, true)
	do(t, s, "DELETE", "/secrets/p"+av, "", true)
	time.Sleep(s.DeleteDelay)
	res, b := do(t, s, "PUT", "/secrets/p"+av, `{"value":"v2"}`, true)
	if res.StatusCode != 409 || code(t, b) != "Conflict" || innerCode(t, b) != "ObjectIsDeletedButRecoverable" {
		t.Fatalf("set on a deleted name: %d %s", res.StatusCode, b)
	}
	if res, b = do(t, s, "DELETE", "/deletedsecrets/p"+av, "", true); res.StatusCode != 204 {
		t.Fatalf("purge: %d %s", res.StatusCode, b)
	}
	purged := time.Now()
	if st, _ := s.SecretState("p"); st != "purging" {
		t.Errorf("state during the purge %q, want purging", st)
	}
	for _, path := range []string{"/secrets/p", "/deletedsecrets/p"} {
		if res, b = do(t, s, "GET", path+av, "", true); res.StatusCode != 404 || code(t, b) != "SecretNotFound" {
			t.Errorf("GET %s during the purge: %d %s", path, res.StatusCode, b)
		}
	}
	if res, b = do(t, s, "POST", "/deletedsecrets/p/recover"+av, "", true); res.StatusCode != 404 {
		t.Errorf("recover during the purge: %d %s", res.StatusCode, b)
	}
	res, b = do(t, s, "PUT", "/secrets/P"+av, `{"value":"v2"}`, true)
	if res.StatusCode != 409 || code(t, b) != "Conflict" || innerCode(t, b) != "ObjectIsBeingDeleted" || !strings.Contains(string(b), "currently being deleted") {
		t.Fatalf("set during the purge: %d %s", res.StatusCode, b)
	}
	time.Sleep(time.Until(purged.Add(s.PurgeDelay)))
	if res, b = do(t, s, "PUT", "/secrets/p"+av, `{"value":"v2"}`, true); res.StatusCode != 200 {
		t.Fatalf("set after the purge: %d %s", res.StatusCode, b)
	}
	if st, n := s.SecretState("p"); st != "active" || n != 1 {
		t.Errorf("state after the purge and a write: %q with %d versions, want a new secret", st, n)
	}
}

// The delays are on by default; Instant is the explicit opt-out.
func TestDelaysDefaultOn(t *testing.T) {
	s := kvfake.New()
	defer s.Close()
	if s.DeleteDelay != kvfake.DefaultDeleteDelay || s.RecoverDelay != kvfake.DefaultRecoverDelay || s.PurgeDelay != kvfake.DefaultPurgeDelay ||
		s.DeleteDelay <= 0 || s.RecoverDelay <= 0 || s.PurgeDelay <= 0 {
		t.Fatalf("delays %v %v %v, want the non-zero defaults", s.DeleteDelay, s.RecoverDelay, s.PurgeDelay)
	}
	s.Token = "tok"
	s.Instant()
	const av = "?api-version=7.6"
	do(t, s, "PUT", "/secrets/i"+av, `{"value":"v1"}`, true)
	do(t, s, "DELETE", "/secrets/i"+av, "", true)
	if res, b := do(t, s, "DELETE", "/deletedsecrets/i"+av, "", true); res.StatusCode != 204 {
		t.Fatalf("purge right after the delete of an Instant vault: %d %s", res.StatusCode, b)
	}
	if st, _ := s.SecretState("i"); st != "" {
		t.Fatalf("state right after the purge of an Instant vault %q", st)
	}
}
