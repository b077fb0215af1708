package recovery

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
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
	items, err := scan(ctx, d, c.Config, func(e *worker.LedgerEntry) bool { return e.Status != events.StatusDeleted && e.Sealed != nil })
	if err != nil {
		return nil, fmt.Errorf("copy: read the ledger: %w", err)
	}
	s := &session{d: d, c: c.Config, limiters: map[string]*rate.Limiter{}, providers: map[string]providers.Provider{}}
	out := make([]RestoreRow, len(items))
	sem := make(chan struct{}, c.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	prog := Progress{Total: len(items)}
	for i, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = s.copyOne(ctx, c, it.team, it.key, it.e)
			mu.Lock()
			defer mu.Unlock()
			prog.Done++
			count(&prog, out[i].Action)
			if c.Progress != nil {
				c.Progress(prog)
			}
		}()
	}
	wg.Wait()
	rep := &RestoreReport{Rows: out}
	for _, r := range out {
		switch r.Action {
		case ActionWritten:
			rep.Written++
		case ActionSkipped, "planned":
			rep.Skipped++
		default:
			rep.Failed++
		}
	}
	return rep, ctx.Err()
}

// target opens the copy's target backend for team.
func (s *session) target(ctx context.Context, c CopyConfig, team string) (providers.Provider, string, func(string, string, string) (string, error), error) {
	r := s.d.Settings.ResolveBackend(s.d.TeamSettings(team), c.To)
	opts, _ := r.ProviderOptions(func(key string) bool { return s.d.Registry.TeamOptionAllowed(r.Backend, key) })
	for k, v := range c.Options {
		opts[k] = v
	}
	p, err := s.d.Registry.Open(ctx, r.Backend, providers.Config{Options: opts, Getenv: s.d.Settings.Env, Logger: s.d.Logger})
	return p, r.Description, r.SecretName, err
}

func (s *session) copyOne(ctx context.Context, c CopyConfig, team, key string, e *worker.LedgerEntry) RestoreRow {
	row := RestoreRow{Row: Row{Team: team, Key: key, Backend: c.To, Generation: e.Generation, LedgerStatus: e.Status}}
	failed := func(what string, err error) RestoreRow {
		row.Action, row.Why = ActionFailed, what+": "+sanitize(err)
		return row
	}
	p, desc, nameOf, err := s.target(ctx, c, team)
	if err != nil {
		return failed("open the target", err)
	}
	name, err := nameOf(team, key, e.Alias)
	if err != nil {
		return failed("secret name", err)
	}
	row.SecretRef = name
	value, err := s.d.Opener.Open(ctx, e.Sealed, events.Binding{TeamID: team, KeyID: key, Generation: e.SealedGen})
	if err != nil {
		return failed("open the ledger's sealed value", err)
	}
	defer clear(value)
	owner := providers.Owner{TeamID: team, KeyID: key}
	cur, err := s.get(ctx, p, c.To, name)
	switch {
	case errors.Is(err, providers.ErrNotFound):
		row.Status = StatusMissing
	case err != nil:
		return failed("read the target", err)
	case p.Capabilities().Tags && !providers.IsOwnedBy(cur.Tags, owner) && !c.Adopt:
		row.Status, row.Action, row.Why = StatusUnowned, ActionSkipped, ownerOf(cur.Tags)+"; --adopt to overwrite"
		return row
	default:
		want, got := sha256.Sum256(value), sha256.Sum256(cur.Value)
		clear(cur.Value)
		if subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
			row.Status, row.Action, row.Why = StatusOK, ActionSkipped, "the target already holds the newest value"
			return row
		}
		row.Status = StatusStale
	}
	if c.DryRun {
		row.Action = "planned"
		return row
	}
	res := s.d.Settings.ResolveBackend(s.d.TeamSettings(team), c.To)
	if l := s.limiter(c.To); l != nil {
		if err := l.Wait(ctx); err != nil {
			return failed("rate limit", err)
		}
	}
	if _, err := s.put(ctx, p, c.To, providers.PutRequest{Name: name, Value: value, IdempotencyKey: e.EventID, Owner: owner,
		Description: desc, Tags: worker.SecretTags(res.Tags, e.Metadata, e.Alias), Adopt: c.Adopt}); err != nil {
		return failed("write", err)
	}
	row.Action = ActionWritten
	return row
}
