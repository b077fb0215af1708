package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// SpecVersion is the only envelope version this build understands.
const SpecVersion = "1.0"

// MaxEventBytes bounds the encoded size of one event. Secret values are
// small (virtual keys are well under 1 KiB); anything close to this limit is
// a mistake or an attack, and JetStream's own default message limit is 1 MiB.
const MaxEventBytes = 64 << 10

// Type names what happened to a key or a team's settings.
type Type string

// Event types.
const (
	KeyCreated          Type = "key.created"
	KeyRotated          Type = "key.rotated"
	KeyUpdated          Type = "key.updated"
	KeyDeleted          Type = "key.deleted"
	TeamSettingsUpdated Type = "team.settings.updated"
	TeamSettingsDeleted Type = "team.settings.deleted"
)

// Types lists every event type in a stable order.
var Types = []Type{KeyCreated, KeyRotated, KeyUpdated, KeyDeleted, TeamSettingsUpdated, TeamSettingsDeleted}

// IsKey reports whether t concerns one virtual key (and so carries key_id).
func (t Type) IsKey() bool {
	switch t {
	case KeyCreated, KeyRotated, KeyUpdated, KeyDeleted:
		return true
	}
	return false
}

// IsSettings reports whether t concerns a team's settings.
func (t Type) IsSettings() bool { return t == TeamSettingsUpdated || t == TeamSettingsDeleted }

// Known reports whether t is a type this build handles.
func (t Type) Known() bool { return t.IsKey() || t.IsSettings() }

// Event is the envelope every message on the events stream carries.
type Event struct {
	// SpecVersion is the envelope version; must equal SpecVersion.
	SpecVersion string `json:"spec_version"`
	// ID is unique per event and used as the JetStream Nats-Msg-Id.
	ID string `json:"id"`
	// Type is one of the Type constants.
	Type Type `json:"type"`
	// Time is when the gateway produced the event.
	Time time.Time `json:"time"`
	// TeamID owns the key or the settings.
	TeamID string `json:"team_id"`
	// KeyID is the stable identity of a virtual key (never its alias).
	// Required for key.* events, absent for team.settings.*.
	KeyID string `json:"key_id,omitempty"`
	// Generation increases strictly per key (or per team for settings
	// events). Zero means "not set": the stream sequence is used instead.
	Generation uint64 `json:"generation,omitempty"`
	// KeyAlias is the key's human alias, if any. Informational unless the
	// naming template uses it.
	KeyAlias string `json:"key_alias,omitempty"`
	// JobID (key.* events only) names the bulk job the event belongs to
	// (`keyrelay rotate`, or any publisher running one): an id, copied
	// into the event's confirmation so the job's progress can be counted.
	JobID string `json:"job_id,omitempty"`
	// Data holds the type-specific payload.
	Data json.RawMessage `json:"data,omitempty"`

	// decoded caches the payload Validate decoded from Data, so handlers
	// do not parse it twice. It is dropped whenever Data changes.
	decoded     any
	decodedFrom []byte
}

// KeyData is the payload of key.created and key.rotated.
type KeyData struct {
	// Value is the sealed secret value.
	Value *SealedValue `json:"value"`
	// Metadata is free-form, non-secret metadata stored as tags.
	Metadata map[string]string `json:"metadata,omitempty"`
	// GracePeriodSeconds (key.rotated only) is how long the previous value
	// stays readable. Zero means the provider's default.
	GracePeriodSeconds int64 `json:"grace_period_seconds,omitempty"`
}

// UpdateData is the payload of key.updated.
type UpdateData struct {
	// PreviousAlias is the alias before the rename, if the alias changed.
	PreviousAlias string `json:"previous_alias,omitempty"`
	// Metadata replaces the key's metadata when non-nil.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// SettingsData is the payload of team.settings.updated.
type SettingsData struct {
	Settings TeamSettings `json:"settings"`
}

// TeamSettings overrides the global secret-manager settings for one team.
// Every field is optional; an empty field inherits the global value.
// Credentials are referenced (for example an environment variable name or a
// file path in Options), never carried in the event.
type TeamSettings struct {
	// Backend is a LiteLLM key_management_system name, e.g. "hashicorp_vault".
	Backend string `json:"backend,omitempty"`
	// StoreVirtualKeys turns writes on or off for this team.
	StoreVirtualKeys *bool `json:"store_virtual_keys,omitempty"`
	// Prefix replaces prefix_for_stored_virtual_keys.
	Prefix *string `json:"prefix,omitempty"`
	// AccessMode is read_only, write_only or read_and_write.
	AccessMode string `json:"access_mode,omitempty"`
	// NameTemplate overrides how secret names are built.
	NameTemplate string `json:"name_template,omitempty"`
	// Description and Tags are written with every secret of the team.
	Description string            `json:"description,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	// Options are provider-specific (vault namespace/mount/path_prefix,
	// aws region/role, azure vault_url, gcp project, conjur policy branch).
	Options map[string]string `json:"options,omitempty"`
	// RetirePreviousAfter says what happens to a key's previous version
	// when it is rotated without a grace period: "keep" (the backend's
	// own version retention applies) or a Go duration after which
	// keyrelay retires it ("0s": at once). Empty: the global
	// keyrelay.rotation.retire_previous_after.
	RetirePreviousAfter string `json:"retire_previous_after,omitempty"`
}

// RetireKeep is the RetirePreviousAfter that keeps previous versions.
const RetireKeep = "keep"

// ParseRetireAfter parses a RetirePreviousAfter: keep is true for "keep",
// otherwise d is the non-negative duration.
func ParseRetireAfter(s string) (d time.Duration, keep bool, err error) {
	if s == RetireKeep {
		return 0, true, nil
	}
	if s == "" || s[0] < '0' || s[0] > '9' || len(s) > 64 {
		return 0, false, fmt.Errorf("%q is neither %q nor a non-negative duration (24h, 0s)", s, RetireKeep)
	}
	d, err = time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, false, fmt.Errorf("%q is neither %q nor a non-negative duration (24h, 0s)", s, RetireKeep)
	}
	return d, false, nil
}
