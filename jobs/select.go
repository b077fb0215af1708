package jobs

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// Selection says which keys a job rotates. Keys that the ledger holds as
// deleted, and entries that never completed a write, are never selected.
type Selection struct {
	// Teams limits the job to these teams; All selects every team.
	Teams []string `json:"teams,omitempty"`
	All   bool     `json:"all,omitempty"`
	// OlderThan keeps keys whose value was last set longer ago than this
	// (the ledger's updated_at) when the job was planned. 0: any age.
	OlderThan time.Duration `json:"older_than,omitempty"`
	// Backend keeps keys the ledger places on this backend.
	Backend string `json:"backend,omitempty"`
	// Keys, when set, keeps only these (team, key) pairs (--keys-file).
	Keys []TeamKey `json:"keys,omitempty"`
	// KeysCount is, in a saved job record, the number of keys the keys
	// file named (the record does not keep them: the plan holds the ones
	// selected).
	KeysCount int `json:"keys_count,omitempty"`
}

// TeamKey names one key.
type TeamKey struct {
	Team string `json:"team"`
	Key  string `json:"key"`
}

// Validate checks the selection names something.
func (s Selection) Validate() error {
	if !s.All && len(s.Teams) == 0 && len(s.Keys) == 0 {
		return fmt.Errorf("jobs: select keys with teams (--team), --all or a keys file")
	}
	for _, t := range s.Teams {
		if err := events.ValidateID("team", t); err != nil {
			return err
		}
	}
	for _, k := range s.Keys {
		if err := events.ValidateID("team", k.Team); err != nil {
			return err
		}
		if err := events.ValidateID("key", k.Key); err != nil {
			return err
		}
	}
	if s.OlderThan < 0 {
		return fmt.Errorf("jobs: --older-than must not be negative")
	}
	return nil
}

// Target is one key of a plan: the event it is rotated with.
type Target struct {
	Team string `json:"team"`
	Key  string `json:"key"`
	// Generation and EventID are fixed when the job is planned, so that a
	// resumed job publishes the very same event.
	Generation uint64 `json:"generation"`
	EventID    string `json:"event_id"`
	// Backend and SecretRef are where the ledger placed the key (for the
	// dry run and status; the worker decides where it writes).
	Backend   string `json:"backend,omitempty"`
	SecretRef string `json:"secret_ref,omitempty"`
}

// Select reads the ledger once and returns the keys s selects, by team and
// key, each with the generation its rotation will carry: the later of the
// ledger's generation plus one and now in microseconds (the clock source
// docs/events.md recommends to publishers, so a job's rotation orders
// after every event the gateway published before it). A ledger entry in
// scope that cannot be used (a key that is not <team>.<key>, a value that
// does not decode) makes it fail once the others are read (a
// *worker.SkippedEntriesError naming them); SelectWith reports them and
// goes on.
func Select(ctx context.Context, l *worker.Ledger, s Selection, now time.Time) ([]Target, error) {
	return SelectWith(ctx, l, s, now, nil)
}

// SelectWith is Select with the ledger entries in scope that cannot be
// used reported to skipped (never a value) instead of failing: they are
// not selected, and the other keys are. Only the teams in scope are read
// and decoded.
func SelectWith(ctx context.Context, l *worker.Ledger, s Selection, now time.Time, skipped func(worker.SkippedEntry)) ([]Target, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	want := map[TeamKey]bool{}
	for _, k := range s.Keys {
		want[k] = true
	}
	o := worker.AllOptions{Skipped: skipped}
	switch {
	case len(s.Teams) > 0 && (len(s.Keys) > 0 || !s.All):
		o.Teams = s.Teams
	case len(s.Keys) > 0:
		for _, k := range s.Keys {
			if !slices.Contains(o.Teams, k.Team) {
				o.Teams = append(o.Teams, k.Team)
			}
		}
	}
	var out []Target
	err := l.AllWith(ctx, o, func(k string, e *worker.LedgerEntry, _ uint64) error {
		team, key, err := worker.ParseLedgerKey(k)
		if err != nil {
			return err
		}
		switch {
		case e.Generation == 0 || e.Status == events.StatusDeleted || e.Sealed == nil:
			return nil // never written, or deleted: nothing to rotate
		case len(want) > 0 && !want[TeamKey{team, key}]:
			return nil
		case len(want) == 0 && !s.All && !slices.Contains(s.Teams, team):
			return nil
		case len(want) > 0 && len(s.Teams) > 0 && !slices.Contains(s.Teams, team):
			return nil
		case s.Backend != "" && e.Provider != s.Backend:
			return nil
		case s.OlderThan > 0 && now.Sub(e.UpdatedAt) < s.OlderThan:
			return nil
		}
		out = append(out, Target{Team: team, Key: key, Generation: max(e.Generation+1, uint64(now.UnixMicro())),
			Backend: e.Provider, SecretRef: e.SecretRef})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("jobs: read the ledger: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Team != out[j].Team {
			return out[i].Team < out[j].Team
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// ParseAge reads an age such as 90d, 36h or 1h30m: Go's durations plus a
// day suffix (24h).
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(d, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("age %q: want a whole number of days, such as 90d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("age %q: want a duration such as 90d or 12h", s)
	}
	return d, nil
}
