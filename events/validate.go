package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Validation of events: the error type, and the envelope and payload
// checks of Event.Validate. The checks of ids, team settings and the JSON
// shape are in validate_ids.go, validate_settings.go and validate_shape.go;
// Decode is in validate_decode.go.

// MaxGracePeriodSeconds bounds data.grace_period_seconds of key.rotated:
// 10 years (315360000 s, 365-day years). A larger value is refused, not
// clamped: a gateway sending MaxInt64 to mean "forever" would otherwise
// overflow a time.Duration (anything from 9223372037 s on) and have the
// previous version retired at once. Keeping it forever is
// retire_previous_after "keep", not a grace period.
const MaxGracePeriodSeconds = 10 * 365 * 24 * 60 * 60

// ValidationError says which field of an event is wrong and why. It never
// contains a secret value.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid event: " + e.Reason
	}
	return fmt.Sprintf("invalid event: %s: %s", e.Field, e.Reason)
}

// ErrInvalid matches every *ValidationError with errors.Is.
var ErrInvalid = errors.New("invalid event")

// Is makes errors.Is(err, ErrInvalid) true for validation errors.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// under names err's field as a member of field; the joined name is built
// only for an error.
func under(field string, err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) {
		ve.Field = joinField(field, ve.Field)
	}
	return err
}

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks the envelope and the type-specific payload.
func (ev *Event) Validate() error { return ev.validate(false) }

// validate is Validate; trusted says Data is part of a document Decode has
// already found to be valid JSON.
func (ev *Event) validate(trusted bool) error {
	if ev.SpecVersion == "" {
		return invalid("spec_version", "is required")
	}
	if ev.SpecVersion != SpecVersion {
		return invalid("spec_version", "is not supported (this build reads %q)", SpecVersion)
	}
	if err := ValidateID("id", ev.ID); err != nil {
		return err
	}
	if ev.Type == "" {
		return invalid("type", "is required")
	}
	if !ev.Type.Known() {
		return invalid("type", "is not a known event type")
	}
	if ev.Time.IsZero() {
		return invalid("time", "is required")
	}
	if err := ValidateID("team_id", ev.TeamID); err != nil {
		return err
	}
	if ev.Type.IsKey() {
		if err := ValidateID("key_id", ev.KeyID); err != nil {
			return err
		}
	} else if ev.KeyID != "" {
		return invalid("key_id", "must be absent for %s", ev.Type)
	}
	if err := validateText("key_alias", ev.KeyAlias, MaxAliasLen); err != nil {
		return err
	}
	if ev.JobID != "" {
		if !ev.Type.IsKey() {
			return invalid("job_id", "must be absent for %s", ev.Type)
		}
		if err := ValidateID("job_id", ev.JobID); err != nil {
			return err
		}
	}
	return ev.validateData(trusted)
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s + "..."
	}
	return s
}

func strictUnmarshal(field string, raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &ValidationError{Field: field, Reason: sanitizeJSONError(err)}
	}
	return nil
}

// isEmptyData reports whether raw is absent: empty, blank or JSON null.
func isEmptyData(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func (ev *Event) validateData(trusted bool) error {
	empty := isEmptyData(ev.Data)
	data := bytes.TrimSpace(ev.Data)
	switch ev.Type {
	case KeyCreated, KeyRotated:
		if empty {
			return invalid("data", "is required for %s", ev.Type)
		}
		shape := keyCreatedDataShape
		if ev.Type == KeyRotated {
			shape = keyRotatedDataShape
		}
		var members []jsonMember
		if trusted {
			var ok bool
			if members, ok = scanMembers(data); !ok {
				return invalid("data", "must be a JSON object")
			}
		} else {
			var err error
			if members, err = objectMembers("data", data); err != nil {
				return err
			}
		}
		if err := checkMembers("data", members, shape); err != nil {
			return err
		}
		var d KeyData
		if err := decodeKeyData(members, &d); err != nil {
			return err
		}
		if d.Value == nil {
			return invalid("data.value", "is required for %s", ev.Type)
		}
		if err := d.Value.validate("data.value"); err != nil {
			return err
		}
		if d.GracePeriodSeconds < 0 {
			return invalid("data.grace_period_seconds", "must not be negative")
		}
		if d.GracePeriodSeconds > MaxGracePeriodSeconds {
			return invalid("data.grace_period_seconds", "is %d, more than the maximum %d (10 years); to keep the previous version, rotate without a grace period and let the team's retire_previous_after (default keep) apply",
				d.GracePeriodSeconds, MaxGracePeriodSeconds)
		}
		if ev.Type == KeyCreated && d.GracePeriodSeconds != 0 {
			return invalid("data.grace_period_seconds", "is only valid for key.rotated")
		}
		if err := validateMetadata("data.metadata", d.Metadata); err != nil {
			return err
		}
		ev.remember(&d)
		return nil
	case KeyUpdated:
		if empty {
			return nil
		}
		if err := checkObject("data", data, keyUpdatedDataShape); err != nil {
			return err
		}
		var d UpdateData
		if err := strictUnmarshal("data", data, &d); err != nil {
			return err
		}
		if err := validateText("data.previous_alias", d.PreviousAlias, MaxAliasLen); err != nil {
			return err
		}
		if err := validateMetadata("data.metadata", d.Metadata); err != nil {
			return err
		}
		ev.remember(&d)
		return nil
	case KeyDeleted, TeamSettingsDeleted:
		if empty {
			return nil
		}
		return checkObject("data", data, &objectShape{closed: "must be empty for " + string(ev.Type)})
	case TeamSettingsUpdated:
		if empty {
			return invalid("data", "is required for %s", ev.Type)
		}
		if err := checkObject("data", data, settingsDataShape); err != nil {
			return err
		}
		var d SettingsData
		if err := strictUnmarshal("data", data, &d); err != nil {
			return err
		}
		if err := d.Settings.Validate("data.settings"); err != nil {
			return err
		}
		ev.remember(&d)
		return nil
	}
	return nil
}
