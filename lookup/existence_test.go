package lookup_test

import (
	"testing"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/settings"
)

// TestOtherTeamsKeyLooksLikeNoKey: with a naming template without
// {team_id} (key ids are unique across teams), team A asking for team B's
// key id reaches B's secret under that name. The answer must be the one a
// key id nobody has gets: a reason saying "the secret under its name is
// not this key's" told team A that the key exists in another team (an
// existence oracle for guessed virtual-key hashes).
func TestOtherTeamsKeyLooksLikeNoKey(t *testing.T) {
	f := newFixture(t, fixtureOptions{mutate: func(c *settings.Config) { c.Keyrelay.Naming.Template = "{prefix}{key_id}" }})
	f.write(events.KeyCreated, "team-b", "kb", "sk-team-b")
	code, theirs := f.get(tokenA, "/v1/secrets/kb")
	if code != 404 {
		t.Fatalf("team A reading team B's key: %d %v", code, theirs)
	}
	code, none := f.get(tokenA, "/v1/secrets/nobodys-key")
	if code != 404 {
		t.Fatalf("%d %v", code, none)
	}
	want := `team has no secret "kb"`
	if theirs["reason"] != want || none["reason"] != `team has no secret "nobodys-key"` {
		t.Fatalf("another team's key and no key must answer alike: %q vs %q", theirs["reason"], none["reason"])
	}
}
