package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/kvlist"
	"github.com/keyrelay/keyrelay/worker"
)

// Migration states.
const (
	// MigrationRequested: the team's place changed (another backend, or
	// other team options on it) and keyrelay.migration.on_settings_change
	// asked for its keys to move; a `keyrelay serve` sweeper runs the move.
	MigrationRequested = "requested"
	// MigrationRunning: a sweeper is moving the keys (under a lease).
	MigrationRunning = "running"
	// MigrationMoved: every key was moved; the old copies are deleted at
	// DeleteAfter.
	MigrationMoved = "moved"
)

// MigrationRecord is one team's move, kept in the recovery bucket under
// "migration.<team>" so that it survives restarts and any serve process
// can finish it.
type MigrationRecord struct {
	Team string `json:"team"`
	To   string `json:"to"`
	// Placement is the team options on To the move was requested for
	// (worker.PlacementFor: only options a team may set, never
	// credentials), so that a change of those options alone is a new
	// request and a redelivered one is not. Nil: not recorded (a request
	// by backend name, Request): any options on To.
	Placement   *worker.Placement `json:"placement,omitempty"`
	State       string            `json:"state"`
	RequestedAt time.Time         `json:"requested_at,omitzero"`
	MovedAt     time.Time         `json:"moved_at,omitzero"`
	// DeleteAfter is when the old copies are deleted.
	DeleteAfter time.Time `json:"delete_after,omitzero"`
	// Holder and LeaseUntil: the sweeper working on it.
	Holder     string    `json:"holder,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Moved and Failed count the keys of the last run; LastError says why
	// the last run stopped (never a value).
	Moved     int    `json:"moved"`
	Failed    int    `json:"failed"`
	LastError string `json:"last_error,omitempty"`

	// stored is the server's time at which a record Get read was stored
	// (never written; zero on a record not read): the sweeper reads
	// LeaseUntil and DeleteAfter, written from another process's clock,
	// against it too.
	stored time.Time
}

// MigrationKey is the recovery-bucket key of team's migration record.
func MigrationKey(team string) string { return "migration." + team }

// Migrations reads and writes migration records in the recovery bucket.
type Migrations struct {
	KV jetstream.KeyValue
	// JS reaches the bucket's stream, so Teams can read its subjects
	// (kvlist.Keys).
	JS jetstream.JetStream
}

// Get returns team's record and its revision (nil, 0 when none).
func (m Migrations) Get(ctx context.Context, team string) (*MigrationRecord, uint64, error) {
	e, err := m.KV.Get(ctx, MigrationKey(team))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var r MigrationRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("migration record %s: %w", e.Key(), err)
	}
	r.stored = e.Created()
	return &r, e.Revision(), nil
}

// Put stores r at revision rev (0: only if absent).
func (m Migrations) Put(ctx context.Context, r *MigrationRecord, rev uint64) (uint64, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	if rev == 0 {
		return m.KV.Create(ctx, MigrationKey(r.Team), b)
	}
	return m.KV.Update(ctx, MigrationKey(r.Team), b, rev)
}

// Record stores r whatever is there.
func (m Migrations) Record(ctx context.Context, r *MigrationRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = m.KV.Put(ctx, MigrationKey(r.Team), b)
	return err
}

// Request asks the sweepers to move team to backend to, with whatever
// team options it has there (RequestPlace with no placement).
func (m Migrations) Request(ctx context.Context, team, to string) error {
	return m.RequestPlace(ctx, team, worker.TeamPlace{Backend: to})
}

// RequestPlace asks the sweepers to move team to place to: its backend and
// the team options on it (nil Placement: any). A move to that place
// already requested, running or done is left as it is (a redelivered
// settings event asks again: neither a second request nor a reset), a
// record for another place is replaced by a new request (the newer
// settings win, even on the same backend: the sweeper moves the keys to
// the new options and then deletes the copies left under the old ones,
// recorded in their ledger entries, after the grace period).
func (m Migrations) RequestPlace(ctx context.Context, team string, to worker.TeamPlace) error {
	if err := events.ValidateID("team_id", team); err != nil {
		return err
	}
	for {
		r, rev, err := m.Get(ctx, team)
		if err != nil {
			return err
		}
		if r != nil && r.To == to.Backend && worker.SamePlace(r.Placement, to.Placement) {
			return nil
		}
		_, err = m.Put(ctx, &MigrationRecord{Team: team, To: to.Backend, Placement: to.Placement, State: MigrationRequested,
			RequestedAt: time.Now().UTC()}, rev)
		if err == nil || !isConflict(err) {
			return err
		}
	}
}

// Teams lists the teams with a record.
func (m Migrations) Teams(ctx context.Context) ([]string, error) {
	keys, err := kvlist.Keys(ctx, m.JS, m.KV, "migration.>")
	if err != nil {
		return nil, err
	}
	var teams []string
	for _, k := range keys {
		teams = append(teams, strings.TrimPrefix(k, "migration."))
	}
	return teams, nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}

// SweeperConfig paces the sweeper.
type SweeperConfig struct {
	// Every is the pause between sweeps. Default: 1m.
	Every time.Duration
	// Grace for the old copies. Default: the settings' migration grace.
	Grace time.Duration
	// Lease is how long a sweeper holds a record it works on; it renews
	// it while it works. Default: 2m.
	Lease time.Duration
	// Concurrency for moves and cleanups. Default: 8.
	Concurrency int
	// ClaimLease bounds one key's claim. Default: 30s.
	ClaimLease time.Duration
	// CorruptEntries, when set, counts every sighting of a ledger entry a
	// sweep could not use, with label bucket (worker.LedgerBucket): pass
	// worker.Metrics.CorruptEntries (keyrelay_corrupt_entries_total). Nil:
	// not counted.
	CorruptEntries *prometheus.CounterVec
}

// sweepLoggedKeys bounds the corrupt ledger keys whose logged revision a
// Sweeper remembers; past it the memory is cleared (each is then logged
// once more).
const sweepLoggedKeys = 4096

// loggedEntry is what a Sweeper logged of one corrupt ledger entry.
type loggedEntry struct {
	rev    uint64
	reason string
}

// Sweeper runs in `keyrelay serve`: it moves the teams whose move was
// requested (keyrelay.migration.on_settings_change) and deletes old copies
// once their grace period is over. Several processes may run one: a record
// is worked on under a lease taken by compare-and-set.
//
// A ledger entry a sweep cannot use (it does not decode, or its key is not
// <team>.<key>) is skipped, counted on every sweep (CorruptEntries) and
// logged once per revision: the same corrupt entry is not logged again on
// each sweep, a new corrupt write of it is.
type Sweeper struct {
	d   Deps
	m   Migrations
	c   SweeperConfig
	id  string
	log *zap.Logger
	// forward is the caller's Deps.LedgerSkipped (nil: the sweeper logs).
	forward func(worker.SkippedEntry)

	mu sync.Mutex
	// skipped collects what the current Migrate or Cleanup skipped.
	skipped []worker.SkippedEntry
	// logged is the last revision logged per corrupt ledger key.
	logged   map[string]loggedEntry
	ledgerKV jetstream.KeyValue

	// now is this process's clock (nil: time.Now; tests set one that is
	// off).
	now func() time.Time
}

// clock is this process's time (now).
func (s *Sweeper) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// serverTime is the server's time as this process knows it: the later of
// r's stored time (just read) and the ledger's (worker.Ledger.ServerTime).
func (s *Sweeper) serverTime(r *MigrationRecord) (time.Time, bool) {
	srv := r.stored
	if s.d.Ledger != nil {
		if t, ok := s.d.Ledger.ServerTime(); ok && t.After(srv) {
			srv = t
		}
	}
	return srv, !srv.IsZero()
}

// NewSweeper returns a sweeper over the migration records m.
func NewSweeper(d Deps, m Migrations, c SweeperConfig) *Sweeper {
	d = d.withDefaults()
	if c.Every <= 0 {
		c.Every = time.Minute
	}
	if c.Grace <= 0 {
		c.Grace = d.Settings.Keyrelay.Migration.Grace
	}
	if c.Lease <= 0 {
		c.Lease = 2 * time.Minute
	}
	host, _ := os.Hostname()
	s := &Sweeper{d: d, m: m, c: c, id: fmt.Sprintf("sweeper-%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8]), log: d.Logger.Named("migration"),
		forward: d.LedgerSkipped, logged: map[string]loggedEntry{}}
	// Migrate and Cleanup report skipped entries here instead of logging
	// each one on every sweep; reportSkipped handles them.
	s.d.LedgerSkipped = func(se worker.SkippedEntry) {
		s.mu.Lock()
		s.skipped = append(s.skipped, se)
		s.mu.Unlock()
	}
	return s
}

// reportSkipped counts the ledger entries the last Migrate or Cleanup
// skipped and logs each one whose revision was not logged yet (never its
// value). The caller's Deps.LedgerSkipped, when set, is told of each
// instead of the log.
func (s *Sweeper) reportSkipped(ctx context.Context) {
	s.mu.Lock()
	skipped := s.skipped
	s.skipped = nil
	s.mu.Unlock()
	for _, se := range skipped {
		if s.c.CorruptEntries != nil {
			s.c.CorruptEntries.WithLabelValues(worker.LedgerBucket).Inc()
		}
		if s.forward != nil {
			s.forward(se)
			continue
		}
		le := loggedEntry{rev: s.ledgerRevision(ctx, se.Key), reason: se.Reason}
		s.mu.Lock()
		last, seen := s.logged[se.Key]
		// Revision 0: it could not be read; the reason tells them apart.
		logIt := !seen || last != le
		if logIt {
			if len(s.logged) >= sweepLoggedKeys {
				clear(s.logged)
			}
			s.logged[se.Key] = le
		}
		s.mu.Unlock()
		if logIt {
			s.log.Warn("ledger entry skipped: it cannot be used (repair or delete it; the other keys are handled); "+
				"logged once per revision", zap.String("key", se.Key), zap.Uint64("revision", le.rev), zap.String("reason", se.Reason))
		}
	}
}

// ledgerRevision is the revision of the ledger entry under key, 0 when it
// cannot be read (no JetStream context, or an error).
func (s *Sweeper) ledgerRevision(ctx context.Context, key string) uint64 {
	if s.m.JS == nil {
		return 0
	}
	s.mu.Lock()
	kv := s.ledgerKV
	s.mu.Unlock()
	if kv == nil {
		var err error
		if kv, err = s.m.JS.KeyValue(ctx, worker.LedgerBucket); err != nil {
			return 0
		}
		s.mu.Lock()
		s.ledgerKV = kv
		s.mu.Unlock()
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return 0
	}
	return e.Revision()
}

// Run sweeps until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.c.Every)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("migration sweep failed; trying again at the next sweep", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep works once through every record that is due.
func (s *Sweeper) Sweep(ctx context.Context) error {
	teams, err := s.m.Teams(ctx)
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	var errs []error
	for _, team := range teams {
		if err := s.sweepTeam(ctx, team); err != nil {
			errs = append(errs, fmt.Errorf("team %s: %w", team, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Sweeper) sweepTeam(ctx context.Context, team string) error {
	r, rev, err := s.m.Get(ctx, team)
	if err != nil || r == nil {
		return err
	}
	// LeaseUntil and DeleteAfter were written from the clock of the
	// sweeper that wrote the record, often another machine's: each ends
	// only once both this process's clock and the server's time have
	// passed it (passed), so a sweeper whose clock runs ahead neither
	// takes over a move another one is running (two sweepers on one
	// record) nor starts a cleanup that cannot delete anything yet.
	now := s.clock()
	srv, known := s.serverTime(r)
	switch {
	case r.State == MigrationRunning && !passed(r.LeaseUntil, now, srv, known):
		return nil // someone works on it
	case r.State == MigrationMoved && !passed(r.DeleteAfter, now, srv, known):
		return nil
	}
	move := r.State != MigrationMoved
	held := *r
	held.Holder, held.LeaseUntil = s.id, now.Add(s.c.Lease)
	if move {
		held.State = MigrationRunning
	}
	rev, err = s.m.Put(ctx, &held, rev)
	if isConflict(err) {
		return nil // another sweeper took it
	}
	if err != nil {
		return err
	}
	// Renew the lease while working.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	renewed := make(chan uint64, 1)
	go func() {
		cur := rev
		defer func() { renewed <- cur }()
		t := time.NewTicker(s.c.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				held.LeaseUntil = s.clock().Add(s.c.Lease)
				n, err := s.m.Put(wctx, &held, cur)
				if err != nil {
					if wctx.Err() == nil {
						s.log.Warn("migration lease lost", zap.String("team", team), zap.Error(err))
						cancel()
					}
					return
				}
				cur = n
			}
		}
	}()
	next := held
	next.Holder, next.LeaseUntil = "", time.Time{}
	defer s.reportSkipped(ctx)
	if move {
		s.log.Info("moving the team's keys", zap.String("team", team), zap.String("to", r.To))
		rep, err := Migrate(wctx, s.d, MigrateConfig{Team: team, To: r.To, Grace: s.c.Grace, Concurrency: s.c.Concurrency, Lease: s.c.ClaimLease, Now: s.clock})
		if err != nil {
			next.State, next.LastError = MigrationRequested, sanitize(err)
			if errors.Is(err, ErrNotMoved) {
				// The settings moved elsewhere again; a newer request replaces this one.
				next.LastError = "the team's settings no longer name " + r.To
			}
		} else {
			next.Moved, next.Failed, next.LastError = rep.Moved, rep.Failed, ""
			at := s.clock()
			next.State, next.MovedAt, next.DeleteAfter = MigrationMoved, at.UTC(), at.Add(s.c.Grace).UTC()
			if rep.Failed > 0 {
				next.State, next.LastError = MigrationRequested, fmt.Sprintf("%d keys failed; retried at the next sweep", rep.Failed)
			}
			s.log.Info("team's keys moved", zap.String("team", team), zap.String("to", r.To), zap.Int("moved", rep.Moved),
				zap.Int("verified", rep.Verified), zap.Int("failed", rep.Failed), zap.Time("delete_old_copies_after", next.DeleteAfter))
		}
	} else {
		rep, err := Cleanup(wctx, s.d, CleanupConfig{Team: team, Grace: s.c.Grace, Concurrency: s.c.Concurrency, Lease: s.c.ClaimLease, Now: s.clock})
		switch {
		case err != nil:
			next.LastError = sanitize(err)
		case rep.Done():
			s.log.Info("old copies deleted; migration finished", zap.String("team", team), zap.Int("deleted", rep.Deleted))
			cancel()
			cur := <-renewed
			err := s.m.KV.Delete(ctx, MigrationKey(team), jetstream.LastRevision(cur))
			if isConflict(err) {
				return nil // a new request replaced the record meanwhile: it stays
			}
			return err
		default:
			var left []string
			if rep.Pending > 0 {
				left = append(left, fmt.Sprintf("%d old copies left (%d failed)", rep.Pending, rep.Failed))
			}
			if n := len(rep.LedgerSkipped); n > 0 {
				// Their old copies, if any, are known only to them: the
				// record stays, and each sweep looks again, until they
				// are repaired.
				left = append(left, fmt.Sprintf("%d of the team's ledger entries could not be read (repair them; the old copies they record are deleted once they can be)", n))
			}
			next.LastError = strings.Join(left, "; ")
			if !rep.NextDue.IsZero() && rep.NextDue.After(s.clock()) {
				next.DeleteAfter = rep.NextDue
			}
		}
	}
	cancel()
	cur := <-renewed
	_, err = s.m.Put(ctx, &next, cur)
	if isConflict(err) {
		return nil // a new request replaced the record while it was worked on
	}
	return err
}
