package conjurfake

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// ids decodes a listing and returns its resource ids, checking the shape
// of each resource.
func ids(t *testing.T, what, body string) []string {
	t.Helper()
	var rs []struct {
		ID          string `json:"id"`
		Policy      string `json:"policy"`
		Owner       string `json:"owner"`
		CreatedAt   string `json:"created_at"`
		Permissions []struct{ Privilege, Role, Policy string }
		Annotations []struct{ Name, Value, Policy string }
		Secrets     *[]struct{ Version int }
	}
	if err := json.Unmarshal([]byte(body), &rs); err != nil {
		t.Fatalf("%s: %v: %s", what, err, body)
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		kind := strings.SplitN(r.ID, ":", 3)
		if len(kind) != 3 || r.Owner == "" || r.CreatedAt == "" || r.Permissions == nil || r.Annotations == nil {
			t.Errorf("%s: resource %s lacks fields: %s", what, r.ID, body)
		}
		if kind[1] == "variable" && (r.Secrets == nil || r.Policy == "") {
			t.Errorf("%s: variable %s without secrets or policy: %s", what, r.ID, body)
		}
		out = append(out, r.ID)
	}
	return out
}

func TestListResources(t *testing.T) {
	s := New("acct")
	defer s.Close()
	s.AddBranch("app/team")
	s.AddBranch("other")
	s.AddUser("host/app", "k", "app")
	s.AddUser("admin", "ak", "root")
	for _, v := range [][2]string{{"app", "app/a"}, {"app", "app/b"}, {"app", "app/c"}, {"app/team", "app/team/d"}, {"app", "app/e"}} {
		s.SetVariable(v[0], v[1], map[string]string{"managed-by": "keyrelay"}, []byte("v"))
	}
	s.SetVariable("app", "app/x", map[string]string{"owner": "acme.prod", "team": "team-a"}, []byte("v"))
	s.SetVariable("other", "other/hidden", map[string]string{"managed-by": "keyrelay"}, []byte("v"))
	c := newRaw(t, s, "host/app", "k")
	get := func(q string) (int, string) { return c.do(http.MethodGet, "/resources/acct"+q, "") }
	wantIDs := func(what, q string, want ...string) {
		t.Helper()
		st, b := get(q)
		if st != 200 {
			t.Fatalf("%s: HTTP %d %s", what, st, b)
		}
		if got := ids(t, what, b); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}

	// Visibility: only what the role has privileges on, never an error.
	wantIDs("variables", "?kind=variable",
		"acct:variable:app/a", "acct:variable:app/b", "acct:variable:app/c", "acct:variable:app/e", "acct:variable:app/team/d", "acct:variable:app/x")
	wantIDs("policies", "?kind=policy", "acct:policy:app", "acct:policy:app/team")
	wantIDs("kind in the path, trailing slash", "/policy/", "acct:policy:app", "acct:policy:app/team")
	wantIDs("no kind", "?search=team", "acct:policy:app/team", "acct:variable:app/team/d", "acct:variable:app/x")

	// Paging: ordered by id; offset alone means a limit of 10.
	wantIDs("page 1", "?kind=variable&limit=2", "acct:variable:app/a", "acct:variable:app/b")
	wantIDs("page 2", "?kind=variable&limit=2&offset=2", "acct:variable:app/c", "acct:variable:app/e")
	wantIDs("past the end", "?kind=variable&limit=2&offset=9")
	wantIDs("offset alone", "?kind=variable&offset=5", "acct:variable:app/x")

	// Text search: whole words of ids and annotation values.
	wantIDs("search an annotation value", "?kind=variable&search=keyrelay",
		"acct:variable:app/a", "acct:variable:app/b", "acct:variable:app/c", "acct:variable:app/e", "acct:variable:app/team/d")
	// A dotted annotation value is one word (a host name to PostgreSQL's
	// parser), while the search term's dots become spaces: neither finds it.
	wantIDs("a dotted value is one word", "?kind=variable&search=acme")
	wantIDs("a dotted search term is split", "?kind=variable&search=acme.prod")
	// A hyphenated value also gives its parts; the term "team-a" is "team"
	// ("a" is a stop word), which the id app/team/d has too.
	wantIDs("a hyphenated value gives its parts", "?kind=variable&search=team-a", "acct:variable:app/team/d", "acct:variable:app/x")
	wantIDs("all words must match", "?kind=variable&search=keyrelay+team", "acct:variable:app/team/d")
	wantIDs("stop words only", "?kind=variable&search=the")

	// Counts are of the (limited) query and ignore the maximum.
	for q, want := range map[string]string{
		"?kind=variable&count=true":                  `{"count":6}`,
		"?kind=variable&count=true&limit=4&offset=3": `{"count":3}`,
		"?kind=variable&count=true&limit=5000":       `{"count":6}`,
	} {
		if st, b := get(q); st != 200 || strings.TrimSpace(b) != want {
			t.Errorf("%s: HTTP %d %s, want %s", q, st, b, want)
		}
	}

	// The configured maximum.
	st, b := get("?kind=variable&limit=" + "1001")
	wantStatus(t, "limit above the maximum", st, b, 422, "unprocessable_entity")
	if !strings.Contains(b, "must not exceed 1000") {
		t.Errorf("limit above the maximum: %s", b)
	}
	wantIDs("limit at the maximum", "?kind=variable&search=team-a&limit=1000", "acct:variable:app/team/d", "acct:variable:app/x")
	for _, q := range []string{"?limit=x", "?limit=-1", "?offset=1.5"} {
		st, b := get(q)
		wantStatus(t, q, st, b, 422, "unprocessable_entity")
	}

	// acting_as: the caller must hold the role.
	wantIDs("acting as itself", "?kind=policy&acting_as=acct:host:app", "acct:policy:app", "acct:policy:app/team")
	st, b = get("?kind=policy&acting_as=acct:user:admin")
	wantStatus(t, "acting as a role not held", st, b, 403, "forbidden")
	st, b = get("?kind=policy&role=acct:user:nobody")
	wantStatus(t, "acting as a missing role", st, b, 403, "forbidden")
	admin := newRaw(t, s, "admin", "ak")
	st, b = admin.do(http.MethodGet, "/resources/acct?kind=policy&acting_as=acct:host:app", "")
	if st != 200 || strings.Join(ids(t, "admin as host/app", b), " ") != "acct:policy:app acct:policy:app/team" {
		t.Errorf("admin acting as host/app: HTTP %d %s", st, b)
	}

	// Authentication.
	c.tok = ""
	if st, _ := get("?kind=variable"); st != 401 {
		t.Errorf("no token: HTTP %d, want 401", st)
	}
	c.tok = `Token token="garbage"`
	if st, _ := get("?kind=variable"); st != 401 {
		t.Errorf("garbage token: HTTP %d, want 401", st)
	}
	st, b = admin.do(http.MethodGet, "/resources/nope?kind=variable", "")
	wantStatus(t, "other account", st, b, 404, "not_found")
	st, b = admin.do(http.MethodPost, "/resources/acct", "")
	wantStatus(t, "POST", st, b, 405, "method_not_allowed")
}

func TestListLimitMax(t *testing.T) {
	s := New("acct")
	defer s.Close()
	s.SetListLimitMax(0)
	s.AddBranch("app")
	s.AddUser("host/app", "k", "app")
	for _, id := range []string{"app/a", "app/b", "app/c"} {
		s.SetVariable("app", id, nil, []byte("v"))
	}
	c := newRaw(t, s, "host/app", "k")
	st, b := c.do(http.MethodGet, "/resources/acct?kind=variable&limit=5000", "")
	if st != 200 || len(ids(t, "no maximum", b)) != 3 {
		t.Fatalf("no maximum: HTTP %d %s", st, b)
	}
	s.SetListLimitMax(2)
	st, b = c.do(http.MethodGet, "/resources/acct?kind=variable", "")
	if st != 200 || len(ids(t, "default limit", b)) != 2 {
		t.Fatalf("a listing without a limit gets the maximum: HTTP %d %s", st, b)
	}
}
