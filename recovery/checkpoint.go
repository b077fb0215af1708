package recovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/kvlist"
)

// A restore keeps a checkpoint in JetStream so that `keyrelay restore
// --resume` continues a run that was killed without reading every secret
// again: its plan (the drift rows to fix, no values) in the recovery object
// store, and which rows are done in the recovery bucket, saved about once a
// second. Rows done but not yet saved when the run died are done again,
// which writes nothing new: restore writes are idempotent by event id.

// Checkpoint is one restore run's progress.
type Checkpoint struct {
	ID string `json:"id"`
	// Scope of the run (as RestoreConfig).
	Teams   []string `json:"teams,omitempty"`
	All     bool     `json:"all,omitempty"`
	Backend string   `json:"backend,omitempty"`
	Adopt   bool     `json:"adopt,omitempty"`
	// Holder is the process working on it; Updated when it last saved.
	Holder  string    `json:"holder"`
	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
	// Total rows in the plan; Done is a bitmap over them.
	Total    int    `json:"total"`
	Done     []byte `json:"done"`
	Finished bool   `json:"finished"`
}

func (c *Checkpoint) isDone(i int) bool { return c.Done[i/8]&(1<<(i%8)) != 0 }
func (c *Checkpoint) setDone(i int)     { c.Done[i/8] |= 1 << (i % 8) }

// Count of rows done.
func (c *Checkpoint) Count() int {
	n := 0
	for i := range c.Total {
		if c.isDone(i) {
			n++
		}
	}
	return n
}

func (c *Checkpoint) sameScope(cfg RestoreConfig) bool {
	a, b := slices.Clone(c.Teams), slices.Clone(cfg.Teams)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b) && c.All == cfg.All && c.Backend == cfg.Backend && c.Adopt == cfg.Adopt
}

// Checkpoints stores restore checkpoints: state in the recovery bucket
// (worker.RecoveryBucket) and plans in the recovery object store
// (worker.RecoveryObjects).
type Checkpoints struct {
	KV jetstream.KeyValue
	OS jetstream.ObjectStore
	// JS reaches the bucket's stream, so Latest can read its subjects
	// (kvlist.Keys).
	JS jetstream.JetStream
}

func checkpointKey(id string) string { return "restore." + id }
func planName(id string) string      { return "restore/" + id + "/plan" }

// ErrNoCheckpoint: there is no unfinished restore to resume.
var ErrNoCheckpoint = errors.New("no unfinished restore to resume")

// save stores c's state.
func (s *Checkpoints) save(ctx context.Context, c *Checkpoint) error {
	c.Updated = time.Now().UTC()
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = s.KV.Put(ctx, checkpointKey(c.ID), b)
	return err
}

func (s *Checkpoints) savePlan(ctx context.Context, id string, plan []Row) error {
	b, err := json.Marshal(plan)
	if err != nil {
		return err
	}
	_, err = s.OS.Put(ctx, jetstream.ObjectMeta{Name: planName(id), Description: "keyrelay restore plan (drift rows, no values)"}, bytes.NewReader(b))
	return err
}

// Load returns run id's checkpoint and plan.
func (s *Checkpoints) Load(ctx context.Context, id string) (*Checkpoint, []Row, error) {
	e, err := s.KV.Get(ctx, checkpointKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil, fmt.Errorf("restore %s: %w", id, ErrNoCheckpoint)
	}
	if err != nil {
		return nil, nil, err
	}
	var c Checkpoint
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: %w", id, err)
	}
	b, err := s.OS.GetBytes(ctx, planName(id))
	if err != nil {
		return nil, nil, fmt.Errorf("plan of restore %s: %w", id, err)
	}
	var plan []Row
	if err := json.Unmarshal(b, &plan); err != nil {
		return nil, nil, fmt.Errorf("plan of restore %s: %w", id, err)
	}
	if len(plan) != c.Total || len(c.Done) != (c.Total+7)/8 {
		return nil, nil, fmt.Errorf("checkpoint %s does not match its plan (%d rows, %d planned)", id, c.Total, len(plan))
	}
	return &c, plan, nil
}

// Latest returns the id of the most recent unfinished restore with cfg's
// scope (any scope when cfg names none).
func (s *Checkpoints) Latest(ctx context.Context, cfg RestoreConfig) (string, error) {
	keys, err := kvlist.Keys(ctx, s.JS, s.KV, "restore.*")
	if err != nil {
		return "", err
	}
	var best *Checkpoint
	for _, k := range keys {
		e, err := s.KV.Get(ctx, k)
		if err != nil {
			continue
		}
		var c Checkpoint
		anyScope := len(cfg.Teams) == 0 && !cfg.All
		if json.Unmarshal(e.Value(), &c) != nil || c.Finished || (!anyScope && !c.sameScope(cfg)) {
			continue
		}
		if best == nil || c.Started.After(best.Started) {
			best = &c
		}
	}
	if best == nil {
		return "", ErrNoCheckpoint
	}
	return best.ID, nil
}

// Delete drops a finished run's checkpoint and plan.
func (s *Checkpoints) Delete(ctx context.Context, id string) error {
	err := s.OS.Delete(ctx, planName(id))
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return err
	}
	return s.KV.Delete(ctx, checkpointKey(id))
}

// validRunID accepts the ids Restore makes (and nothing that could escape
// a KV key or object name).
func validRunID(id string) bool {
	return id != "" && len(id) <= 128 && !strings.ContainsAny(id, ". */>\t\n")
}
