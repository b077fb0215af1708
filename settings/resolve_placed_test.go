package settings

import (
	"testing"

	"github.com/keyrelay/keyrelay/events"
)

// ResolvePlaced reaches a secret where it was written: the recorded team
// options replace the team's current ones (none recorded: none, not the
// current ones), over the same global options, and the team's other
// settings are its current ones.
func TestResolvePlaced(t *testing.T) {
	c := Default()
	c.Keyrelay.Providers = map[string]map[string]string{"hashicorp_vault": {"namespace": "admin", "mount": "secret"}}
	team := &events.TeamSettings{Backend: "local", Prefix: ptr("teams/"), Options: map[string]string{"namespace": "team-b", "mount": "kv-b"}}
	for name, tc := range map[string]struct {
		recorded map[string]string
		want     map[string]string
	}{
		"recorded options":       {map[string]string{"namespace": "team-a"}, map[string]string{"namespace": "team-a", "mount": "secret"}},
		"recorded, none set":     {nil, map[string]string{"namespace": "admin", "mount": "secret"}},
		"recorded, empty (JSON)": {map[string]string{}, map[string]string{"namespace": "admin", "mount": "secret"}},
	} {
		t.Run(name, func(t *testing.T) {
			r := c.ResolvePlaced(team, "hashicorp_vault", tc.recorded)
			opts, _ := r.ProviderOptions(func(string) bool { return true })
			if r.Backend != "hashicorp_vault" || r.Prefix != "teams/" || len(opts) != len(tc.want) {
				t.Fatalf("resolved %s prefix %q options %v; want hashicorp_vault, teams/, %v", r.Backend, r.Prefix, opts, tc.want)
			}
			for k, v := range tc.want {
				if opts[k] != v {
					t.Fatalf("options %v; want %v", opts, tc.want)
				}
			}
		})
	}
	if team.Backend != "local" || team.Options["namespace"] != "team-b" {
		t.Fatalf("the team's settings were changed: %+v", team)
	}
}
