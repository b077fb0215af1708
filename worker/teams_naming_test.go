package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// TestTeamSettingsBadNamingRejected: a team.settings.updated whose naming
// can never form a secret name (a template without {key_id} or {alias},
// an unknown placeholder, an absolute prefix) passes the event schema.
// Accepted, it would make every later key event of the team rejected as
// "secret name: ...": valid keys lost because of one bad settings event.
// The settings event is the bad input: it must be rejected with a reason
// naming the field, and the team's keys keep being stored under the
// settings it had.
func TestTeamSettingsBadNamingRejected(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	const team = "team-n"
	bad := []struct {
		settings events.TeamSettings
		field    string
	}{
		{events.TeamSettings{NameTemplate: "{prefix}{team_id}"}, "name_template"},
		{events.TeamSettings{NameTemplate: "{prefix}{user}/{key_id}"}, "name_template"},
		{events.TeamSettings{Prefix: ptrTo("/abs/")}, "prefix"},
		{events.TeamSettings{Prefix: ptrTo("a//b/")}, "prefix"},
	}
	for i, tc := range bad {
		s := tc.settings
		b.publish(b.settingsEvent(team, uint64(i+1), &s))
	}
	b.publish(b.keyEvent(events.KeyCreated, team, "key-1", 1, "v1"))
	confs := b.confirmations(len(bad)+1, 30*time.Second)
	byID := map[string]*events.Confirmation{}
	for _, c := range confs {
		byID[c.EventID] = c
	}
	for i, tc := range bad {
		c := byID["s-"+team+"-"+itoa(uint64(i+1))]
		if c == nil {
			t.Fatalf("no confirmation for settings event %d", i+1)
		}
		t.Logf("settings event %d: %s %q", i+1, c.Status, c.Reason)
		if c.Status != events.StatusRejected || !strings.Contains(c.Reason, tc.field) {
			t.Errorf("settings event %d (%+v): confirmed %s %q; want rejected naming %s", i+1, tc.settings, c.Status, c.Reason, tc.field)
		}
	}
	var key *events.Confirmation
	for _, c := range confs {
		if c.KeyID == "key-1" {
			key = c
		}
	}
	if key == nil || key.Status != events.StatusStored {
		t.Fatalf("key event after bad team settings: %+v; want stored under the team's previous settings", key)
	}
	if s, err := b.stores["local"].Get(b.ctx, "litellm/"+team+"/key-1", ""); err != nil || string(s.Value) != "v1" {
		t.Fatalf("key not stored under the global naming: %v", err)
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestTeamSettingsUnknownBackendRejected: a team.settings.updated naming a
// backend this build does not have (a typo of "hashicorp_vault") passes
// the event schema. Accepted and confirmed stored, it would make every
// later key event of the team fail to open its provider and be
// dead-lettered. It is rejected with a reason naming the field, and the
// team's keys keep being stored under the settings it had.
func TestTeamSettingsUnknownBackendRejected(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	const team = "team-u"
	b.publish(b.settingsEvent(team, 1, &events.TeamSettings{Backend: "hashicorp_vaultt"}))
	b.publish(b.keyEvent(events.KeyCreated, team, "key-1", 1, "v1"))
	confs := b.confirmations(2, 30*time.Second)
	var set, key *events.Confirmation
	for _, c := range confs {
		switch {
		case c.EventID == "s-"+team+"-1":
			set = c
		case c.KeyID == "key-1":
			key = c
		}
	}
	if set == nil || set.Status != events.StatusRejected || !strings.Contains(set.Reason, "data.settings.backend") {
		t.Fatalf("settings naming an unknown backend: %+v; want rejected naming data.settings.backend", set)
	}
	if key == nil || key.Status != events.StatusStored {
		t.Fatalf("key event after the rejected settings: %+v; want stored under the team's previous settings", key)
	}
	if s, err := b.stores["local"].Get(b.ctx, "litellm/"+team+"/key-1", ""); err != nil || string(s.Value) != "v1" {
		t.Fatalf("key not stored under the global naming: %v", err)
	}
}
