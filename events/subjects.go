package events

import (
	"fmt"
	"strings"
)

// Subject layout. Every id is validated by ValidateID first, so it is always
// exactly one subject token.
const (
	// EventsPrefix carries key events: keyrelay.events.<team>.<key_id>.<type>
	// where <type> is the event type, itself two tokens (key.created).
	EventsPrefix = "keyrelay.events"
	// SettingsPrefix carries team settings events: keyrelay.settings.<team>.
	// One subject per team, so the team's latest settings message is one
	// GetLastMsgForSubject away.
	SettingsPrefix = "keyrelay.settings"
	// ConfirmationsPrefix carries confirmations:
	// keyrelay.confirmations.<team>.<key_id or "_">.<event_id>.
	ConfirmationsPrefix = "keyrelay.confirmations"
	// DLQPrefix carries dead letters: keyrelay.dlq.<team>.<key_id or "_">.
	DLQPrefix = "keyrelay.dlq"
	// BulkPrefix carries key events of bulk jobs, in their own stream and
	// consumer (the bulk lane): keyrelay.bulk.<team>.<key_id>.<type>.
	BulkPrefix = "keyrelay.bulk"
)

// Lane says which stream and consumer carry an event. The interactive lane
// (the zero Lane) carries what the gateway publishes; the bulk lane carries
// bulk jobs' key events, consumed with their own slots so a running job
// never delays the gateway's events.
type Lane string

const (
	LaneInteractive Lane = ""
	LaneBulk        Lane = "bulk"
)

// String names the lane ("interactive" or "bulk").
func (l Lane) String() string {
	if l == LaneInteractive {
		return "interactive"
	}
	return string(l)
}

// LaneOf tells the lane of an event subject (interactive for anything not
// under BulkPrefix).
func LaneOf(subj string) Lane {
	if strings.HasPrefix(subj, BulkPrefix+".") {
		return LaneBulk
	}
	return LaneInteractive
}

// SubjectIn is where ev is published on lane l. Only key events travel the
// bulk lane; Validate rejects anything else there (see ValidateLane).
func (ev *Event) SubjectIn(l Lane) string {
	if l == LaneBulk {
		return BulkPrefix + "." + ev.TeamID + "." + ev.KeyID + "." + string(ev.Type)
	}
	return ev.Subject()
}

// ValidateLane checks what the bulk lane requires of an event beyond
// Validate: a key event with a publisher-set generation. Events of the two
// lanes are ordered per key by generation alone, since the two streams'
// sequences are different number spaces.
func (ev *Event) ValidateLane(l Lane) error {
	if l != LaneBulk {
		return nil
	}
	if ev.Type.IsSettings() {
		return fmt.Errorf("%w: team settings events travel the interactive lane only", ErrInvalid)
	}
	if ev.Generation == 0 {
		return fmt.Errorf("%w: events on the bulk lane must carry a generation (stream sequences of the two lanes do not compare)", ErrInvalid)
	}
	return nil
}

// NoKey stands in for the key token of team-level subjects. It cannot clash
// with a key id, which must start with a letter or digit.
const NoKey = "_"

// Subject is where ev is published.
func (ev *Event) Subject() string {
	if ev.Type.IsSettings() {
		return SettingsSubject(ev.TeamID)
	}
	return EventsPrefix + "." + ev.TeamID + "." + ev.KeyID + "." + string(ev.Type)
}

// SettingsSubject is the subject of a team's settings events.
func SettingsSubject(team string) string { return SettingsPrefix + "." + team }

// ConfirmationSubject is where the confirmation of one event goes. One
// subject per event id lets the stream enforce one confirmation per event.
func ConfirmationSubject(team, key, eventID string) string {
	if key == "" {
		key = NoKey
	}
	return ConfirmationsPrefix + "." + team + "." + key + "." + eventID
}

// DLQSubject is where dead letters of one key (or team) go.
func DLQSubject(team, key string) string {
	if team == "" {
		team = NoKey
	}
	if key == "" {
		key = NoKey
	}
	return DLQPrefix + "." + team + "." + key
}

// ParseEventSubject splits an event subject (either lane) into team, key
// and type. ok is false when subj is not a well-formed event or settings
// subject.
func ParseEventSubject(subj string) (team, key string, typ Type, ok bool) {
	t := strings.Split(subj, ".")
	switch {
	case len(t) == 3 && t[0]+"."+t[1] == SettingsPrefix:
		return t[2], "", "", true
	case len(t) == 6 && (t[0]+"."+t[1] == EventsPrefix || t[0]+"."+t[1] == BulkPrefix):
		return t[2], t[3], Type(t[4] + "." + t[5]), true
	}
	return "", "", "", false
}
