package vault

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/providers"
)

// What keyrelay keeps in a secret's KV v2 custom_metadata, besides the
// caller's extra tags:
//
//	managed-by: keyrelay          ownership (providers.ManagedByTag)
//	keyrelay-team, keyrelay-key   the owner (providers.TeamTag, KeyTag)
//	keyrelay-description          PutRequest.Description
//	keyrelay-event-<version>      only on versions written before
//	                              DataEventKey: the idempotency key (event
//	                              id) that wrote <version>, "-" when the
//	                              write had none; still read, no longer
//	                              written (but for the repair of such a
//	                              version, see Provider.Put)
//
// custom_metadata belongs to the secret, not to a version, so the event id
// of each version was recorded under its own key, in a request of its own
// after the write; versions now carry it in their data (DataEventKey).
const (
	// EventKeyPrefix starts the custom_metadata keys holding the event id
	// of each version: "keyrelay-event-3" for version 3.
	EventKeyPrefix = providers.EventTag + "-"
	// DescriptionKey holds PutRequest.Description.
	DescriptionKey = "keyrelay-description"
	// noEventID records a version written without an idempotency key.
	noEventID = "-"
)

// Vault's limits on custom_metadata (vault-plugin-secrets-kv).
const (
	maxMetadataKeys     = 64
	maxMetadataKeyLen   = 128
	maxMetadataValueLen = 512
)

// MaxTags is the most extra tags a secret can carry: custom_metadata holds
// 64 keys, shared with the ownership tags, the description and the event
// ids of Config.EventHistory versions.
func (c Config) MaxTags() int { return maxMetadataKeys - 4 - c.EventHistory }

func eventKey(version uint64) string { return EventKeyPrefix + strconv.FormatUint(version, 10) }

func parseEventKey(k string) (uint64, bool) {
	if !strings.HasPrefix(k, EventKeyPrefix) {
		return 0, false
	}
	v, err := strconv.ParseUint(k[len(EventKeyPrefix):], 10, 64)
	return v, err == nil && v > 0
}

// isReserved reports whether k is a custom_metadata key keyrelay manages
// itself: a request's extra tags cannot set it.
func isReserved(k string) bool {
	switch k {
	case providers.ManagedByTag, providers.TeamTag, providers.KeyTag, providers.EventTag, DescriptionKey:
		return true
	}
	_, ok := parseEventKey(k)
	return ok
}

// eventOf returns the idempotency key recorded for version, and whether one
// was recorded ("" with true for a write that had none).
func eventOf(custom map[string]string, version uint64) (string, bool) {
	id, ok := custom[eventKey(version)]
	if id == noEventID {
		return "", ok
	}
	return id, ok
}

// tagsView returns the tags Get reports: the ownership and extra tags, and
// providers.EventTag set to the event id that wrote version (from its data,
// else from custom_metadata), when known.
func tagsView(custom map[string]string, data map[string]any, version uint64) map[string]string {
	out := make(map[string]string, len(custom)+1)
	for k, v := range custom {
		if _, ok := parseEventKey(k); ok || k == DescriptionKey {
			continue
		}
		out[k] = v
	}
	if id, ok := versionEvent(data, custom, version); ok && id != "" {
		out[providers.EventTag] = id
	}
	return out
}

// checkTagName validates an extra tag's name against Vault's
// custom_metadata rules. Names cannot be repaired; values can
// (sanitizeValue).
func checkTagName(k string) error {
	switch {
	case k == "" || len(k) > maxMetadataKeyLen:
		return fmt.Errorf("tag name %q: must be 1 to %d bytes", clip(k), maxMetadataKeyLen)
	case !printable(k):
		return fmt.Errorf("tag name %q: must be printable UTF-8", clip(k))
	}
	return nil
}

func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// sanitizeValue makes a tag value or a description storable in
// custom_metadata: invalid UTF-8 and non-printable characters become
// spaces (a newline in an alias must not cost the key its write), and it is
// cut to 512 bytes at a character boundary.
func sanitizeValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxMetadataValueLen {
		cut := maxMetadataValueLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// tagUpdate describes the non-event part of a custom_metadata change.
type tagUpdate struct {
	owner       providers.Owner
	extra       map[string]string
	keepExtra   bool // nil Tags on Put: keep the stored extra tags
	adopt       bool
	description string
}

// desiredTags computes the ownership, extra tags and description the secret
// should carry after the update, from what it carries now (old, may be nil).
// Tag values are sanitized (sanitizeValue) and dropped when empty (Vault
// stores no empty values); a name Vault cannot store is an error; reserved
// names in the request are ignored, so a request cannot forge ownership.
func (c Config) desiredTags(old map[string]string, u tagUpdate) (map[string]string, error) {
	out := map[string]string{}
	if u.keepExtra {
		for k, v := range old {
			if !isReserved(k) {
				out[k] = v
			}
		}
	} else {
		for k, v := range u.extra {
			if isReserved(k) {
				continue
			}
			if err := checkTagName(k); err != nil {
				return nil, err
			}
			if v = sanitizeValue(v); v != "" {
				out[k] = v
			}
		}
	}
	if n := len(out); n > c.MaxTags() {
		return nil, fmt.Errorf("%d tags, at most %d fit in custom_metadata with event_history %d", n, c.MaxTags(), c.EventHistory)
	}
	kept := providers.KeptOwner(old, u.owner, u.adopt)
	for _, id := range []string{kept.TeamID, kept.KeyID} {
		if id != "" && (len(id) > maxMetadataValueLen || !printable(id)) {
			return nil, fmt.Errorf("owner id %q is not storable in custom_metadata", clip(id))
		}
	}
	out = providers.OwnerTags(kept, out)
	if d := sanitizeValue(u.description); d != "" {
		out[DescriptionKey] = d
	} else if d := old[DescriptionKey]; d != "" {
		out[DescriptionKey] = d
	}
	return out, nil
}

// metadataPatch is the JSON merge patch of custom_metadata turning old into
// want (event keys untouched), then recording event id for version (when
// version > 0) and dropping event keys older than the history keeps.
// Removed keys are set to null.
func (c Config) metadataPatch(old, want map[string]string, version uint64, eventID string) map[string]any {
	patch := map[string]any{}
	for k, v := range want {
		if old[k] != v {
			patch[k] = v
		}
	}
	for k := range old {
		if _, isEvent := parseEventKey(k); isEvent {
			continue
		}
		if _, keep := want[k]; !keep {
			patch[k] = nil
		}
	}
	if version > 0 {
		id := eventID
		if id == "" {
			id = noEventID
		}
		if old[eventKey(version)] != id {
			patch[eventKey(version)] = id
		}
		for k := range old {
			if v, ok := parseEventKey(k); ok && v+uint64(c.EventHistory) <= version {
				patch[k] = nil
			}
		}
	}
	return patch
}

// sortedVersions returns the keys of a versions map in ascending order.
func sortedVersions(m map[uint64]versionMeta) []uint64 {
	out := make([]uint64, 0, len(m))
	for v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
