package recovery

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// CopyConfig copies keys from the ledger into a backend other than the one
// in use (a rehearsal, or the first step of a move).
type CopyConfig struct {
	Config
	// To is the target backend (a key_management_system name).
	To string
	// Options override the target's provider options (keyrelay.providers
	// [To] and the team's allowed options).
	Options map[string]string
	// DryRun lists what would be written.
	DryRun bool
	// Adopt lets the copy overwrite unowned secrets in the target.
	Adopt bool
	// Progress, when set, is called after each key (never concurrently).
	Progress func(Progress)
}

// Copy writes the newest value of every live key in scope from the ledger
// into the target backend, under the name the target's settings give it.
// A key whose target secret already holds that value is skipped, and
// writes carry the ledger's event id as the idempotency key: a copy run
// again writes nothing. The ledger is not changed: the keys stay where
// they are in use.
func Copy(ctx context.Context, d Deps, c CopyConfig) (*RestoreReport, error) {
	if c.To == "" {
		return nil, errors.New("copy: name the target backend")
	}
	if !c.All && len(c.Teams) == 0 {
		return nil, errors.New("copy: name teams (--team) or --all")
	}
	d = d.withDefaults()
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	items, skipped, err := scan(ctx, d, c.Config, func(e *worker.LedgerEntry) bool { return e.Status != events.StatusDeleted && e.Sealed != nil })
	if err != nil {
		return nil, fmt.Errorf("copy: read the ledger: %w", err)
	}
	d.noteSkipped(skipped)
	s := newSession(d, c.Config)
	tr := newTracker(len(items), c.Progress)
	out := parallel(len(items), c.Concurrency, nil, func(i int) RestoreRow {
		it := items[i]
		return s.toTarget(ctx, target{to: c.To, options: c.Options, dryRun: c.DryRun, adopt: c.Adopt}, s.d.TeamSettings(it.team), it.team, it.key, keyStateOf(it.e))
	}, func(_ int, r RestoreRow) { tr.add(r.Action) })
	rep := &RestoreReport{Rows: out, LedgerSkipped: skipped}
	t := tally(out)
	rep.Written, rep.Skipped, rep.Failed = t.Written, t.Skipped, t.Failed
	return rep, ctx.Err()
}

// keyStateOf is the state Copy writes of a ledger entry.
func keyStateOf(e *worker.LedgerEntry) *keyState {
	return &keyState{gen: e.Generation, metaGen: e.MetaGeneration, status: e.Status, eventID: e.EventID, sealed: e.Sealed,
		sealedGen: e.SealedGen, alias: e.Alias, metadata: e.Metadata}
}
