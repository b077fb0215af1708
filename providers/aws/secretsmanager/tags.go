package secretsmanager

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/keyrelay/keyrelay/providers"
)

// AWS tag limits.
const (
	maxTagKeyLength   = 128
	maxTagValueLength = 256
)

func isOwnerTag(k string) bool {
	return k == providers.ManagedByTag || k == providers.TeamTag || k == providers.KeyTag
}

// tagRuneOK reports whether AWS accepts r in a tag: letters, digits,
// spaces and _.:/=+-@.
func tagRuneOK(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || r == ' ' || strings.ContainsRune("_.:/=+-@", r)
}

// cleanTag maps a tag to AWS's rules: characters AWS refuses become '_',
// keys are cut to 128 and values to 256 characters. Keys with AWS's
// reserved "aws:" prefix get "x-" in front.
func cleanTag(k, v string) (string, string) {
	fix := func(s string, n int) string {
		s = strings.Map(func(r rune) rune {
			if tagRuneOK(r) {
				return r
			}
			return '_'
		}, s)
		if utf8.RuneCountInString(s) > n {
			s = string([]rune(s)[:n])
		}
		return s
	}
	if strings.HasPrefix(strings.ToLower(k), "aws:") {
		k = "x-" + k
	}
	return fix(k, maxTagKeyLength), fix(v, maxTagValueLength)
}

// extraTags returns the request's non-ownership tags mapped to AWS's rules,
// in sorted key order (so that two keys mapped onto one resolve the same
// way every time). nil stays nil.
func extraTags(in map[string]string) map[string]string {
	if in == nil {
		return nil
	}
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string, len(in))
	for _, k := range keys {
		if isOwnerTag(k) || k == "" {
			continue
		}
		ck, cv := cleanTag(k, in[k])
		if isOwnerTag(ck) {
			continue
		}
		out[ck] = cv
	}
	return out
}

// desiredTags computes a secret's tags after a write: the extra tags from
// extra, or from old when keepExtra, and the ownership tags of o. Without
// adopt, an owner field o leaves empty keeps the old value (as the local
// provider does).
func desiredTags(old map[string]string, o providers.Owner, extra map[string]string, keepExtra, adopt bool) map[string]string {
	src := extra
	if keepExtra {
		src = old
	}
	t := make(map[string]string, len(src)+3)
	for k, v := range src {
		if !isOwnerTag(k) && !strings.HasPrefix(k, "aws:") {
			t[k] = v
		}
	}
	return providers.OwnerTags(providers.KeptOwner(old, o, adopt), t)
}

// tagDiff returns the tags to set and the keys to remove to go from old to
// want. AWS-managed "aws:" tags are left alone.
func tagDiff(old, want map[string]string) (set map[string]string, remove []string) {
	set = map[string]string{}
	for k, v := range want {
		if ov, ok := old[k]; !ok || ov != v {
			set[k] = v
		}
	}
	for k := range old {
		if _, ok := want[k]; !ok && !strings.HasPrefix(k, "aws:") {
			remove = append(remove, k)
		}
	}
	sort.Strings(remove)
	return set, remove
}

func tagMap(ts []types.Tag) map[string]string {
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func tagList(m map[string]string) []types.Tag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]types.Tag, 0, len(m))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}
