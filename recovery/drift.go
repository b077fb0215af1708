package recovery

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// ExitDrift is the exit status of `keyrelay drift` when drift was found.
const ExitDrift = 3

// Status classifies one key (or one listed secret).
type Status string

// Drift statuses.
const (
	StatusOK          Status = "ok"
	StatusMissing     Status = "missing"
	StatusStale       Status = "stale"
	StatusResurrected Status = "resurrected"
	StatusUnowned     Status = "unowned"
	StatusOrphan      Status = "orphan"
	// StatusError: the secret could not be read (the reason says why); the
	// key's state is unknown.
	StatusError Status = "error"
)

// Statuses lists every status in report order.
var Statuses = []Status{StatusOK, StatusMissing, StatusStale, StatusResurrected, StatusUnowned, StatusOrphan, StatusError}

// Drifted reports whether s is drift (not ok and not an error).
func (s Status) Drifted() bool { return s != StatusOK && s != StatusError }

// Row is one key's (or one orphan secret's) finding. It never holds a value.
type Row struct {
	Team      string `json:"team"`
	Key       string `json:"key"`
	Backend   string `json:"backend"`
	SecretRef string `json:"secret_ref"`
	Status    Status `json:"status"`
	// Generation and LedgerStatus are the ledger's (absent for orphans).
	Generation   uint64        `json:"generation,omitempty"`
	LedgerStatus events.Status `json:"ledger_status,omitempty"`
	// Detail explains anything but ok: which owner a name holds, the
	// provider's error.
	Detail string `json:"detail,omitempty"`

	// entry and rev are the ledger entry the row was classified from and
	// its revision (not in reports or saved plans): a restore claims the
	// key at that revision instead of reading it again.
	entry *worker.LedgerEntry
	rev   uint64
}

// Report is the result of Drift.
type Report struct {
	Rows []Row `json:"rows"`
	// Summary counts rows per team, backend and status.
	Summary []SummaryRow `json:"summary"`
	// Listed names the (team, backend) pairs whose backend could be listed
	// for orphans; orphans of the others are not known.
	Unlisted []string `json:"unlisted,omitempty"`
	// LedgerSkipped names the ledger entries in scope that could not be
	// used (a key that is not <team>.<key>, a value that does not
	// decode), with the reason, never a value: their keys are not
	// checked. Repair or delete them.
	LedgerSkipped []worker.SkippedEntry `json:"ledger_skipped,omitempty"`
}

// SummaryRow counts one team's rows on one backend.
type SummaryRow struct {
	Team    string         `json:"team"`
	Backend string         `json:"backend"`
	Counts  map[Status]int `json:"counts"`
}

// Drifted counts the rows that are drift.
func (r *Report) Drifted() int {
	n := 0
	for _, row := range r.Rows {
		if row.Status.Drifted() {
			n++
		}
	}
	return n
}

// Errors counts the rows that could not be read.
func (r *Report) Errors() int {
	n := 0
	for _, row := range r.Rows {
		if row.Status == StatusError {
			n++
		}
	}
	return n
}

// Config scopes and paces a drift report.
type Config struct {
	// Teams limits the report to these teams; empty with All for every team.
	Teams []string
	All   bool
	// Backend limits the report to keys the ledger places on this backend,
	// and the orphans to those found on it. An orphan is still judged
	// against every entry of the team: an old copy that a key living on
	// another backend records here is the cleanup's, not an orphan.
	Backend string
	// Concurrency bounds reads in flight. Default: 8.
	Concurrency int
	// Rate bounds reads per second per backend on top of the providers'
	// own limits (0: only theirs).
	Rate float64
	// Attempts per read for retryable errors (throttling, 5xx), with
	// backoff. Default: 4.
	Attempts int
	// Strict refuses to go on when a ledger entry in scope cannot be used
	// (a key that is not <team>.<key>, a value that does not decode): the
	// command fails, naming them, before it reads or writes anything.
	// Without it such entries are reported (Deps.LedgerSkipped, the
	// report's LedgerSkipped) and the others are handled as usual.
	Strict bool

	// noOrphans skips the orphan listing (a restore, which never acts on
	// orphans, does not pay for it: on Vault it reads every secret's
	// metadata in the mount).
	noOrphans bool
	// inFlight also scans keys whose first write is in flight (a claim
	// on an entry with no generation yet): a move must wait for that
	// write, which may land on the old backend.
	inFlight bool
}

// Deps are what a drift report reads.
type Deps struct {
	Ledger   *worker.Ledger
	Settings *settings.Config
	Registry *providers.Registry
	// Opener opens the ledger's sealed values (to digest them).
	Opener events.Opener
	// TeamSettings returns a team's settings (nil: none), for the
	// backend options of its secrets.
	TeamSettings func(team string) *events.TeamSettings
	Logger       *zap.Logger
	// Ownership is the ownership bucket (worker.OwnershipBucket). When set,
	// the commands that claim keys (migrate, cleanup, restore) register a
	// claims request first, so a worker running exclusive claims too while
	// they run. Nil only where no worker can run exclusive (tests).
	Ownership jetstream.KeyValue
	// LedgerSkipped is told of every ledger entry in scope that cannot be
	// used (a key that is not <team>.<key>, a value that does not decode;
	// never its value). The others are handled without it. Nil: each is
	// logged as a warning.
	LedgerSkipped func(worker.SkippedEntry)
}

// ErrLedgerEntriesSkipped: Config.Strict and an entry in scope could not be
// used.
var ErrLedgerEntriesSkipped = worker.ErrEntriesSkipped

// noteSkipped reports entries scan skipped.
func (d Deps) noteSkipped(skipped []worker.SkippedEntry) {
	for _, se := range skipped {
		if d.LedgerSkipped != nil {
			d.LedgerSkipped(se)
			continue
		}
		d.Logger.Warn("ledger entry skipped: it cannot be used (repair or delete it; the other keys are handled)",
			zap.String("key", se.Key), zap.String("reason", se.Reason))
	}
}

// item is one ledger entry in scope, with the ledger revision it was read
// at.
type item struct {
	team, key string
	e         *worker.LedgerEntry
	rev       uint64
}

// scan returns the ledger entries in c's scope (teams, backend) that were
// applied at least once (not a claim only, unless c.inFlight) and pass
// keep, by team and key, and the entries in scope it could not use (a key
// that is not <team>.<key>, a value that does not decode), which never
// stop it: one corrupt entry does not take every team's recovery down.
// Only the teams in scope are read and decoded. With c.Strict a skipped
// entry is an error (ErrLedgerEntriesSkipped).
func scan(ctx context.Context, d Deps, c Config, keep func(*worker.LedgerEntry) bool) ([]item, []worker.SkippedEntry, error) {
	var items []item
	var skipped []worker.SkippedEntry
	o := worker.AllOptions{Skipped: func(se worker.SkippedEntry) { skipped = append(skipped, se) }}
	if !c.All {
		o.Teams = c.Teams
		if len(o.Teams) == 0 {
			return nil, nil, nil
		}
	}
	err := d.Ledger.AllWith(ctx, o, func(k string, e *worker.LedgerEntry, rev uint64) error {
		team, key, err := worker.ParseLedgerKey(k)
		if err != nil {
			return err
		}
		if (!c.All && !slices.Contains(c.Teams, team)) || (e.Generation == 0 && (!c.inFlight || e.Claim == nil)) || (c.Backend != "" && e.Provider != c.Backend) || !keep(e) {
			return nil
		}
		items = append(items, item{team, key, e, rev})
		return nil
	})
	if err == nil && c.Strict && len(skipped) > 0 {
		err = &worker.SkippedEntriesError{Entries: skipped}
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].team != items[j].team {
			return items[i].team < items[j].team
		}
		return items[i].key < items[j].key
	})
	return items, skipped, err
}

// withDefaults fills the optional fields.
func (d Deps) withDefaults() Deps {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.TeamSettings == nil {
		d.TeamSettings = func(string) *events.TeamSettings { return nil }
	}
	return d
}

// Drift builds the report. It fails only when the ledger cannot be read;
// a secret that cannot be read is a row with StatusError.
func Drift(ctx context.Context, d Deps, c Config) (*Report, error) {
	if !c.All && len(c.Teams) == 0 {
		return nil, errors.New("drift: name teams (--team) or --all")
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Attempts <= 0 {
		c.Attempts = 4
	}
	d = d.withDefaults()
	// Every entry of the teams in scope, whatever c.Backend: the orphans
	// listed on a backend are judged against all of them (a key living
	// elsewhere may have a recorded old copy there, or a stray one). Only
	// items, those the ledger places on c.Backend, are checked.
	all := c
	all.Backend = ""
	every, skipped, err := scan(ctx, d, all, func(e *worker.LedgerEntry) bool { return e.Provider != "" })
	if err != nil {
		return nil, fmt.Errorf("drift: read the ledger: %w", err)
	}
	d.noteSkipped(skipped)
	items := every
	if c.Backend != "" {
		items = slices.DeleteFunc(slices.Clone(every), func(it item) bool { return it.e.Provider != c.Backend })
	}

	s := newSession(d, c)
	absent := s.absent(ctx, items)
	rows := parallel(len(items), c.Concurrency, nil, func(i int) Row {
		row := s.check(ctx, items[i], absent[i])
		row.entry, row.rev = items[i].e, items[i].rev
		return row
	}, nil)
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Orphans: per team, backend and placement in scope, the owned secrets
	// the ledger does not point at. A team that changed its namespace or
	// mount has secrets in each place its entries (and their old copies)
	// record: every one is listed, and a name is known only in its place.
	rep := &Report{Rows: rows, LedgerSkipped: skipped}
	known := map[string]map[string]placed{} // team -> key -> where the ledger places it (live keys; ref "" when deleted)
	places := map[place]*worker.Placement{} // where to list -> the team options to open it with
	checked := map[place]map[string]bool{}  // names classified above, or recorded old copies
	record := func(team, backend string, pl *worker.Placement, name string) place {
		at, eff := s.placeOf(team, backend, pl)
		if c.Backend == "" || c.Backend == backend {
			places[at] = eff
		}
		if checked[at] == nil {
			checked[at] = map[string]bool{}
		}
		checked[at][name] = true
		return at
	}
	for _, it := range every {
		at := record(it.team, it.e.Provider, it.e.Placement, it.e.SecretRef)
		// Old copies a cleanup is to delete are the ledger's, not orphans.
		for _, src := range it.e.Sources {
			record(it.team, src.Backend, src.Placement, src.SecretRef)
		}
		if known[it.team] == nil {
			known[it.team] = map[string]placed{}
		}
		if it.e.Status != events.StatusDeleted {
			known[it.team][it.key] = placed{at, it.e.SecretRef}
		} else if _, ok := known[it.team][it.key]; !ok {
			known[it.team][it.key] = placed{}
		}
	}
	// Keys whose entry cannot be used are not known to have none: their
	// secrets are not orphans (deleting them would lose the key).
	unreadable := map[[2]string]bool{}
	for _, se := range skipped {
		if team, key, err := worker.ParseLedgerKey(se.Key); err == nil {
			unreadable[[2]string{team, key}] = true
		}
	}
	for _, team := range c.Teams {
		if c.noOrphans {
			break
		}
		// Named teams are listed even when the ledger has nothing of them.
		r := d.Settings.Resolve(d.TeamSettings(team))
		if c.Backend == "" || c.Backend == r.Backend {
			at, eff := s.placeOf(team, r.Backend, nil)
			places[at] = eff
		}
	}
	if c.noOrphans {
		clear(places)
	}
	unlisted := map[string]bool{}
	for _, at := range sortedPlaces(places) {
		team, backend := at.team, at.backend
		p, _, err := s.providerAt(ctx, team, backend, places[at])
		if err != nil {
			rep.Rows = append(rep.Rows, Row{Team: team, Backend: backend, Status: StatusError, Detail: "list: " + err.Error()})
			continue
		}
		l, ok := providers.AsLister(p)
		if !ok {
			if !unlisted[team+"/"+backend] {
				unlisted[team+"/"+backend] = true
				rep.Unlisted = append(rep.Unlisted, team+"/"+backend)
			}
			continue
		}
		err = l.List(ctx, providers.ListRequest{TeamID: team}, func(ls providers.Listed) error {
			if ls.Owner.TeamID != team || checked[at][ls.Name] || unreadable[[2]string{team, ls.Owner.KeyID}] {
				return nil // another team's, a name a ledger entry was checked under or an old copy it records here, or a key whose entry cannot be used
			}
			lp, ok := known[team][ls.Owner.KeyID]
			switch {
			case !ok:
				rep.Rows = append(rep.Rows, Row{Team: team, Key: ls.Owner.KeyID, Backend: backend, SecretRef: ls.Name, Status: StatusOrphan,
					Detail: "owned by keyrelay for this key, which has no ledger entry"})
			case lp.ref != "" && (lp.ref != ls.Name || lp.at != at):
				detail := "owned by this key, which the ledger places under " + lp.ref
				switch {
				case lp.at.backend != backend:
					detail += " on " + lp.at.backend
				case lp.at != at:
					detail += " with other team options (another namespace or mount)"
				}
				rep.Rows = append(rep.Rows, Row{Team: team, Key: ls.Owner.KeyID, Backend: backend, SecretRef: ls.Name, Status: StatusOrphan, Detail: detail})
			}
			return nil
		})
		if err != nil {
			rep.Rows = append(rep.Rows, Row{Team: team, Backend: backend, Status: StatusError, Detail: "list: " + sanitize(err)})
		}
	}
	sort.SliceStable(rep.Rows, func(i, j int) bool {
		a, b := rep.Rows[i], rep.Rows[j]
		if a.Team != b.Team {
			return a.Team < b.Team
		}
		if a.Backend != b.Backend {
			return a.Backend < b.Backend
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.SecretRef < b.SecretRef
	})
	rep.Summary = summarize(rep.Rows)
	return rep, nil
}

// place is where a team's secrets are listed: a backend with the team
// options that reach it (their digest).
type place struct{ team, backend, opts string }

// placed is where the ledger places a key: the place and the name.
type placed struct {
	at  place
	ref string
}

// placeOf returns where a secret of team recorded on backend at pl is, and
// the placement to open it with: the allowed team options that reach it
// (pl's; the team's current ones when pl is nil, not recorded), so an
// unrecorded placement and a recorded one naming the team's current
// options are one place, listed once.
func (s *session) placeOf(team, backend string, pl *worker.Placement) (place, *worker.Placement) {
	eff := worker.PlacementFor(pl.Resolve(s.d.Settings, s.d.TeamSettings(team), backend), s.d.Registry.TeamOptionAllowed)
	return place{team, backend, providers.OptionsDigest(eff.TeamOptions)}, eff
}

func sortedPlaces(m map[place]*worker.Placement) []place {
	out := slices.Collect(maps.Keys(m))
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.team != b.team {
			return a.team < b.team
		}
		if a.backend != b.backend {
			return a.backend < b.backend
		}
		return a.opts < b.opts
	})
	return out
}

func summarize(rows []Row) []SummaryRow {
	idx := map[[2]string]*SummaryRow{}
	var out []*SummaryRow
	for _, r := range rows {
		k := [2]string{r.Team, r.Backend}
		s := idx[k]
		if s == nil {
			s = &SummaryRow{Team: r.Team, Backend: r.Backend, Counts: map[Status]int{}}
			idx[k] = s
			out = append(out, s)
		}
		s.Counts[r.Status]++
	}
	res := make([]SummaryRow, len(out))
	for i, s := range out {
		res[i] = *s
	}
	return res
}

// session holds one run's deps, pacing and per-backend limiters.
type session struct {
	d        Deps
	c        Config
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

func newSession(d Deps, c Config) *session {
	return &session{d: d, c: c, limiters: map[string]*rate.Limiter{}}
}

// provider opens backend with the options team's secrets are written with
// now (the worker's rule: the global and allowed team options).
func (s *session) provider(ctx context.Context, team, backend string) (providers.Provider, error) {
	p, _, err := s.open(ctx, s.d.TeamSettings(team), backend, nil)
	return p, err
}

// providerAt opens backend with the team options a secret of team was
// written with, as the ledger recorded them (pl; nil: not recorded, the
// team's current ones). The team may have changed them since (a Vault
// namespace or mount): the secret is still where it was written.
func (s *session) providerAt(ctx context.Context, team, backend string, pl *worker.Placement) (providers.Provider, settings.Resolved, error) {
	return s.openResolved(ctx, pl.Resolve(s.d.Settings, s.d.TeamSettings(team), backend), nil)
}

// open opens backend with the options a team with settings ts writes
// with, then overrides (a copy's --option).
func (s *session) open(ctx context.Context, ts *events.TeamSettings, backend string, overrides map[string]string) (providers.Provider, settings.Resolved, error) {
	return s.openResolved(ctx, s.d.Settings.ResolveBackend(ts, backend), overrides)
}

// openResolved opens r's backend with r's options (the global and the
// allowed team ones), then overrides.
func (s *session) openResolved(ctx context.Context, r settings.Resolved, overrides map[string]string) (providers.Provider, settings.Resolved, error) {
	opts, _ := r.ProviderOptions(func(key string) bool { return s.d.Registry.TeamOptionAllowed(r.Backend, key) })
	for k, v := range overrides {
		opts[k] = v
	}
	p, err := s.d.Registry.Open(ctx, r.Backend, providers.Config{Options: opts, Getenv: s.d.Settings.Env, Logger: s.d.Logger})
	return p, r, err
}

func (s *session) limiter(backend string) *rate.Limiter {
	if s.c.Rate <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limiters[backend]
	if l == nil {
		l = providers.NewLimiter(s.c.Rate)
		s.limiters[backend] = l
	}
	return l
}

// get reads name, waiting for the rate limit and retrying retryable errors.
func (s *session) get(ctx context.Context, p providers.Provider, backend, name string) (*providers.Secret, error) {
	b := backoff.WithContext(backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond), backoff.WithMaxInterval(5*time.Second)), uint64(s.c.Attempts-1)), ctx)
	var sec *providers.Secret
	err := backoff.Retry(func() error {
		if l := s.limiter(backend); l != nil {
			if err := l.Wait(ctx); err != nil {
				return backoff.Permanent(err)
			}
		}
		err := ownLimitRetry(ctx, func() (err error) {
			sec, err = p.Get(ctx, name, "")
			return err
		})
		if err == nil || errors.Is(err, providers.ErrNotFound) || !providers.IsRetryable(err) {
			return backoff.Permanent(err)
		}
		if hint := providers.RetryAfter(err); hint > 0 {
			if err := ctxtime.Sleep(ctx, hint); err != nil {
				return backoff.Permanent(err)
			}
		}
		return err
	}, b)
	return sec, err
}

// listFolderMin is the fewest keys of one team in one backend folder for
// which a drift scan lists the folder's names (one request per folder on
// Vault, a page per hundred names elsewhere) to tell the missing ones
// without reading each.
const listFolderMin = 16

// absent lists, per team, backend and folder holding at least
// listFolderMin of the items, every name the backend has there
// (ListRequest.Every), and returns the items whose secret is not among
// them: those are missing without a read. Folders that cannot be listed
// (no Lister, an error) are left to a read per key.
func (s *session) absent(ctx context.Context, items []item) []bool {
	out := make([]bool, len(items))
	// A folder is one per placement too: a team's keys written before and
	// after it changed its namespace are in two places.
	groups := map[[4]string][]int{} // team, backend, placement, folder -> items
	for i, it := range items {
		dir := it.e.SecretRef[:strings.LastIndexByte(it.e.SecretRef, '/')+1]
		if dir != "" {
			k := [4]string{it.team, it.e.Provider, placeKey(it.e.Placement), dir}
			groups[k] = append(groups[k], i)
		}
	}
	var folders [][4]string
	for k, idx := range groups {
		if len(idx) >= listFolderMin {
			folders = append(folders, k)
		}
	}
	parallel(len(folders), s.c.Concurrency, nil, func(f int) struct{} {
		team, backend, dir := folders[f][0], folders[f][1], folders[f][3]
		p, _, err := s.providerAt(ctx, team, backend, items[groups[folders[f]][0]].e.Placement)
		if err != nil {
			return struct{}{}
		}
		l, ok := providers.AsLister(p)
		if !ok {
			return struct{}{}
		}
		if lim := s.limiter(backend); lim != nil && lim.Wait(ctx) != nil {
			return struct{}{}
		}
		names := map[string]bool{}
		err = l.List(ctx, providers.ListRequest{Prefix: dir, Every: true}, func(ls providers.Listed) error {
			names[ls.Name] = true
			return nil
		})
		if err != nil {
			s.d.Logger.Debug("drift: folder not listed; reading each key", zap.String("team", team), zap.String("backend", backend), zap.Error(err))
			return struct{}{}
		}
		for _, i := range groups[folders[f]] {
			out[i] = !names[items[i].e.SecretRef] // distinct folders: no two goroutines share an i
		}
		return struct{}{}
	}, nil)
	return out
}

// check classifies one ledger entry; absent says a listing already showed
// that its backend has no secret under the name.
func (s *session) check(ctx context.Context, it item, absent bool) Row {
	team, key, e := it.team, it.key, it.e
	row := Row{Team: team, Key: key, Backend: e.Provider, SecretRef: e.SecretRef, Generation: e.Generation, LedgerStatus: e.Status}
	fail := func(what string, err error) Row {
		row.Status, row.Detail = StatusError, what+": "+sanitize(err)
		return row
	}
	p, _, err := s.providerAt(ctx, team, e.Provider, e.Placement)
	if err != nil {
		return fail("open the backend", err)
	}
	var sec *providers.Secret
	if absent {
		err = providers.ErrNotFound
	} else {
		sec, err = s.get(ctx, p, e.Provider, e.SecretRef)
	}
	notFound := errors.Is(err, providers.ErrNotFound)
	if err != nil && !notFound {
		return fail("read", err)
	}
	owned := true
	if !notFound && p.Capabilities().Tags {
		owned = providers.IsOwnedBy(sec.Tags, providers.Owner{TeamID: team, KeyID: key})
	}
	switch {
	case e.Status == events.StatusDeleted && notFound:
		row.Status = StatusOK
	case e.Status == events.StatusDeleted && owned:
		row.Status, row.Detail = StatusResurrected, "deleted in the ledger, present in the backend"
	case notFound:
		row.Status, row.Detail = StatusMissing, "no secret under this name"
	case !owned:
		row.Status, row.Detail = StatusUnowned, ownerOf(sec.Tags)
	case e.Sealed == nil:
		row.Status, row.Detail = StatusError, "the ledger holds no sealed value for this key"
	default:
		want, err := s.digest(ctx, team, key, e)
		if err != nil {
			return fail("open the ledger's sealed value", err)
		}
		got := sha256.Sum256(sec.Value)
		clear(sec.Value)
		if subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
			row.Status = StatusOK
		} else {
			row.Status, row.Detail = StatusStale, "the value differs from the ledger's newest (SHA-256 digests compared)"
		}
	}
	return row
}

// digest opens the ledger's sealed value and returns its SHA-256.
func (s *session) digest(ctx context.Context, team, key string, e *worker.LedgerEntry) ([32]byte, error) {
	v, err := s.d.Opener.Open(ctx, e.Sealed, events.Binding{TeamID: team, KeyID: key, Generation: e.SealedGen})
	if err != nil {
		return [32]byte{}, err
	}
	defer clear(v)
	return sha256.Sum256(v), nil
}

// ownerOf describes who a secret belongs to, from its tags.
func ownerOf(tags map[string]string) string {
	if tags[providers.ManagedByTag] != providers.ManagedByValue {
		return "a secret keyrelay does not own (no managed-by: keyrelay tag)"
	}
	return fmt.Sprintf("owned by keyrelay for team %q key %q", tags[providers.TeamTag], tags[providers.KeyTag])
}

// sanitize bounds an error for a row. Provider errors never carry values.
func sanitize(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// put writes req. When the backend answers that this event already wrote
// its current version (Duplicate) but the current value is not req's (a
// hand edit that kept keyrelay's tags, the event id among them), it writes
// again under a recovery-specific idempotency key, so that a restore
// really restores; a run repeated after that finds the key ok.
func (s *session) put(ctx context.Context, p providers.Provider, backend string, req providers.PutRequest) (providers.PutResult, error) {
	var pr providers.PutResult
	write := func() (err error) {
		pr, err = p.Put(ctx, req)
		return err
	}
	err := ownLimitRetry(ctx, write)
	if err != nil || !pr.Duplicate {
		return pr, err
	}
	cur, err := s.get(ctx, p, backend, req.Name)
	if err != nil {
		return pr, nil // cannot tell: trust the backend's record
	}
	want, got := sha256.Sum256(req.Value), sha256.Sum256(cur.Value)
	clear(cur.Value)
	if subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
		return pr, nil
	}
	req.IdempotencyKey = "recovery:" + req.IdempotencyKey
	err = ownLimitRetry(ctx, write)
	if err == nil && pr.Duplicate {
		return pr, errors.New("the backend reports the value already written by this event, but holds another value under the name")
	}
	return pr, err
}

// placeKey tells placements apart in a map key: "-" when not recorded,
// else the digest of the team options.
func placeKey(pl *worker.Placement) string {
	if pl == nil {
		return "-"
	}
	return providers.OptionsDigest(pl.TeamOptions)
}
