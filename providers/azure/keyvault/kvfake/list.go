package kvfake

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
)

// listSecrets answers Get Secrets (GET /secrets): the current version's
// properties of every secret that is not deleted, without values, in name
// order, maxresults a page (1..25; without it ListPageSize), with a
// nextLink carrying a $skiptoken while more remain.
func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request, base string) {
	q := r.URL.Query()
	size := s.ListPageSize
	if size <= 0 {
		size = PageSize
	}
	if v := q.Get("maxresults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > PageSize {
			writeErr(w, http.StatusBadRequest, "BadParameter", fmt.Sprintf("maxresults must be between 1 and %d", PageSize))
			return
		}
		size = n
	}
	var keys []string
	for k := range s.secrets {
		if s.active(k) != nil {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	start := 0
	if t := q.Get("$skiptoken"); t != "" {
		start = sort.SearchStrings(keys, t)
		if start < len(keys) && keys[start] == t {
			start++
		}
	}
	end := min(start+size, len(keys))
	items := []map[string]any{}
	for _, k := range keys[start:end] {
		sec := s.secrets[k]
		cur := sec.versions[len(sec.versions)-1]
		m := s.bundle(base, sec, cur, false)
		m["id"] = base + "/secrets/" + sec.name
		items = append(items, m)
	}
	resp := map[string]any{"value": items, "nextLink": nil}
	if end < len(keys) {
		next := url.Values{"api-version": {q.Get("api-version")}, "$skiptoken": {keys[end-1]}}
		if q.Get("maxresults") != "" {
			next.Set("maxresults", q.Get("maxresults"))
		}
		resp["nextLink"] = base + "/secrets?" + next.Encode()
	}
	writeJSON(w, http.StatusOK, resp)
}
