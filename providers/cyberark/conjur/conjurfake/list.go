package conjurfake

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// DefaultListLimitMax is the api_resource_list_limit_max New sets (see
// Server.SetListLimitMax).
const DefaultListLimitMax = 1000

// DefaultListLimit is the limit Conjur applies when a listing gives an
// offset but no limit.
const DefaultListLimit = 10

const timeFormat = "2006-01-02T15:04:05.000-07:00"

// listResources answers GET /resources/{account}[/{kind}] the way Conjur's
// ResourcesController#index does:
//
//   - 401 without a valid access token;
//   - only the resources the role (or the role named by acting_as / role,
//     which the caller must hold: 403 otherwise) has a privilege on, the
//     others being silently absent; the fake's resources are variables and
//     the policy branches;
//   - kind narrows to one kind; search is a full-text query over the
//     identifier, the annotation values and the kind (see matches);
//   - limit and offset page the result, ordered by resource id (offset
//     without limit means a limit of DefaultListLimit); with a maximum set
//     (SetListLimitMax), a listing without a limit gets the maximum and
//     one above it is rejected with 422; count requests are not limited
//     by it;
//   - count=true answers {"count": n} (n after limit and offset, which
//     Conjur counts over the limited query).
//
// limit and offset must be non-negative integers (422 otherwise).
func (s *Server) listResources(w http.ResponseWriter, r *http.Request, segs []string) {
	if segs[1] != s.Account {
		writeErr(w, 404, "not_found", "CONJ00007E Account '"+segs[1]+"' not found")
		return
	}
	if r.Method != http.MethodGet {
		writeErr(w, 405, "method_not_allowed", "method not allowed")
		return
	}
	login, ok := s.auth(r)
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	kind := q.Get("kind")
	if len(segs) == 3 {
		k, err := url.PathUnescape(segs[2])
		if err != nil {
			writeErr(w, 400, "bad_request", "malformed kind")
			return
		}
		kind = k
	}
	number := func(name string) (int, bool, bool) {
		v, set := q[name]
		if !set {
			return 0, false, true
		}
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 {
			writeErr(w, 422, "unprocessable_entity", "'"+name+"' must be a non-negative integer")
			return 0, true, false
		}
		return n, true, true
	}
	limit, hasLimit, ok := number("limit")
	if !ok {
		return
	}
	offset, hasOffset, ok := number("offset")
	if !ok {
		return
	}
	_, countParam := q["count"]
	if s.listMax > 0 && !countParam {
		if !hasLimit {
			limit, hasLimit = s.listMax, true
		}
		if limit > s.listMax {
			writeErr(w, 422, "unprocessable_entity", "'Limit' parameter must not exceed "+strconv.Itoa(s.listMax))
			return
		}
	}
	viewer := login
	if role := firstNonEmpty(q.Get("role"), q.Get("acting_as")); role != "" {
		viewer = s.assume(login, role)
		if viewer == "" {
			writeErr(w, 403, "forbidden", "Forbidden")
			return
		}
	}

	var found []resourceJSON
	if kind == "" || kind == "variable" {
		for _, v := range s.vars {
			if s.may(viewer, v.policy) && (q.Get("search") == "" || matches(q.Get("search"), v.id, "variable", v.annotations)) {
				found = append(found, s.variableJSON(v))
			}
		}
	}
	if kind == "" || kind == "policy" {
		for b := range s.branches {
			if s.may(viewer, b) && (q.Get("search") == "" || matches(q.Get("search"), b, "policy", nil)) {
				found = append(found, s.policyJSON(b))
			}
		}
	}
	sort.Slice(found, func(i, j int) bool { return found[i].ID < found[j].ID })
	if hasLimit || hasOffset {
		if !hasLimit {
			limit = DefaultListLimit
		}
		found = found[min(offset, len(found)):]
		found = found[:min(limit, len(found))]
	}
	w.Header().Set("Content-Type", "application/json")
	if q.Get("count") == "true" {
		_ = json.NewEncoder(w).Encode(map[string]int{"count": len(found)})
		return
	}
	if found == nil {
		found = []resourceJSON{}
	}
	_ = json.NewEncoder(w).Encode(found)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// assume returns the login whose role id is role when login may act as it
// (it is login's own role, or login owns everything), "" otherwise.
func (s *Server) assume(login, role string) string {
	for l := range s.users {
		if s.roleID(l) != role {
			continue
		}
		if l == login || s.may(login, "root") {
			return l
		}
	}
	return ""
}

// policyJSON is the resource of policy branch b.
func (s *Server) policyJSON(b string) resourceJSON {
	out := resourceJSON{CreatedAt: s.started.Format(timeFormat), ID: s.policyID(b), Owner: s.roleID("admin"), Permissions: s.permissions(b),
		Annotations: []annJSON{}, PolicyVersions: &[]any{}}
	if b != "root" {
		parent := "root"
		if i := strings.LastIndexByte(b, '/'); i > 0 {
			parent = b[:i]
		}
		out.Owner, out.Policy = s.policyID(parent), s.policyID(parent)
	}
	return out
}

// matches approximates Conjur's text search: PostgreSQL's
// plainto_tsquery('english', translate(search, './-', '   ')) against a
// tsvector of the identifier (with '.', '/' and '-' turned into spaces),
// the annotation values and the kind. Every word of the query must be a
// word of the resource. Words are lower-cased, and English stop words are
// dropped from the query (a query of stop words only matches nothing);
// there is no stemming. Annotation values are split as PostgreSQL's default
// parser splits them: a hyphenated word gives itself and its parts, and a
// dotted word (a host or file name, "acme.prod") stays one word, so a
// search for "acme" does not find it.
func matches(search, identifier, kind string, annotations map[string]string) bool {
	query := map[string]bool{}
	for _, w := range words(strings.NewReplacer(".", " ", "/", " ", "-", " ").Replace(search)) {
		if !stopWords[w] {
			query[w] = true
		}
	}
	if len(query) == 0 {
		return false
	}
	doc := map[string]bool{kind: true}
	for _, w := range words(strings.NewReplacer(".", " ", "/", " ", "-", " ").Replace(identifier)) {
		doc[w] = true
	}
	for _, v := range annotations {
		for _, w := range words(v) {
			doc[w] = true
		}
	}
	for w := range query {
		if !doc[w] {
			return false
		}
	}
	return true
}

// words splits s into lower-cased words: runs of letters, digits, '.' and
// '-', where a run with an inner '.' is one word and a run with inner '-'
// is the whole run and each part.
func words(s string) []string {
	var out []string
	runs := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '.' && r != '-'
	})
	for _, run := range runs {
		run = strings.Trim(run, ".-")
		switch {
		case run == "":
		case strings.Contains(run, "."):
			out = append(out, run)
		case strings.Contains(run, "-"):
			out = append(out, run)
			for _, p := range strings.Split(run, "-") {
				if p != "" {
					out = append(out, p)
				}
			}
		default:
			out = append(out, run)
		}
	}
	return out
}

// stopWords are common entries of PostgreSQL's english stop-word list.
var stopWords = func() map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(`a about above after again against all am an and any are as at be because
		been before being below between both but by can did do does doing down during each few for from
		further had has have having he her here hers herself him himself his how i if in into is it its
		itself just me more most my myself no nor not now of off on once only or other our ours ourselves
		out over own s same she should so some such t than that the their theirs them themselves then
		there these they this those through to too under until up very was we were what when where which
		while who whom why will with you your yours yourself yourselves`) {
		m[w] = true
	}
	return m
}()
