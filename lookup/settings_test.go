package lookup_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/worker"
)

// laggingTeams is a worker.Teams whose copy of the teams bucket (a KV
// watch) has not caught up yet with a settings change.
type laggingTeams struct {
	mu sync.Mutex
	st map[string]worker.TeamState
}

func (l *laggingTeams) Cached(team string) worker.TeamState {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st, ok := l.st[team]; ok {
		return st
	}
	return worker.TeamState{Team: team}
}

func (l *laggingTeams) set(st worker.TeamState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st[st.Team] = st
}

// TestSettingsConfirmationIsNotUndoneByALaggingSettingsCopy: an instance
// learns a team's settings from the teams bucket's watch, and their
// change from the confirmations stream: two subscriptions, in no set
// order. When the confirmation comes first, the team's entries are
// dropped and the next lookup (a busy gateway asks at once) was loaded
// under the old settings and cached for the whole TTL: a team that turned
// lookups off (access_mode write_only) kept being served its secrets.
func TestSettingsConfirmationIsNotUndoneByALaggingSettingsCopy(t *testing.T) {
	f := newFixture(t, fixtureOptions{cache: lookup.Config{TTL: time.Hour}})
	f.write(events.KeyCreated, "team-a", "k", "sk-team-a")

	teams := &laggingTeams{st: map[string]worker.TeamState{"team-a": {Team: "team-a", Generation: 1}}}
	backend := &lookup.Backend{Config: f.cfg, Registry: f.reg, Ledger: f.ledger, Teams: teams, Logger: f.log}
	svc, err := lookup.New(lookup.Config{TTL: time.Hour}, backend, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	sc := lookup.Scope{Team: "team-a"}
	ctx := context.Background()
	if _, lerr := svc.Lookup(ctx, lookup.HTTP, sc, "k", nil); lerr != nil {
		t.Fatal(lerr)
	}

	// The team turns lookups off; the confirmation arrives before the
	// watch has the new settings, which follow 100 ms later.
	svc.Apply(&events.Confirmation{EventType: events.TeamSettingsUpdated, TeamID: "team-a", Generation: 2, Status: events.StatusStored})
	go func() {
		time.Sleep(100 * time.Millisecond)
		teams.set(worker.TeamState{Team: "team-a", Generation: 2, Settings: &events.TeamSettings{AccessMode: events.AccessWriteOnly}})
	}()
	_, _ = svc.Lookup(ctx, lookup.HTTP, sc, "k", nil) // the gateway asks at once
	time.Sleep(200 * time.Millisecond)                // the watch has caught up
	if body, lerr := svc.Lookup(ctx, lookup.HTTP, sc, "k", nil); lerr == nil || lerr.Status != 403 {
		t.Fatalf("after the team turned lookups off (write_only) and every copy has its settings: %v %s; want 403", lerr, body)
	}
}
