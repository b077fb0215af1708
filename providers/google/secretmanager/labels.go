package secretmanager

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/keyrelay/keyrelay/providers"
)

// Annotation keys keyrelay writes on a secret. Annotations hold the exact
// tags (labels cannot: GCP restricts them to 63 lowercase characters), the
// description and, per version, the idempotency key (event id) that wrote
// it: Secret Manager versions carry no labels or annotations of their own.
const (
	AnnotationTags        = "keyrelay-tags"
	AnnotationDescription = "keyrelay-description"
	// AnnotationName holds the keyrelay name the secret was written under
	// (secret ids cannot hold every name: see SecretID), so that List can
	// return it. Put writes it on every create and update.
	AnnotationName = "keyrelay-name"
	// AnnotationEventPrefix + the version number names the annotation
	// holding the idempotency key that wrote that version.
	AnnotationEventPrefix = "keyrelay-event-"
	// MaxEventAnnotations is how many of the newest versions keep their
	// event annotation (annotations are limited to 16 KiB per secret).
	MaxEventAnnotations = 32
	// maxEventValue is the longest idempotency key stored as it is; longer
	// ones are stored as "sha256:" + hex.
	maxEventValue = 128
	maxLabel      = 63
)

func eventAnnotation(version int64) string {
	return AnnotationEventPrefix + strconv.FormatInt(version, 10)
}

// eventValue is what the event annotation stores for an idempotency key.
func eventValue(key string) string {
	if len(key) <= maxEventValue {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func isOwnerTag(k string) bool {
	return k == providers.ManagedByTag || k == providers.TeamTag || k == providers.KeyTag
}

// extraTags drops ownership keys from a request's tags: a request cannot
// forge them.
func extraTags(in map[string]string) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		if !isOwnerTag(k) {
			out[k] = v
		}
	}
	return out
}

// tagsOf returns a secret's keyrelay tags from its annotations; nil when
// keyrelay never wrote any.
func tagsOf(annotations map[string]string) map[string]string {
	raw, ok := annotations[AnnotationTags]
	if !ok {
		return nil
	}
	var t map[string]string
	if json.Unmarshal([]byte(raw), &t) != nil {
		return nil
	}
	return t
}

func encodeTags(t map[string]string) string {
	b, _ := json.Marshal(t) // map[string]string always marshals
	return string(b)
}

// LabelValue maps s to GCP's label rules: at most 63 of lowercase letters,
// digits, '_' and '-'. Other characters become '_' and uppercase letters
// lowercase; when anything changed, the value ends in '-' and 8 hex digits
// of s's SHA-256, so distinct inputs stay distinct in practice.
func LabelValue(s string) string {
	ok := len(s) <= maxLabel
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
			ok = false
		default:
			c = '_'
			ok = false
		}
		b.WriteByte(c)
	}
	if ok {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	out := b.String()
	if len(out) > maxLabel-9 {
		out = out[:maxLabel-9]
	}
	return out + "-" + hex.EncodeToString(sum[:4])
}

// LabelKey maps k to GCP's label key rules: LabelValue's, non-empty and
// starting with a lowercase letter ("k" is put in front otherwise).
func LabelKey(k string) string {
	v := LabelValue(k)
	if v == "" || v[0] < 'a' || v[0] > 'z' {
		v = LabelValue("k" + k)
	}
	return v
}

// labelsFor projects tags onto labels (for filtering in the console and in
// ListSecrets): every tag mapped by LabelKey and LabelValue, at most 64.
// Ownership labels come first; of the extra tags, those sorting first win.
func labelsFor(tags map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range []string{providers.ManagedByTag, providers.TeamTag, providers.KeyTag} {
		if v, ok := tags[k]; ok {
			out[LabelKey(k)] = LabelValue(v)
		}
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		if !isOwnerTag(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if len(out) >= 64 {
			break
		}
		lk := LabelKey(k)
		if _, taken := out[lk]; !taken {
			out[lk] = LabelValue(tags[k])
		}
	}
	return out
}

// pruneEvents removes event annotations of versions older than the newest
// MaxEventAnnotations before latest.
func pruneEvents(a map[string]string, latest int64) {
	for k := range a {
		if n, ok := strings.CutPrefix(k, AnnotationEventPrefix); ok {
			if v, err := strconv.ParseInt(n, 10, 64); err == nil && v <= latest-MaxEventAnnotations {
				delete(a, k)
			}
		}
	}
}
