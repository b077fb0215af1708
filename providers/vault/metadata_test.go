package vault

import (
	"reflect"
	"strings"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
)

func testConfig() Config {
	c := Config{Token: "t"}
	c.setDefaults()
	return c
}

func TestVaultDesiredTags(t *testing.T) {
	c := testConfig()
	owner := providers.Owner{TeamID: "team-a", KeyID: "key-a"}
	owned := map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a",
		"env": "test", DescriptionKey: "old desc", eventKey(3): "ev-3"}
	tests := map[string]struct {
		old  map[string]string
		upd  tagUpdate
		want map[string]string
	}{
		"new secret": {
			upd:  tagUpdate{owner: owner, extra: map[string]string{"env": "prod"}, description: "d"},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a", "env": "prod", DescriptionKey: "d"},
		},
		"request cannot forge ownership or events": {
			upd: tagUpdate{owner: owner, extra: map[string]string{providers.ManagedByTag: "intruder", providers.TeamTag: "z",
				eventKey(9): "x", DescriptionKey: "x", providers.EventTag: "x", "ok": "1"}},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a", "ok": "1"},
		},
		"empty values are dropped": {
			upd:  tagUpdate{owner: owner, extra: map[string]string{"empty": "", "x": "1"}},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a", "x": "1"},
		},
		"keep extras and description": {
			old:  owned,
			upd:  tagUpdate{owner: owner, keepExtra: true},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a", "env": "test", DescriptionKey: "old desc"},
		},
		"owner filled from the stored one": {
			old:  owned,
			upd:  tagUpdate{extra: map[string]string{}},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a", DescriptionKey: "old desc"},
		},
		"adopt moves ownership": {
			old:  owned,
			upd:  tagUpdate{owner: providers.Owner{TeamID: "team-b"}, extra: map[string]string{}, adopt: true},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-b", DescriptionKey: "old desc"},
		},
		"values sanitized": {
			upd: tagUpdate{owner: owner, extra: map[string]string{"alias": "two\nlines", "long": strings.Repeat("v", 600), "blank": "\t"}},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a",
				"alias": "two lines", "long": strings.Repeat("v", 512)},
		},
		"description sanitized": {
			upd:  tagUpdate{owner: owner, description: "line1\nline2\t" + strings.Repeat("é", 300)},
			want: map[string]string{providers.ManagedByTag: "keyrelay", providers.TeamTag: "team-a", providers.KeyTag: "key-a", DescriptionKey: "line1 line2 " + strings.Repeat("é", 250)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := c.desiredTags(tc.old, tc.upd)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestVaultDesiredTagsRejects(t *testing.T) {
	c := testConfig()
	many := map[string]string{}
	for i := 0; i <= c.MaxTags(); i++ {
		many["t"+strings.Repeat("x", i)] = "v"
	}
	for name, extra := range map[string]map[string]string{
		"long name":        {strings.Repeat("k", 129): "v"},
		"unprintable name": {"a\tb": "v"},
		"empty name":       {"": "v"},
		"too many":         many,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := c.desiredTags(nil, tagUpdate{owner: providers.Owner{TeamID: "t", KeyID: "k"}, extra: extra}); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestVaultMetadataPatch(t *testing.T) {
	c := testConfig()
	c.EventHistory = 3
	old := map[string]string{providers.ManagedByTag: "keyrelay", "env": "test", "gone": "1",
		eventKey(1): "e1", eventKey(2): "e2", eventKey(3): "e3", eventKey(4): "e4"}
	want := map[string]string{providers.ManagedByTag: "keyrelay", "env": "prod", "new": "1"}
	got := c.metadataPatch(old, want, 5, "e5")
	exp := map[string]any{"env": "prod", "new": "1", "gone": nil, eventKey(5): "e5", eventKey(1): nil, eventKey(2): nil}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("got  %v\nwant %v", got, exp)
	}
	// No idempotency key: recorded as "-", read back as none.
	got = c.metadataPatch(nil, map[string]string{}, 1, "")
	if got[eventKey(1)] != noEventID {
		t.Errorf("keyless write recorded as %v", got[eventKey(1)])
	}
	if id, ok := eventOf(map[string]string{eventKey(1): noEventID}, 1); id != "" || !ok {
		t.Errorf("eventOf keyless = %q, %v", id, ok)
	}
	// Tags only (UpdateTags): event keys untouched.
	got = c.metadataPatch(old, old, 0, "")
	if len(got) != 0 {
		t.Errorf("unchanged tags gave patch %v", got)
	}
}

func TestVaultTagsView(t *testing.T) {
	custom := map[string]string{providers.ManagedByTag: "keyrelay", "env": "x", DescriptionKey: "d", eventKey(1): "e1", eventKey(2): noEventID}
	if got, want := tagsView(custom, nil, 1), map[string]string{providers.ManagedByTag: "keyrelay", "env": "x", providers.EventTag: "e1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("version 1: %v", got)
	}
	if got := tagsView(custom, nil, 2); got[providers.EventTag] != "" {
		t.Errorf("keyless version shows event %q", got[providers.EventTag])
	}
	// The event id in the version's data wins over custom_metadata.
	if got := tagsView(custom, map[string]any{"key": "v", DataEventKey: "e3"}, 1); got[providers.EventTag] != "e3" {
		t.Errorf("event from the data: %q", got[providers.EventTag])
	}
	if got := tagsView(custom, map[string]any{"key": "v", DataEventKey: noEventID}, 1); got[providers.EventTag] != "" {
		t.Errorf("keyless version (data) shows event %q", got[providers.EventTag])
	}
}

func TestVaultParseEventKey(t *testing.T) {
	for k, want := range map[string]uint64{"keyrelay-event-1": 1, "keyrelay-event-42": 42, "keyrelay-event-0": 0, "keyrelay-event-x": 0, "keyrelay-event": 0, "env": 0} {
		v, ok := parseEventKey(k)
		if v != want || ok != (want > 0) {
			t.Errorf("parseEventKey(%q) = %d, %v", k, v, ok)
		}
	}
}
