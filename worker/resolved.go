package worker

import (
	"context"
	"maps"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
)

// teamBackend is a team's settings resolved against the global ones, with
// what every key event of the team needs from them: the provider options
// its team may set, the key of its backend guard and, once opened, its
// provider. It is worked out once per settings value, not per event:
// resolving, filtering the options and finding the provider by a hash of
// them cost an event as much as a ledger write's encoding.
//
// Everything in it is read-only once built: res's maps are shared by every
// event of these settings (nothing on an event's path writes them;
// SecretTags and ProviderOptions copy).
type teamBackend struct {
	res     settings.Resolved
	opts    map[string]string
	refused []string
	// place is what a secret written through it records (LedgerEntry.
	// Placement): the team options the backend accepted.
	place    *Placement
	guardKey string
	provider atomic.Pointer[providerRef]
}

type providerRef struct{ p providers.Provider }

// resolvedCacheSize bounds the settings values kept resolved: one per team
// whose events were handled lately (a team's older values are dropped as
// they age out).
const resolvedCacheSize = 4096

func newResolvedCache() *lru.Cache[*events.TeamSettings, *teamBackend] {
	c, err := lru.New[*events.TeamSettings, *teamBackend](resolvedCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return c
}

// resolve returns team's settings resolved (nil: the global settings). The
// key is the settings value itself: Teams replaces a team's *TeamSettings
// when its settings change and never writes one it has handed out, so a
// value resolved once stays right for as long as an event can hold it.
func (w *Worker) resolve(team *events.TeamSettings) *teamBackend {
	if tb, ok := w.resolved.Get(team); ok {
		return tb
	}
	tb := w.resolveBackend(w.d.Settings.Resolve(team))
	w.resolved.Add(team, tb)
	return tb
}

// resolveBackend works out what res's events need (uncached: for a
// backend other than the team's own).
func (w *Worker) resolveBackend(res settings.Resolved) *teamBackend {
	allowed := func(key string) bool { return w.d.Registry.TeamOptionAllowed(res.Backend, key) }
	opts, refused := res.ProviderOptions(allowed)
	place := PlacementFor(res, w.d.Registry.TeamOptionAllowed)
	return &teamBackend{res: res, opts: opts, refused: refused, place: place, guardKey: guardKey(res.Backend, opts)}
}

// resolvePlaced is resolveBackend for a secret written to backend at pl
// (nil: not recorded, the team's current options).
func (w *Worker) resolvePlaced(team *events.TeamSettings, backend string, pl *Placement) *teamBackend {
	return w.resolveBackend(pl.Resolve(w.d.Settings, team, backend))
}

// openProvider returns tb's provider, opening it through the registry the
// first time (the registry keeps one instance per backend and options, so
// the instance kept here is the one it would return).
func (w *Worker) openProvider(ctx context.Context, tb *teamBackend) (providers.Provider, error) {
	if r := tb.provider.Load(); r != nil {
		return r.p, nil
	}
	if len(tb.refused) > 0 {
		w.log.Warn("team provider options ignored: a team may not set them", zap.String("backend", tb.res.Backend), zap.Strings("options", tb.refused))
	}
	// The registry's factory gets a copy: it may keep what it is given.
	p, err := w.d.Registry.Open(ctx, tb.res.Backend, providers.Config{Options: maps.Clone(tb.opts), Getenv: w.d.Getenv, Logger: w.log})
	if err != nil {
		return nil, err
	}
	tb.provider.Store(&providerRef{p: p})
	return p, nil
}
