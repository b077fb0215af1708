package keyvault

import (
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/providers"
)

// Tags keyrelay writes besides providers' ownership tags.
const (
	// DescriptionTag holds PutRequest.Description (Key Vault secrets have
	// no description field).
	DescriptionTag = "keyrelay-description"
	// NameTag holds the keyrelay name when it fits a tag value.
	NameTag = "keyrelay-name"
	// MaxTags is Key Vault's limit on tags per secret.
	MaxTags = 15
	// MaxTagNameLength and MaxTagValueLength are Key Vault's limits.
	MaxTagNameLength  = 512
	MaxTagValueLength = 256
)

func reservedTag(k string) bool {
	switch k {
	case providers.ManagedByTag, providers.TeamTag, providers.KeyTag, providers.EventTag, DescriptionTag, NameTag:
		return true
	}
	return false
}

// buildTags returns the tags of a new version or an update: the caller's
// extra tags (reserved names dropped, so a request cannot forge
// ownership), then the ownership tags, the description (cut to Key Vault's
// 256-byte tag value limit), the original name (when it fits) and the
// event id.
func buildTags(op, name string, o providers.Owner, extra map[string]string, desc, event string) (map[string]*string, error) {
	clean := map[string]string{}
	for k, v := range extra {
		if !reservedTag(k) {
			clean[k] = v
		}
	}
	t := providers.OwnerTags(o, clean)
	if desc != "" {
		t[DescriptionTag] = truncate(desc, MaxTagValueLength)
	}
	if len(name) <= MaxTagValueLength {
		t[NameTag] = name
	}
	if event != "" {
		t[EventTag] = event
	}
	if len(t) > MaxTags {
		return nil, errInvalid(op, name, "%d tags, Key Vault allows %d (keyrelay uses up to 6)", len(t), MaxTags)
	}
	out := make(map[string]*string, len(t))
	for k, v := range t {
		if k == "" || len(k) > MaxTagNameLength {
			return nil, errInvalid(op, name, "tag name of %d characters (1..%d)", len(k), MaxTagNameLength)
		}
		if len(v) > MaxTagValueLength {
			return nil, errInvalid(op, name, "tag %q value is %d characters, Key Vault allows %d", k, len(v), MaxTagValueLength)
		}
		out[k] = &v
	}
	return out, nil
}

// EventTag is providers.EventTag, the idempotency key of a version.
const EventTag = providers.EventTag

func tagMap(t map[string]*string) map[string]string {
	out := make(map[string]string, len(t))
	for k, v := range t {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

func tagOf(t map[string]*string, k string) string {
	if v := t[k]; v != nil {
		return *v
	}
	return ""
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
