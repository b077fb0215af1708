package worker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// TestTeamMoveBackAndForthRequestsTheLastBackend: a team's settings move it
// to another backend and straight back (two settings events published back
// to back, handled at once by one worker's slots). Whatever order their
// handlers run in, the last move requested for the team must be to the
// backend its settings name in the end: otherwise the keys written in
// between stay on the other backend (or a move there is still pending),
// while the team's settings, lookups and later writes use the first.
func TestTeamMoveBackAndForthRequestsTheLastBackend(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{backends: []string{"hashicorp_vault"}})
	_, moves := moveWorker(b, nil)
	const teams = 40
	for i := 0; i < teams; i++ {
		team := fmt.Sprintf("team-%d", i)
		b.publish(b.settingsEvent(team, 1, &events.TeamSettings{Backend: "hashicorp_vault"}),
			b.settingsEvent(team, 2, &events.TeamSettings{Backend: "local"}))
	}
	b.confirmations(2*teams, time.Minute)
	time.Sleep(200 * time.Millisecond) // requests made after the confirmations' publish
	last := map[string]string{}
	for _, m := range moves() {
		last[m[0]] = m[2]
	}
	wrong := 0
	for i := 0; i < teams; i++ {
		team := fmt.Sprintf("team-%d", i)
		if to, ok := last[team]; ok && to != "local" {
			wrong++
			t.Logf("%s: last move requested to %s, but its settings name local", team, to)
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d teams: the last move requested is not to the team's backend (moves: %v)", wrong, teams, moves())
	}
}
