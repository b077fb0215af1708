package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// Restore outcomes of one row.
const (
	ActionWritten = "written"
	ActionDeleted = "deleted"
	ActionSkipped = "skipped"
	ActionFailed  = "failed"
)

// RestoreConfig scopes and paces a restore from the ledger.
type RestoreConfig struct {
	Config
	// DryRun returns the plan (the drift rows a restore would fix) and
	// writes nothing.
	DryRun bool
	// Adopt lets a restore overwrite an unowned secret under a key's name.
	// Default: unowned rows are reported and left alone.
	Adopt bool
	// Lease bounds how long a restore holds one key's ledger claim; live
	// workers wait for it. Default: 30s.
	Lease time.Duration
	// CallTimeout bounds one provider call. Default: 15s.
	CallTimeout time.Duration
	// Progress, when set, is called after each key (never concurrently).
	Progress func(Progress)
}

// Progress counts a restore's keys so far.
type Progress struct {
	Done, Total                       int
	Written, Deleted, Skipped, Failed int
	Elapsed                           time.Duration
}

// RestoreRow is what the restore did with one drift row.
type RestoreRow struct {
	Row
	Action string `json:"action"`
	// Why explains a skip or a failure; never a value.
	Why string `json:"why,omitempty"`
}

// RestoreReport is the result of Restore.
type RestoreReport struct {
	Drift *Report      `json:"drift"`
	Rows  []RestoreRow `json:"rows"`
	// Counts by action.
	Written, Deleted, Skipped, Failed int
}

// Fixable reports whether a restore acts on a row of status s.
func fixable(s Status, adopt bool) bool {
	switch s {
	case StatusMissing, StatusStale, StatusResurrected:
		return true
	case StatusUnowned:
		return adopt
	}
	return false
}

// Restore returns every key in scope to its newest ledger state in the
// backend the ledger names, touching only what the drift report says is
// wrong: a missing or stale value is written again, a resurrected secret
// deleted. It is safe next to live workers: each key is claimed in the
// ledger (compare-and-set, like a worker) before its write, and a key
// whose ledger entry changed since the drift report (a newer generation
// applied live) is left to the workers. Writes carry the ledger's event id
// as the idempotency key, so a restore run again, or killed and run again,
// writes no extra version; a second run finds nothing to do.
func Restore(ctx context.Context, d Deps, c RestoreConfig) (*RestoreReport, error) {
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.CallTimeout <= 0 || c.CallTimeout >= c.Lease {
		c.CallTimeout = min(15*time.Second, c.Lease/2)
	}
	d = d.withDefaults()
	drift, err := Drift(ctx, d, c.Config)
	if err != nil {
		return nil, err
	}
	rep := &RestoreReport{Drift: drift}
	var plan []Row
	for _, r := range drift.Rows {
		if r.Key != "" && fixable(r.Status, c.Adopt) {
			plan = append(plan, r)
		}
	}
	if c.DryRun {
		for _, r := range plan {
			rep.Rows = append(rep.Rows, RestoreRow{Row: r, Action: "planned"})
		}
		return rep, nil
	}
	s := &session{d: d, c: c.Config, limiters: map[string]*rate.Limiter{}, providers: map[string]providers.Provider{}}
	host, _ := os.Hostname()
	r := &restorer{s: s, c: c, cl: &claimer{ledger: d.Ledger, lease: c.Lease, id: fmt.Sprintf("restore-%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])}}
	out := make([]RestoreRow, len(plan))
	sem := make(chan struct{}, s.c.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := time.Now()
	prog := Progress{Total: len(plan)}
	for i, row := range plan {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i] = r.fix(ctx, row)
			mu.Lock()
			defer mu.Unlock()
			prog.Done++
			count(&prog, out[i].Action)
			if c.Progress != nil {
				prog.Elapsed = time.Since(start)
				c.Progress(prog)
			}
		}()
	}
	wg.Wait()
	rep.Rows = out
	rep.Written, rep.Deleted, rep.Skipped, rep.Failed = prog.Written, prog.Deleted, prog.Skipped, prog.Failed
	return rep, ctx.Err()
}

func count(p *Progress, action string) {
	switch action {
	case ActionWritten:
		p.Written++
	case ActionDeleted:
		p.Deleted++
	case ActionSkipped:
		p.Skipped++
	default:
		p.Failed++
	}
}

type restorer struct {
	s  *session
	c  RestoreConfig
	cl *claimer
}

// fix claims the key, writes or deletes, and releases the claim.
func (r *restorer) fix(ctx context.Context, row Row) RestoreRow {
	res := RestoreRow{Row: row}
	check := func(e *worker.LedgerEntry) string {
		if e.Generation != row.Generation || e.Provider != row.Backend || e.SecretRef != row.SecretRef {
			return "a newer generation was applied since the drift report; the workers own it"
		}
		return ""
	}
	act, why, err := r.cl.run(ctx, row.Team, row.Key, check, func(ctx context.Context, e *worker.LedgerEntry, deadline time.Time) (*worker.LedgerEntry, string, error) {
		version, act, err := r.apply(ctx, row, e, deadline)
		if err != nil || act != ActionWritten || version == "" {
			return nil, act, err
		}
		next := *e
		next.ProviderVersion = version
		return &next, act, nil
	})
	if err != nil {
		res.Action, res.Why = ActionFailed, why+": "+sanitize(err)
		return res
	}
	res.Action, res.Why = act, why
	return res
}

// apply writes the ledger's value, or deletes the secret, before deadline.
func (r *restorer) apply(ctx context.Context, row Row, e *worker.LedgerEntry, deadline time.Time) (version, action string, err error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	p, err := r.s.provider(ctx, row.Team, row.Backend)
	if err != nil {
		return "", "open the backend", err
	}
	if l := r.s.limiter(row.Backend); l != nil {
		if err := l.Wait(ctx); err != nil {
			return "", "rate limit", err
		}
	}
	owner := providers.Owner{TeamID: row.Team, KeyID: row.Key}
	if e.Status == events.StatusDeleted {
		err := p.Delete(ctx, providers.DeleteRequest{Name: e.SecretRef, Owner: owner, Adopt: r.c.Adopt})
		if err != nil && !errors.Is(err, providers.ErrNotFound) {
			return "", "delete", err
		}
		return "", ActionDeleted, nil
	}
	if e.Sealed == nil {
		return "", "write", errors.New("the ledger holds no sealed value for this key")
	}
	value, err := r.s.d.Opener.Open(ctx, e.Sealed, events.Binding{TeamID: row.Team, KeyID: row.Key, Generation: e.SealedGen})
	if err != nil {
		return "", "open the ledger's sealed value", err
	}
	defer clear(value)
	res := r.s.d.Settings.ResolveBackend(r.s.d.TeamSettings(row.Team), row.Backend)
	pr, err := p.Put(ctx, providers.PutRequest{Name: e.SecretRef, Value: value, IdempotencyKey: e.EventID, Owner: owner,
		Description: res.Description, Tags: worker.SecretTags(res.Tags, e.Metadata, e.Alias), Adopt: r.c.Adopt})
	if err != nil {
		return "", "write", err
	}
	return pr.Version, ActionWritten, nil
}
