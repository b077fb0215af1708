package worker

import (
	"context"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
)

// Team settings are resolved once per settings value, and the provider
// opened once per resolved value; new settings (a new value, as Teams
// stores them) are resolved afresh, with the options the team may set.
func TestResolvedPerSettingsValue(t *testing.T) {
	var opened atomic.Int32
	reg := providers.NewRegistry()
	reg.Register("local", func(ctx context.Context, c providers.Config) (providers.Provider, error) {
		opened.Add(1)
		c.Options["scribbled"] = "by the factory" // a factory may keep or change what it gets
		return local.New(local.Config{})
	})
	reg.AllowTeamOptions("local", "path")
	cfg := settings.Default()
	cfg.KeyManagementSystem = "local"
	w := &Worker{d: Deps{Settings: cfg, Registry: reg}, log: zap.NewNop(), resolved: newResolvedCache()}

	a := &events.TeamSettings{Backend: "local", Tags: map[string]string{"env": "a"}, Options: map[string]string{"path": "/a", "region": "x"}}
	tb := w.resolve(a)
	if w.resolve(a) != tb {
		t.Fatal("the same settings value was resolved twice")
	}
	if tb.res.Backend != "local" || tb.res.Tags["env"] != "a" || tb.opts["path"] != "/a" {
		t.Fatalf("resolved %+v, options %v", tb.res, tb.opts)
	}
	if _, ok := tb.opts["region"]; ok || len(tb.refused) != 1 || tb.refused[0] != "region" {
		t.Fatalf("an option the team may not set was kept: options %v, refused %v", tb.opts, tb.refused)
	}
	for range 3 {
		if _, err := w.openProvider(context.Background(), w.resolve(a)); err != nil {
			t.Fatal(err)
		}
	}
	if n := opened.Load(); n != 1 {
		t.Fatalf("provider opened %d times for one settings value, want 1", n)
	}
	if _, ok := tb.opts["scribbled"]; ok {
		t.Fatal("the factory's change reached the shared options")
	}

	// New settings are a new value: resolved again, the change seen.
	b := &events.TeamSettings{Backend: "local", Tags: map[string]string{"env": "b"}, Options: map[string]string{"path": "/b"}}
	tb2 := w.resolve(b)
	if tb2 == tb || tb2.res.Tags["env"] != "b" || tb2.opts["path"] != "/b" || tb2.guardKey == tb.guardKey {
		t.Fatalf("changed settings not resolved afresh: %+v", tb2.res)
	}
	// No settings: the global ones.
	if g := w.resolve(nil); g.res.Backend != "local" || len(g.res.Tags) != 0 {
		t.Fatalf("global settings resolved as %+v", g.res)
	}
}
