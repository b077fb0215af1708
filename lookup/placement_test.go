package lookup_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
)

// TestLookupReadsWhereTheKeyWasWritten: a key written while its team's
// options put it in one namespace (Vault's namespace or mount, Google's
// project: a backend keyed by a team option) is read there after the team
// changed its namespace, until it is written again. The lookup used to
// resolve the backend with the team's current options and answer that
// the team has no such key.
func TestLookupReadsWhereTheKeyWasWritten(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	// The fixture's backend (the worker knows its name), with one store
	// per namespace: the instance it opened without one stays cached.
	const backend = "local"
	var mu sync.Mutex
	stores := map[string]*local.Provider{}
	f.reg.Register(backend, func(_ context.Context, cfg providers.Config) (providers.Provider, error) {
		mu.Lock()
		defer mu.Unlock()
		ns := cfg.Options["namespace"]
		if stores[ns] == nil {
			s, err := local.New(local.Config{})
			if err != nil {
				return nil, err
			}
			stores[ns] = s
		}
		return stores[ns], nil
	})
	f.reg.AllowTeamOptions(backend, "namespace")
	setNamespace := func(gen uint64, ns string) {
		t.Helper()
		s := events.TeamSettings{Backend: backend, Options: map[string]string{"namespace": ns}}
		ev := &events.Event{SpecVersion: events.SpecVersion, ID: "s-team-a-" + ns, Type: events.TeamSettingsUpdated, Time: time.Now().UTC(),
			TeamID: "team-a", Generation: gen}
		ev.Data, _ = json.Marshal(events.SettingsData{Settings: s})
		if _, err := f.pub.Publish(f.ctx, ev); err != nil {
			t.Fatal(err)
		}
		if c := f.confirmation("team-a", "", ev.ID); c.Status != events.StatusStored {
			t.Fatalf("settings: %+v", c)
		}
		waitFor(t, 5*time.Second, "the team's settings", func() bool {
			st := f.backend.Teams.Cached("team-a")
			return st.Generation == gen
		})
	}

	setNamespace(1, "ns-a")
	if c := f.write(events.KeyCreated, "team-a", "k", "sk-in-a"); c.Status != events.StatusStored || c.Provider != backend {
		t.Fatalf("write: %+v", c)
	}
	setNamespace(2, "ns-b")
	sec, err := f.backend.Load(f.ctx, lookup.Scope{Team: "team-a"}, "k")
	if err != nil {
		t.Fatalf("lookup of a key written in ns-a after the team moved to ns-b: %v", err)
	}
	if string(sec.Value) != "sk-in-a" || sec.Source != backend {
		t.Fatalf("lookup read %q from %s; want the value written in ns-a", sec.Value, sec.Source)
	}
}
