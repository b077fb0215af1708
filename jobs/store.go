package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/kvlist"
)

// Names of the JetStream resources jobs keep their state in.
const (
	// Bucket holds one record per job (job.<id>): selection, cursor, state.
	Bucket = "KEYRELAY_JOBS"
	// Plans holds each job's plan (keys, event ids, generations; never a
	// value), named by job id. Plans expire after PlanMaxAge.
	Plans      = "KEYRELAY_JOB_PLANS"
	PlanMaxAge = 90 * 24 * time.Hour
)

// State of a job.
type State string

// Job states.
const (
	// StateRunning: created, or being published (or interrupted: a
	// running job whose holder stopped saving can be resumed).
	StateRunning State = "running"
	// StatePublished: every event of the plan was published; status
	// counts their confirmations.
	StatePublished State = "published"
	// StateCancelled: stopped by `keyrelay jobs cancel`; events already
	// published are still applied.
	StateCancelled State = "cancelled"
)

// Job is a job's durable record. It never holds a value.
type Job struct {
	ID        string    `json:"id"`
	Selection Selection `json:"selection"`
	Format    KeyFormat `json:"format"`
	// Rate caps events published per second (0: as fast as possible).
	Rate float64 `json:"rate,omitempty"`
	// GraceSeconds is carried by every event (grace_period_seconds).
	GraceSeconds int64 `json:"grace_seconds,omitempty"`
	// Window bounds the job's published and unconfirmed events (0:
	// WindowDefault), which shares the bulk lane between jobs.
	Window int `json:"window,omitempty"`
	Total  int `json:"total"`
	// Cursor: the plan's first Cursor events were published (acknowledged
	// by the stream).
	Cursor  int       `json:"cursor"`
	State   State     `json:"state"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Holder names the process publishing it ("" when none).
	Holder string `json:"holder,omitempty"`
	// Waiting says why its publisher is not publishing (a full bulk lane,
	// a window of events the workers have not confirmed), saved every
	// second while it waits; "" while it publishes.
	Waiting string `json:"waiting,omitempty"`
}

// Validate checks a job record, as stored, before anything acts on it: a
// record is read back from a bucket any client with access can write, so
// it is checked like any other input. It names the bad field.
func (j *Job) Validate() error {
	if err := events.ValidateID("job id", j.ID); err != nil {
		return err
	}
	switch j.State {
	case StateRunning, StatePublished, StateCancelled:
	default:
		return fmt.Errorf("job %s: state %q is not running, published or cancelled", j.ID, j.State)
	}
	switch {
	case j.Total < 0:
		return fmt.Errorf("job %s: total %d is negative", j.ID, j.Total)
	case j.Cursor < 0 || j.Cursor > j.Total:
		return fmt.Errorf("job %s: cursor %d is outside 0..%d (the plan's keys)", j.ID, j.Cursor, j.Total)
	case j.Rate < 0 || math.IsNaN(j.Rate) || math.IsInf(j.Rate, 0):
		return fmt.Errorf("job %s: rate %v is not a rate (events per second, 0 or more)", j.ID, j.Rate)
	case j.GraceSeconds < 0:
		return fmt.Errorf("job %s: grace_seconds %d is negative", j.ID, j.GraceSeconds)
	case j.Window < 0:
		return fmt.Errorf("job %s: %w", j.ID, errNoWindow)
	case j.Selection.OlderThan < 0:
		return fmt.Errorf("job %s: selection older_than is negative", j.ID)
	case j.Selection.KeysCount < 0:
		return fmt.Errorf("job %s: selection keys_count is negative", j.ID)
	}
	if err := j.Format.Validate(); err != nil {
		return fmt.Errorf("job %s: %w", j.ID, err)
	}
	return nil
}

// validatePlan checks a plan as read back (or before it is saved): every
// target names a valid team, key and event id and carries a generation
// (the bulk lane requires one).
func validatePlan(id string, plan []Target) error {
	for i, t := range plan {
		if err := events.ValidateID("team", t.Team); err != nil {
			return fmt.Errorf("job %s: plan entry %d: %w", id, i, err)
		}
		if err := events.ValidateID("key", t.Key); err != nil {
			return fmt.Errorf("job %s: plan entry %d: %w", id, i, err)
		}
		if err := events.ValidateID("event id", t.EventID); err != nil {
			return fmt.Errorf("job %s: plan entry %d: %w", id, i, err)
		}
		if t.Generation == 0 {
			return fmt.Errorf("job %s: plan entry %d (%s/%s) has no generation", id, i, t.Team, t.Key)
		}
	}
	return nil
}

// NewID returns a fresh job id (a valid event id and bucket key).
func NewID(now time.Time) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "job-" + now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

// ErrNotFound: no job with that id.
var ErrNotFound = errors.New("no such job")

// Store keeps jobs in JetStream.
type Store struct {
	KV jetstream.KeyValue
	OS jetstream.ObjectStore
	// JS reaches the bucket's stream, so List can read its subjects
	// (kvlist.Keys); EnsureStore and OpenStore set it.
	JS jetstream.JetStream
	// Logger receives a warning for each record List skips (naming its
	// key, never its bytes). Nil: none is logged; the skipped records are
	// still in List's error.
	Logger *zap.Logger
}

// EnsureStore creates (or opens) the bucket and the object store.
func EnsureStore(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1,
		Description: "keyrelay bulk jobs: selection, cursor and state (no values)", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("jobs: bucket %s: %w", Bucket, err)
	}
	os, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: Plans, TTL: PlanMaxAge,
		Description: "keyrelay bulk job plans: keys, event ids and generations (no values)", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("jobs: object store %s: %w", Plans, err)
	}
	return &Store{KV: kv, OS: os, JS: js}, nil
}

// OpenStore opens the existing bucket and object store, changing nothing
// (for readers: a gateway following a job, `jobs status`).
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("jobs: bucket %s: %w", Bucket, err)
	}
	os, err := js.ObjectStore(ctx, Plans)
	if err != nil {
		return nil, fmt.Errorf("jobs: object store %s: %w", Plans, err)
	}
	return &Store{KV: kv, OS: os, JS: js}, nil
}

func recordKey(id string) string { return "job." + id }

// Create saves a new job and its plan (the plan first: a record always has
// its plan).
func (s *Store) Create(ctx context.Context, j *Job, plan []Target) error {
	if err := j.Validate(); err != nil {
		return err
	}
	if err := validatePlan(j.ID, plan); err != nil {
		return err
	}
	b, err := json.Marshal(plan)
	if err != nil {
		return err
	}
	if _, err := s.OS.Put(ctx, jetstream.ObjectMeta{Name: j.ID}, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("jobs: save the plan: %w", err)
	}
	// A keys file's keys are in the plan (those selected); the record,
	// rewritten every second while the job runs and limited to one NATS
	// message, keeps only their number.
	r := *j
	if n := len(r.Selection.Keys); n > 0 {
		r.Selection.Keys, r.Selection.KeysCount = nil, n
	}
	rec, _ := json.Marshal(&r)
	if _, err := s.KV.Create(ctx, recordKey(j.ID), rec); err != nil {
		return fmt.Errorf("jobs: save job %s: %w", j.ID, err)
	}
	return nil
}

// Get returns a job's record and its revision.
func (s *Store) Get(ctx context.Context, id string) (*Job, uint64, error) {
	if err := events.ValidateID("job id", id); err != nil {
		return nil, 0, err
	}
	e, err := s.KV.Get(ctx, recordKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, fmt.Errorf("job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("jobs: read job %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, 0, fmt.Errorf("jobs: job %s is corrupt: %w", id, err)
	}
	if j.ID != id {
		return nil, 0, fmt.Errorf("jobs: job %s is corrupt: its record names job %q", id, j.ID)
	}
	if err := j.Validate(); err != nil {
		return nil, 0, fmt.Errorf("jobs: job %s is corrupt, refused: %w", id, err)
	}
	return &j, e.Revision(), nil
}

// Plan returns a job's plan.
func (s *Store) Plan(ctx context.Context, id string) ([]Target, error) {
	b, err := s.OS.GetBytes(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("job %s: the plan is gone (plans are kept %v): %w", id, PlanMaxAge, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("jobs: read the plan of %s: %w", id, err)
	}
	var plan []Target
	if err := json.Unmarshal(b, &plan); err != nil {
		return nil, fmt.Errorf("jobs: the plan of %s is corrupt: %w", id, err)
	}
	if err := validatePlan(id, plan); err != nil {
		return nil, fmt.Errorf("jobs: the plan of %s is corrupt, refused: %w", id, err)
	}
	return plan, nil
}

// put saves j at revision rev and returns the new revision.
func (s *Store) put(ctx context.Context, j *Job, rev uint64) (uint64, error) {
	b, _ := json.Marshal(j)
	return s.KV.Update(ctx, recordKey(j.ID), b, rev)
}

// ErrCorrupt matches (errors.Is) the error List returns when it skipped
// records it could not use: a *ListError, listing them.
var ErrCorrupt = errors.New("corrupt job records")

// Skipped is a bucket record List could not use.
type Skipped struct {
	// Key is the record's key in Bucket; Revision the revision read.
	Key      string
	Revision uint64
	// Reason says what is wrong with it, without its content.
	Reason string
}

// ListError is List's error when it skipped records: the jobs List
// returns with it are the good ones. It holds keys and reasons, never a
// record's bytes.
type ListError struct {
	Skipped []Skipped
}

func (e *ListError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "jobs: %d record(s) in bucket %s skipped as corrupt:", len(e.Skipped), Bucket)
	for i, sk := range e.Skipped {
		if i > 0 {
			b.WriteString(";")
		}
		fmt.Fprintf(&b, " %s (%s)", sk.Key, sk.Reason)
	}
	return b.String()
}

// Is matches ErrCorrupt.
func (e *ListError) Is(target error) bool { return target == ErrCorrupt }

// List returns every job, newest first. A record that is not a valid job
// record (undecodable, invalid as Get checks it, or under another job's
// key) is skipped, logged as a warning naming its key, and reported: the
// error is then a *ListError (errors.Is ErrCorrupt) listing the skipped
// keys, returned together with the good jobs. Any other error (reading the
// bucket) comes with no jobs.
func (s *Store) List(ctx context.Context) ([]Job, error) {
	keys, err := kvlist.Keys(ctx, s.JS, s.KV, "")
	if err != nil {
		return nil, err
	}
	var out []Job
	var skipped []Skipped
	for _, k := range keys {
		e, err := s.KV.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("jobs: read %s: %w", k, err)
		}
		j, reason := decodeRecord(k, e.Value())
		if reason != "" {
			skipped = append(skipped, Skipped{Key: k, Revision: e.Revision(), Reason: reason})
			if s.Logger != nil {
				s.Logger.Warn("jobs: skipped a corrupt job record", zap.String("bucket", Bucket), zap.String("key", k),
					zap.Uint64("revision", e.Revision()), zap.String("reason", reason))
			}
			continue
		}
		out = append(out, *j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Created.After(out[b].Created) })
	if len(skipped) > 0 {
		return out, &ListError{Skipped: skipped}
	}
	return out, nil
}

// decodeRecord decodes and checks the record under key, as Get does. The
// reason it gives for a bad record never quotes the record.
func decodeRecord(key string, b []byte) (*Job, string) {
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Sprintf("not JSON (invalid at byte %d of %d)", se.Offset, len(b))
		case errors.As(err, &te) && te.Field != "":
			return nil, fmt.Sprintf("field %s has the wrong type", te.Field)
		}
		return nil, "not a job record"
	}
	if id, ok := strings.CutPrefix(key, "job."); !ok || j.ID != id {
		return nil, "not the record of the job its key names"
	}
	if err := j.Validate(); err != nil {
		return nil, "invalid (keyrelay jobs status " + j.ID + " says why)"
	}
	return &j, ""
}

// Cancel marks a job cancelled; its publisher stops at its next save (at
// most a second later). Events already published are still applied.
func (s *Store) Cancel(ctx context.Context, id string) (*Job, error) {
	for {
		j, rev, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if j.State != StateRunning {
			return j, fmt.Errorf("job %s is %s: nothing to cancel", id, j.State)
		}
		j.State, j.Updated = StateCancelled, time.Now().UTC()
		if _, err := s.put(ctx, j, rev); err == nil {
			return j, nil
		} else if !isConflict(err) {
			return nil, err
		}
	}
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}
