package events

import "strings"

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
)

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

// ParseEventSubject splits an event subject into team, key and type. ok is
// false when subj is not a well-formed event or settings subject.
func ParseEventSubject(subj string) (team, key string, typ Type, ok bool) {
	t := strings.Split(subj, ".")
	switch {
	case len(t) == 3 && t[0]+"."+t[1] == SettingsPrefix:
		return t[2], "", "", true
	case len(t) == 6 && t[0]+"."+t[1] == EventsPrefix:
		return t[2], t[3], Type(t[4] + "." + t[5]), true
	}
	return "", "", "", false
}
