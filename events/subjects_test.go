package events

import "testing"

func TestSubjects(t *testing.T) {
	for _, typ := range Types {
		t.Run(string(typ), func(t *testing.T) {
			ev := &Event{Type: typ, TeamID: "team-a"}
			if typ.IsKey() {
				ev.KeyID = "key-1"
			}
			subj := ev.Subject()
			team, key, gotType, ok := ParseEventSubject(subj)
			if !ok || team != "team-a" || key != ev.KeyID {
				t.Fatalf("ParseEventSubject(%q) = %q %q %q %v", subj, team, key, gotType, ok)
			}
			if typ.IsKey() {
				if want := "keyrelay.events.team-a.key-1." + string(typ); subj != want {
					t.Errorf("Subject = %q, want %q", subj, want)
				}
				if gotType != typ {
					t.Errorf("type %q", gotType)
				}
			} else if subj != "keyrelay.settings.team-a" || gotType != "" {
				t.Errorf("Subject = %q (type %q)", subj, gotType)
			}
		})
	}
	tests := map[string]struct{ got, want string }{
		"confirmation":             {ConfirmationSubject("team-a", "key-1", "evt-1"), "keyrelay.confirmations.team-a.key-1.evt-1"},
		"confirmation of settings": {ConfirmationSubject("team-a", "", "evt-1"), "keyrelay.confirmations.team-a._.evt-1"},
		"dlq":                      {DLQSubject("team-a", "key-1"), "keyrelay.dlq.team-a.key-1"},
		"dlq without key":          {DLQSubject("team-a", ""), "keyrelay.dlq.team-a._"},
		"dlq without team":         {DLQSubject("", ""), "keyrelay.dlq._._"},
		"settings":                 {SettingsSubject("team-a"), "keyrelay.settings.team-a"},
	}
	for name, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: %q, want %q", name, tc.got, tc.want)
		}
	}
	for _, subj := range []string{"", "keyrelay", "keyrelay.events.t.k", "keyrelay.events.t.k.key", "keyrelay.settings",
		"keyrelay.settings.t.x", "other.events.t.k.key.created", "keyrelay.events.t.k.key.created.extra"} {
		if _, _, _, ok := ParseEventSubject(subj); ok {
			t.Errorf("ParseEventSubject(%q) ok", subj)
		}
	}
	if err := ValidateID("key_id", NoKey); err == nil {
		t.Error("NoKey is a valid key id: it would clash with team-level subjects")
	}
}
