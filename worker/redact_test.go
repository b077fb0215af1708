package worker

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/events"
)

const fuzzSentinel = "sk-FUZZ.SENTINEL/4c2e9b"

// sentinelForms: plain, and base64 at each byte alignment (without the
// edge characters that depend on neighbouring bytes).
func sentinelForms() []string {
	out := []string{fuzzSentinel}
	for pad := 0; pad < 3; pad++ {
		enc := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", pad) + fuzzSentinel))
		skip := []int{0, 2, 3}[pad]
		out = append(out, enc[skip:len(enc)-4], base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("x", pad) + fuzzSentinel))[skip:len(enc)-4])
	}
	return out
}

// FuzzRedactedCopy: whatever a message holds, its redacted DLQ copy is a
// summary that keeps no payload bytes beyond the top-level id, team_id and
// key_id members when they are well-formed ids (what an operator needs to
// find the publisher), a known type and a number: the sentinel, planted
// anywhere else in the input, never shows up in plain or in base64. (The
// sentinel itself holds '.' and '/', so it can never pass as an id; its
// base64 form can, and is then kept only as the id member it was sent in.)
func FuzzRedactedCopy(f *testing.F) {
	pv := base64.StdEncoding.EncodeToString([]byte(fuzzSentinel))
	for _, s := range []string{
		`{"spec_version":"1.0","id":"e1","type":"key.created","team_id":"t","key_id":"k","data":{"value":"%s"}}`,
		`{"id":"e1","data":{"value":{"alg":"plaintext","ct":"%s"}},"extra":1}`,
		`{"id":"e1","data":{"value":{"alg":"A256GCM","kid":"k1","nonce":"%s","ct":"%s"}}`,
		`{"id":"%s","team_id":"%s","key_id":"%s","type":"%s","generation":"%s"}`,
		`%s`, `{"data":%s`, `[%s]`, `{"id":"e1","id":"%s"}`,
	} {
		f.Add(s, pv, "Nats-Msg-Id", "e1")
		f.Add(s, fuzzSentinel, "traceparent", fuzzSentinel)
		f.Add(s, pv, "Nats-Msg-Id", "%s")
	}
	f.Fuzz(func(t *testing.T, tmpl, planted, hname, hval string) {
		if planted != fuzzSentinel && planted != base64.StdEncoding.EncodeToString([]byte(fuzzSentinel)) {
			planted = fuzzSentinel
		}
		data := []byte(strings.ReplaceAll(tmpl, "%s", planted))
		if !strings.Contains(string(data), planted) {
			data = append(data, planted...)
		}
		if strings.Contains(hval, "%s") {
			hval = strings.ReplaceAll(hval, "%s", planted)
		}
		h := map[string][]string{hname: {hval}, "X-Other": {planted}}
		out := redactedBytes("keyrelay.events.t.k.key.created", h, data, "reason")
		var e RedactedEntry
		if err := json.Unmarshal(out, &e); err != nil || !e.Redacted {
			t.Fatalf("not a redacted summary: %s", out)
		}
		var top map[string]any
		_ = json.Unmarshal(data, &top)
		rest := string(out)
		for field, v := range map[string]string{"id": e.Claimed.ID, "team_id": e.Claimed.TeamID, "key_id": e.Claimed.KeyID} {
			if v == "" {
				continue
			}
			if events.ValidateID(field, v) != nil {
				t.Fatalf("claimed %s %q is not an id", field, v)
			}
			if top[field] != v {
				t.Fatalf("claimed %s %q is not the message's top-level %s", field, v, field)
			}
			rest = strings.ReplaceAll(rest, `"`+field+`":"`+v+`"`, "")
		}
		for name, v := range e.Headers {
			if len(h[name]) != 1 || h[name][0] != v {
				t.Fatalf("header %s %q is not the message's", name, v)
			}
			rest = strings.ReplaceAll(rest, `"`+name+`":"`+v+`"`, "")
		}
		for _, f := range sentinelForms() {
			if strings.Contains(rest, f) {
				t.Fatalf("the redacted copy keeps %q: %s", f, out)
			}
		}
	})
}

func TestSubjectIDs(t *testing.T) {
	for subj, want := range map[string][2]string{
		"keyrelay.events.team-a.key-1.key.created": {"team-a", "key-1"},
		"keyrelay.settings.team-a":                 {"team-a", ""},
		"keyrelay.events.-bad.key-1.key.created":   {"", ""},
		"keyrelay.events.team-a.-bad.key.created":  {"team-a", ""},
		"other.subject":                            {"", ""},
	} {
		team, key := subjectIDs(subj)
		if team != want[0] || key != want[1] {
			t.Errorf("%s: %q %q, want %q", subj, team, key, want)
		}
	}
}
