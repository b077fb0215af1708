package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// Restore outcomes of one row.
const (
	// ActionPlanned: a dry run would act on the row.
	ActionPlanned = "planned"
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
	// Checkpoints, when set, keeps the run's plan and progress in
	// JetStream so that a run killed partway can be resumed.
	Checkpoints *Checkpoints
	// Resume continues the unfinished run with this id ("latest": the most
	// recent one with the same scope) instead of building a new plan.
	Resume string
	// OnStart, when set, is told the run's id, its planned rows and how
	// many of them a resumed run had done.
	OnStart func(id string, total, done int)
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
	Written int `json:"written"`
	Deleted int `json:"deleted"`
	Skipped int `json:"skipped"`
	Failed  int `json:"failed"`
	// LedgerSkipped: the ledger entries in scope that could not be used
	// (as Report.LedgerSkipped; for a restore, in Drift).
	LedgerSkipped []worker.SkippedEntry `json:"ledger_skipped,omitempty"`
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
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Attempts <= 0 {
		c.Attempts = 4
	}
	rep := &RestoreReport{}
	var plan []Row
	var cp *Checkpoint
	host, _ := os.Hostname()
	if c.Resume != "" {
		if c.Checkpoints == nil {
			return nil, errors.New("restore: --resume needs the recovery bucket")
		}
		id := c.Resume
		if id == "latest" {
			var err error
			if id, err = c.Checkpoints.Latest(ctx, c); err != nil {
				return nil, fmt.Errorf("restore: %w", err)
			}
		}
		if !validRunID(id) {
			return nil, fmt.Errorf("restore: %q is not a restore run id", id)
		}
		var err error
		if cp, plan, err = c.Checkpoints.Load(ctx, id); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if cp.Finished {
			return nil, fmt.Errorf("restore: run %s finished at %s; nothing to resume", id, cp.Updated.Format(time.RFC3339))
		}
		if age := time.Since(cp.Updated); cp.Holder != "" && age < 3*checkpointEvery {
			return nil, fmt.Errorf("restore: run %s was saved by %s %s ago: it may still be running", id, cp.Holder, age.Round(time.Millisecond))
		}
		c.Teams, c.All, c.Backend, c.Adopt = cp.Teams, cp.All, cp.Backend, cp.Adopt
	} else {
		dc := c.Config
		dc.noOrphans = true // never acted on
		drift, err := Drift(ctx, d, dc)
		if err != nil {
			return nil, err
		}
		rep.Drift, rep.LedgerSkipped = drift, drift.LedgerSkipped
		for _, r := range drift.Rows {
			switch {
			case r.Key != "" && fixable(r.Status, c.Adopt):
				plan = append(plan, r)
			case r.Status == StatusUnowned:
				// Reported, never touched without --adopt.
				rep.Rows = append(rep.Rows, RestoreRow{Row: r, Action: ActionSkipped, Why: r.Detail + "; --adopt to overwrite"})
			}
		}
		if c.DryRun {
			for _, r := range plan {
				rep.Rows = append(rep.Rows, RestoreRow{Row: r, Action: ActionPlanned})
			}
			return rep, nil
		}
		unowned := len(rep.Rows)
		defer func() { rep.Skipped += unowned }()
		if c.Checkpoints != nil && len(plan) > 0 {
			cp = &Checkpoint{ID: time.Now().UTC().Format("20060102T150405") + "-" + uuid.NewString()[:8], Teams: c.Teams, All: c.All,
				Backend: c.Backend, Adopt: c.Adopt, Started: time.Now().UTC(), Total: len(plan), Done: make([]byte, (len(plan)+7)/8)}
			if err := c.Checkpoints.savePlan(ctx, cp.ID, plan); err != nil {
				return nil, fmt.Errorf("restore: save the plan: %w", err)
			}
		}
	}
	if cp != nil {
		cp.Holder = fmt.Sprintf("%s-%d", host, os.Getpid())
		if err := c.Checkpoints.save(ctx, cp); err != nil {
			return nil, fmt.Errorf("restore: save the checkpoint: %w", err)
		}
		if c.OnStart != nil {
			c.OnStart(cp.ID, cp.Total, cp.Count())
		}
	}
	s := newSession(d, c.Config)
	id := fmt.Sprintf("restore-%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	gate := newClaimsGate(d.Ownership, id, d.Logger)
	defer gate.close()
	r := &restorer{s: s, c: c, cl: &claimer{ledger: d.Ledger, lease: c.Lease, id: id, gate: gate}}
	// The rows to do: all, or those a resumed run had not done.
	out := make([]RestoreRow, len(plan))
	var todo []int
	for i, row := range plan {
		if cp != nil && cp.isDone(i) {
			out[i] = RestoreRow{Row: row, Action: ActionSkipped, Why: "done before the resume"}
			continue
		}
		todo = append(todo, i)
	}
	tr := newTracker(len(plan), c.Progress)
	tr.p.Done = len(plan) - len(todo)
	var mu sync.Mutex // guards cp while rows finish and the saver copies it
	stopSaving := func() {}
	if cp != nil {
		stopSaving = r.saveEvery(ctx, cp, &mu)
	}
	parallel(len(todo), c.Concurrency, &mu, func(k int) RestoreRow { return r.fix(ctx, plan[todo[k]]) }, func(k int, row RestoreRow) {
		i := todo[k]
		out[i] = row
		if cp != nil && row.Action != ActionFailed {
			cp.setDone(i)
		}
		tr.add(row.Action)
	})
	stopSaving()
	rep.Rows = append(rep.Rows, out...)
	rep.Written, rep.Deleted, rep.Skipped, rep.Failed = tr.p.Written, tr.p.Deleted, tr.p.Skipped, tr.p.Failed
	if cp != nil {
		if ctx.Err() == nil && rep.Failed == 0 {
			// Finished: nothing to resume.
			if err := c.Checkpoints.Delete(ctx, cp.ID); err != nil {
				d.Logger.Warn("finished restore's checkpoint not deleted", zap.String("run", cp.ID), zap.Error(err))
			}
		} else if err := c.Checkpoints.save(context.WithoutCancel(ctx), cp); err != nil && ctx.Err() == nil {
			return rep, fmt.Errorf("restore: save the checkpoint: %w", err)
		}
	}
	return rep, ctx.Err()
}

// checkpointEvery is how often a run saves its checkpoint.
const checkpointEvery = time.Second

// saveEvery saves cp (under mu) every checkpointEvery until stopped.
func (r *restorer) saveEvery(ctx context.Context, cp *Checkpoint, mu *sync.Mutex) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(checkpointEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			mu.Lock()
			snap := *cp
			snap.Done = slices.Clone(cp.Done)
			mu.Unlock()
			if err := r.c.Checkpoints.save(ctx, &snap); err != nil {
				r.s.d.Logger.Warn("restore checkpoint not saved; a resume redoes more (idempotently)", zap.Error(err))
			}
		}
	}()
	return func() { close(done); <-stopped }
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
	act, why, err := r.cl.runAt(ctx, row.Team, row.Key, row.entry, row.rev, check, func(ctx context.Context, e *worker.LedgerEntry, deadline time.Time) (*worker.LedgerEntry, string, error) {
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
	// Where the ledger places the secret: its backend with the team
	// options it was written with, not the team's current ones.
	p, res, err := r.s.providerAt(ctx, row.Team, row.Backend, e.Placement)
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
		err := ownLimitRetry(ctx, func() error {
			return p.Delete(ctx, providers.DeleteRequest{Name: e.SecretRef, Owner: owner, Adopt: r.c.Adopt})
		})
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
	pr, err := r.s.put(ctx, p, row.Backend, providers.PutRequest{Name: e.SecretRef, Value: value, IdempotencyKey: e.EventID, Owner: owner,
		Description: res.Description, Tags: worker.SecretTags(res.Tags, e.Metadata, e.Alias), Adopt: r.c.Adopt})
	if err != nil {
		return "", "write", err
	}
	return pr.Version, ActionWritten, nil
}
