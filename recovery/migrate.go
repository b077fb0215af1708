package recovery

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// Migration outcomes of one key (besides the restore actions).
const (
	// ActionMoved: written to the new backend, verified there, the ledger
	// pointed at it.
	ActionMoved = "moved"
	// ActionVerified: the key was already in the new backend at its newest
	// value (a worker wrote it after the settings change).
	ActionVerified = "verified"
)

// ErrNotMoved is returned by Migrate when the team's settings do not place
// it on the target backend yet: keys moved before the settings change
// would be written back to the old backend by the next rotation.
var ErrNotMoved = errors.New("the team's settings do not place it on the target backend")

// MigrateConfig moves one team's keys to the backend its settings name.
type MigrateConfig struct {
	// Team to move.
	Team string
	// To is the target backend; the team's settings must resolve to it.
	To string
	// DeleteSource deletes the copies on the old backends as soon as every
	// key is verified in the new one, instead of after Grace.
	DeleteSource bool
	// Grace is how long the old copies stay (recorded for the sweeper of
	// `keyrelay serve`). Default: settings keyrelay.migration.grace.
	Grace time.Duration
	// DryRun lists what would move.
	DryRun bool
	// Adopt lets the move overwrite unowned secrets in the target.
	Adopt bool
	// Concurrency bounds keys moved at once. Default: 8.
	Concurrency int
	// Rate bounds reads and writes per second per backend (0: only the
	// providers' own limits).
	Rate float64
	// Lease and CallTimeout: as RestoreConfig.
	Lease, CallTimeout time.Duration
	// Progress, when set, is called after each key (never concurrently).
	Progress func(Progress)
	// Now is the clock (tests), also the one another process's claim is
	// judged by, with the server's time (claimer.stands). Default:
	// time.Now.
	Now func() time.Time
}

// MigrateReport is the result of Migrate.
type MigrateReport struct {
	Team string       `json:"team"`
	To   string       `json:"to"`
	Rows []RestoreRow `json:"rows"`
	// Counts by action.
	Moved    int `json:"moved"`
	Verified int `json:"verified"`
	Skipped  int `json:"skipped"`
	Failed   int `json:"failed"`
	// SourcesDeleted counts old copies deleted (with DeleteSource).
	SourcesDeleted int `json:"sources_deleted"`
	// DeleteAfter is when `keyrelay serve` deletes the old copies (zero
	// when they were deleted at once or there were none).
	DeleteAfter time.Time `json:"delete_after,omitzero"`
	// LedgerSkipped: the team's ledger entries that could not be used (a
	// value that does not decode), with the reason; their keys are not
	// moved.
	LedgerSkipped []worker.SkippedEntry `json:"ledger_skipped,omitempty"`
}

// Migrate moves every live key of c.Team to c.To: it writes the ledger's
// newest value there (idempotent by the ledger's event id), reads it back
// and compares digests, then points the ledger at the new secret and
// records the old copy as a source to delete after the grace period. Each
// key is claimed like a worker claims it, so a rotation published during
// the move waits and then lands in the new backend (the team's settings
// already name it); a key a worker moved meanwhile is only verified.
// Keys that fail stay where they are, in use; run Migrate again.
func Migrate(ctx context.Context, d Deps, c MigrateConfig) (*MigrateReport, error) {
	if err := events.ValidateID("team_id", c.Team); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if c.To == "" {
		return nil, errors.New("migrate: name the target backend")
	}
	d = d.withDefaults()
	if got := d.Settings.Resolve(d.TeamSettings(c.Team)).Backend; got != c.To {
		return nil, fmt.Errorf("migrate: %w: team %q is on %q; publish a team.settings.updated event with backend %q first (or pass --set-backend)",
			ErrNotMoved, c.Team, got, c.To)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Grace <= 0 && !c.DeleteSource {
		c.Grace = d.Settings.Keyrelay.Migration.Grace
	}
	// A key whose create is being written (a claim, no generation yet) is
	// scanned too: its worker may have resolved the team's settings before
	// they moved, so its create can land on the old backend; the move
	// waits for it like for any claim.
	cfg := Config{Teams: []string{c.Team}, Concurrency: c.Concurrency, Rate: c.Rate, Attempts: 4, inFlight: true}
	items, skipped, err := scan(ctx, d, cfg, func(e *worker.LedgerEntry) bool { return e.Status != events.StatusDeleted })
	if err != nil {
		return nil, fmt.Errorf("migrate: read the ledger: %w", err)
	}
	d.noteSkipped(skipped)
	s := newSession(d, cfg)
	host, _ := os.Hostname()
	id := fmt.Sprintf("migrate-%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	gate := newClaimsGate(d.Ownership, id, d.Logger)
	defer gate.close()
	m := &mover{s: s, c: c, cl: &claimer{ledger: d.Ledger, lease: c.Lease, id: id, gate: gate, now: c.Now}}
	rep := &MigrateReport{Team: c.Team, To: c.To, LedgerSkipped: skipped}
	tr := newTracker(len(items), c.Progress)
	rep.Rows = parallel(len(items), c.Concurrency, nil, func(i int) RestoreRow { return m.move(ctx, items[i].key, items[i].e) },
		func(_ int, r RestoreRow) {
			tr.add(r.Action)
			switch r.Action {
			case ActionMoved:
				rep.Moved++
			case ActionVerified:
				rep.Verified++
			case ActionSkipped, ActionPlanned:
				rep.Skipped++
			default:
				rep.Failed++
			}
		})
	if err := ctx.Err(); err != nil || c.DryRun {
		return rep, err
	}
	if c.DeleteSource {
		cr, err := Cleanup(ctx, d, CleanupConfig{Team: c.Team, Force: true, Concurrency: c.Concurrency, Rate: c.Rate, Lease: c.Lease, Now: c.Now})
		if err != nil {
			return rep, err
		}
		rep.SourcesDeleted = cr.Deleted
		rep.Failed += cr.Failed
		rep.Rows = append(rep.Rows, cr.Rows...)
		return rep, nil
	}
	if rep.Moved > 0 {
		rep.DeleteAfter = c.Now().Add(c.Grace).UTC()
	}
	return rep, nil
}

type mover struct {
	s  *session
	c  MigrateConfig
	cl *claimer
}

// move brings one key to the target backend.
func (m *mover) move(ctx context.Context, key string, scanned *worker.LedgerEntry) RestoreRow {
	team := m.c.Team
	row := RestoreRow{Row: Row{Team: team, Key: key, Backend: m.c.To, Generation: scanned.Generation, LedgerStatus: scanned.Status}}
	fail := func(what string, err error) RestoreRow {
		row.Action, row.Why = ActionFailed, what+": "+sanitize(err)
		return row
	}
	res := m.s.d.Settings.ResolveBackend(m.s.d.TeamSettings(team), m.c.To)
	// Where the key goes: the target with the team's current options,
	// recorded in the entry as the workers record their writes.
	place := worker.PlacementFor(res, m.s.d.Registry.TeamOptionAllowed)
	p, err := m.s.provider(ctx, team, m.c.To)
	if err != nil {
		return fail("open the target", err)
	}
	name, err := res.SecretName(team, key, scanned.Alias)
	if err != nil {
		return fail("secret name", err)
	}
	row.SecretRef = name
	if scanned.Provider == m.c.To && scanned.SecretRef == name && worker.SamePlace(scanned.Placement, place) {
		// A worker wrote it there after the settings change: verify only.
		if ok, err := m.verify(ctx, p, team, key, name, scanned); err == nil && ok {
			row.Action = ActionVerified
			return row
		}
	}
	if m.c.DryRun {
		row.Action, row.Why = ActionPlanned, "from "+scanned.Provider+" "+scanned.SecretRef
		if scanned.Generation == 0 {
			row.Why = "its create is being written"
		}
		return row
	}
	check := func(e *worker.LedgerEntry) string {
		if e.Generation == 0 {
			if m.cl.stands(e.Claim) {
				return "" // its create is being written: wait for it
			}
			// The create's worker stopped before it committed: its
			// redelivery writes the team's current backend.
			return "not created: its first event was not applied"
		}
		if e.Status == events.StatusDeleted {
			return "deleted since the scan"
		}
		if e.Sealed == nil {
			return "the ledger holds no sealed value for this key"
		}
		return ""
	}
	act, why, err := m.cl.run(ctx, team, key, check, func(ctx context.Context, e *worker.LedgerEntry, deadline time.Time) (*worker.LedgerEntry, string, error) {
		ctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		name, err := res.SecretName(team, key, e.Alias)
		if err != nil {
			return nil, "secret name", err
		}
		row.SecretRef, row.Generation = name, e.Generation
		if e.Generation == 0 || e.Sealed == nil {
			// A create's claim that ran out between check and claim.
			return nil, ActionSkipped, nil
		}
		if e.Provider == m.c.To && e.SecretRef == name && worker.SamePlace(e.Placement, place) {
			if ok, err := m.verify(ctx, p, team, key, name, e); err == nil && ok {
				return nil, ActionVerified, nil
			}
		}
		value, err := m.s.d.Opener.Open(ctx, e.Sealed, events.Binding{TeamID: team, KeyID: key, Generation: e.SealedGen})
		if err != nil {
			return nil, "open the ledger's sealed value", err
		}
		defer clear(value)
		if l := m.s.limiter(m.c.To); l != nil {
			if err := l.Wait(ctx); err != nil {
				return nil, "rate limit", err
			}
		}
		pr, err := m.s.put(ctx, p, m.c.To, providers.PutRequest{Name: name, Value: value, IdempotencyKey: e.EventID, Owner: providers.Owner{TeamID: team, KeyID: key},
			Description: res.Description, Tags: worker.SecretTags(res.Tags, e.Metadata, e.Alias), Adopt: m.c.Adopt})
		if err != nil {
			return nil, "write", err
		}
		if ok, err := m.verify(ctx, p, team, key, name, e); err != nil {
			return nil, "verify", err
		} else if !ok {
			return nil, "verify", errors.New("the target does not hold the value just written")
		}
		next := *e
		next.Provider, next.SecretRef, next.ProviderVersion, next.Placement = m.c.To, name, pr.Version, place
		next.UpdatedAt = m.c.Now().UTC()
		next.AddSourceAt(e.Provider, e.SecretRef, e.Placement, next.UpdatedAt)
		return &next, ActionMoved, nil
	})
	if err != nil {
		return fail(why, err)
	}
	if act == ActionSkipped && strings.HasPrefix(why, whyClaimed) {
		// Not moved: the key stays in use on the old backend, and the
		// move is not done until it is moved (run it again).
		act, why = ActionFailed, why+" through three leases: not moved, still in use where it was; run the move again"
	}
	row.Action, row.Why = act, why
	return row
}

// verify reports whether name in p holds e's value, owned by the key.
func (m *mover) verify(ctx context.Context, p providers.Provider, team, key, name string, e *worker.LedgerEntry) (bool, error) {
	sec, err := m.s.get(ctx, p, m.c.To, name)
	if err != nil {
		return false, err
	}
	defer clear(sec.Value)
	if p.Capabilities().Tags && !providers.IsOwnedBy(sec.Tags, providers.Owner{TeamID: team, KeyID: key}) {
		return false, nil
	}
	want, err := m.s.digest(ctx, team, key, e)
	if err != nil {
		return false, err
	}
	got := sha256.Sum256(sec.Value)
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1, nil
}

// CleanupConfig scopes the deletion of copies left on old backends.
type CleanupConfig struct {
	Team string
	// Grace: only copies older than this are deleted, by both Now and the
	// server's time (the copies' Since comes from another process's clock).
	Grace time.Duration
	// Force deletes every recorded copy whatever its age.
	Force bool
	// Concurrency, Rate, Lease: as MigrateConfig.
	Concurrency int
	Rate        float64
	Lease       time.Duration
	// Now is this process's clock (tests), against which, and the
	// server's time, the copies' grace is judged (cleaner.due). Default:
	// time.Now.
	Now func() time.Time
}

// CleanupReport is the result of Cleanup.
type CleanupReport struct {
	Rows []RestoreRow
	// Deleted counts old copies deleted; Pending those still in their
	// grace period, with the earliest time one is due (by Now's clock:
	// later than its Since plus the grace when that clock runs ahead of
	// the server's).
	Deleted, Pending, Failed int
	NextDue                  time.Time
	// LedgerSkipped: the team's ledger entries that could not be used.
	// The old copies they record, if any, are not known, so not deleted.
	LedgerSkipped []worker.SkippedEntry
}

// Done reports whether the cleanup left nothing to do: no copy pending,
// and every ledger entry of the team read. A move's record is removed
// only then: an entry that could not be read may record copies that only
// a later cleanup, once it is repaired, can delete.
func (r *CleanupReport) Done() bool { return r.Pending == 0 && len(r.LedgerSkipped) == 0 }

// Cleanup deletes the copies a move left on old backends (the ledger's
// Sources) once their grace period is over. Each key is claimed while its
// copies are deleted, a copy where the key now lives is never deleted, and
// a secret that another owner took over in the meantime is left alone.
func Cleanup(ctx context.Context, d Deps, c CleanupConfig) (*CleanupReport, error) {
	d = d.withDefaults()
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	cfg := Config{Teams: []string{c.Team}, Concurrency: c.Concurrency, Rate: c.Rate, Attempts: 4}
	items, skipped, err := scan(ctx, d, cfg, func(e *worker.LedgerEntry) bool { return len(e.Sources) > 0 })
	if err != nil {
		return nil, fmt.Errorf("cleanup: read the ledger: %w", err)
	}
	d.noteSkipped(skipped)
	s := newSession(d, cfg)
	host, _ := os.Hostname()
	id := fmt.Sprintf("cleanup-%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	gate := newClaimsGate(d.Ownership, id, d.Logger)
	defer gate.close()
	cl := &claimer{ledger: d.Ledger, lease: c.Lease, id: id, gate: gate, now: c.Now}
	rep := &CleanupReport{LedgerSkipped: skipped}
	cu := &cleaner{s: s, c: c, cl: cl}
	for _, rows := range parallel(len(items), c.Concurrency, nil, func(i int) []RestoreRow { return cu.clean(ctx, items[i].key) }, nil) {
		for _, r := range rows {
			switch r.Action {
			case ActionDeleted:
				rep.Deleted++
			case ActionFailed:
				rep.Failed++
			}
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	// What is still waiting (this run's skips, and failures to retry).
	left, _, err := scan(ctx, d, cfg, func(e *worker.LedgerEntry) bool { return len(e.Sources) > 0 })
	if err != nil {
		return rep, fmt.Errorf("cleanup: read the ledger: %w", err)
	}
	now := c.Now()
	srv, known := d.Ledger.ServerTime()
	for _, it := range left {
		for _, src := range it.e.Sources {
			rep.Pending++
			if at := dueAt(src.Since.Add(c.Grace), now, srv, known); rep.NextDue.IsZero() || at.Before(rep.NextDue) {
				rep.NextDue = at
			}
		}
	}
	return rep, nil
}

// passed reports whether deadline, written from some process's clock (an
// old copy's Since plus the grace, a migration record's lease), has passed
// both by now, this process's clock, and by srv, the server's time as
// this process knows it (worker.Ledger.ServerTime; known false: not known
// yet, so not passed). A process whose clock runs ahead of the one that
// wrote the deadline would otherwise end it early by its skew: delete old
// copies the gateway may still read, or take a move another sweeper is
// running. One whose clock runs behind only waits longer, as it did.
func passed(deadline, now, srv time.Time, known bool) bool {
	return !now.Before(deadline) && known && !srv.Before(deadline)
}

// dueAt is when deadline passes (passed), by this process's clock: later
// than deadline by as much as that clock runs ahead of the server's time,
// so that a sweeper whose clock is ahead does not come back before it can
// do anything. The server's time not known: deadline.
func dueAt(deadline, now, srv time.Time, known bool) time.Time {
	if ahead := now.Sub(srv); known && ahead > 0 {
		return deadline.Add(ahead)
	}
	return deadline
}

// deleteSource deletes one old copy, checking it is still the key's.
//
// It opens the copy's backend with the team options the copy was written
// with (SourceCopy.Placement), not the team's current ones: after a team
// changed its namespace or mount, the copy is in the old one, and the
// current one holds the live secret under the same name.
func (s *session) deleteSource(ctx context.Context, team, key string, src worker.SourceCopy) error {
	p, _, err := s.providerAt(ctx, team, src.Backend, src.Placement)
	if err != nil {
		return err
	}
	if l := s.limiter(src.Backend); l != nil {
		if err := l.Wait(ctx); err != nil {
			return err
		}
	}
	err = ownLimitRetry(ctx, func() error {
		return p.Delete(ctx, providers.DeleteRequest{Name: src.SecretRef, Owner: providers.Owner{TeamID: team, KeyID: key}})
	})
	if errors.Is(err, providers.ErrNotFound) {
		return nil
	}
	return err
}

type cleaner struct {
	s  *session
	c  CleanupConfig
	cl *claimer
}

// due reports whether the old copy src is to be deleted at now, this
// process's clock: with Force, or once its grace has passed by both now
// and the server's time (passed). Since was written from the clock of the
// process that moved the key; a cleanup on a machine whose clock runs
// hours ahead would otherwise delete copies the gateway may still read.
func (cu *cleaner) due(src worker.SourceCopy, now time.Time) bool {
	if cu.c.Force {
		return true
	}
	srv, known := cu.cl.ledger.ServerTime()
	return passed(src.Since.Add(cu.c.Grace), now, srv, known)
}

// clean deletes key's old copies that are due, under its claim.
func (cu *cleaner) clean(ctx context.Context, key string) []RestoreRow {
	team := cu.c.Team
	var rows []RestoreRow
	check := func(e *worker.LedgerEntry) string {
		now := cu.c.Now()
		for _, src := range e.Sources {
			if cu.due(src, now) {
				return ""
			}
		}
		return "in its grace period"
	}
	_, why, err := cu.cl.run(ctx, team, key, check, func(ctx context.Context, e *worker.LedgerEntry, deadline time.Time) (*worker.LedgerEntry, string, error) {
		ctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		now := cu.c.Now()
		next := *e
		next.Sources = nil
		for _, src := range e.Sources {
			row := RestoreRow{Row: Row{Team: team, Key: key, Backend: src.Backend, SecretRef: src.SecretRef, Generation: e.Generation, LedgerStatus: e.Status}}
			switch {
			case src.Backend == e.Provider && src.SecretRef == e.SecretRef && worker.SamePlace(src.Placement, e.Placement):
				continue // where the key lives now: forget, never delete
			case !cu.due(src, now):
				next.Sources = append(next.Sources, src)
				continue
			}
			err := cu.s.deleteSource(ctx, team, key, src)
			switch {
			case err == nil:
				row.Action, row.Why = ActionDeleted, "old copy after the move"
			case errors.Is(err, providers.ErrNotOwned):
				row.Action, row.Why = ActionSkipped, "the old name now holds a secret keyrelay does not own for this key; left alone"
			default:
				row.Action, row.Why = ActionFailed, "delete the old copy: "+sanitize(err)
				next.Sources = append(next.Sources, src)
			}
			rows = append(rows, row)
		}
		return &next, "", nil
	})
	if err != nil {
		rows = append(rows, RestoreRow{Row: Row{Team: team, Key: key}, Action: ActionFailed, Why: why + ": " + sanitize(err)})
	}
	return rows
}
