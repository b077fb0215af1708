package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// Failure is one key the job could not rotate: the confirmation's reason,
// never a value.
type Failure struct {
	Team   string        `json:"team"`
	Key    string        `json:"key"`
	Status events.Status `json:"status"`
	Reason string        `json:"reason,omitempty"`
}

// Status is a job's progress, counted from the confirmations of its plan's
// events.
type Status struct {
	Job Job `json:"job"`
	// Rotated: confirmed rotated (or stored). Superseded: a newer event of
	// the key was applied first (the key was rotated anyway, by someone
	// else). Failed: rejected, failed or skipped, with Failures.
	Rotated    int `json:"rotated"`
	Superseded int `json:"superseded"`
	Failed     int `json:"failed"`
	// Remaining: not confirmed yet (published or not).
	Remaining int       `json:"remaining"`
	Failures  []Failure `json:"failures,omitempty"`
	// Rate is confirmations per second between the first and the last
	// one; ETA is Remaining at that rate (0 when unknown or done).
	Rate float64       `json:"rate"`
	ETA  time.Duration `json:"eta"`
	// Stalled says why a job with events left to publish is not
	// progressing: its publisher waits (Job.Waiting), or none has saved
	// it for a while (it stopped, crashed, or was never started: `keyrelay
	// jobs resume` continues it). "" otherwise.
	Stalled string `json:"stalled,omitempty"`
}

// Done reports whether every event of the job is confirmed (or the job was
// cancelled and everything it published is).
func (s *Status) Done() bool {
	if s.Job.State == StateCancelled {
		return s.Rotated+s.Superseded+s.Failed >= s.Job.Cursor
	}
	return s.Remaining == 0
}

// GetStatus counts job id's confirmations: one direct read of the
// confirmations stream per planned event (its subject holds at most one),
// statusReads of them in flight at once.
func GetStatus(ctx context.Context, js jetstream.JetStream, store *Store, id string) (*Status, error) {
	return NewStatusReader(js, store, id).Read(ctx)
}

// StatusReader reads one job's status again and again (`jobs status
// --watch`): the plan is read once, and an event confirmed rotated, stored
// or superseded is not read again (its confirmation is final), so each
// read asks only for the events still open or failed (a failure can be
// retried from the DLQ). A status read every second of a 100,000-key job
// would otherwise read every confirmation every second while the workers
// write them.
type StatusReader struct {
	js    jetstream.JetStream
	store *Store
	id    string

	plan    []Target
	settled []*events.Confirmation // by plan index; nil: read it again
}

// NewStatusReader returns a reader of job id's status.
func NewStatusReader(js jetstream.JetStream, store *Store, id string) *StatusReader {
	return &StatusReader{js: js, store: store, id: id}
}

// Read returns the job's status now.
func (r *StatusReader) Read(ctx context.Context) (*Status, error) {
	j, _, err := r.store.Get(ctx, r.id)
	if err != nil {
		return nil, err
	}
	if r.plan == nil {
		plan, err := r.store.Plan(ctx, r.id)
		if err != nil {
			return nil, err
		}
		r.plan, r.settled = plan, make([]*events.Confirmation, len(plan))
	}
	stream, err := r.js.Stream(ctx, worker.ConfirmationsStream)
	if err != nil {
		return nil, err
	}
	open := make([]int, 0, len(r.plan))
	for i, c := range r.settled {
		if c == nil {
			open = append(open, i)
		}
	}
	confs := slices.Clone(r.settled)
	read, err := planConfirmations(ctx, stream, r.plan, open)
	if err != nil {
		return nil, err
	}
	for k, i := range open {
		c := read[k]
		confs[i] = c
		if c != nil && (c.Status == events.StatusRotated || c.Status == events.StatusStored || c.Status == events.StatusSuperseded) {
			r.settled[i] = c
		}
	}
	plan := r.plan
	st := &Status{Job: *j}
	if j.State == StateRunning {
		switch age := time.Since(j.Updated); {
		case age >= 3*saveEvery:
			st.Stalled = fmt.Sprintf("no publisher has saved it for %v (stopped, crashed, or never started) at %d of %d events: continue it with keyrelay jobs resume %s",
				age.Round(time.Second), j.Cursor, j.Total, j.ID)
		case j.Waiting != "":
			st.Stalled = j.Waiting
		}
	}
	var first, last time.Time
	for i, t := range plan {
		c := confs[i]
		if c == nil {
			st.Remaining++
			continue
		}
		switch c.Status {
		case events.StatusRotated, events.StatusStored:
			st.Rotated++
		case events.StatusSuperseded:
			st.Superseded++
		default:
			st.Failed++
			st.Failures = append(st.Failures, Failure{Team: t.Team, Key: t.Key, Status: c.Status, Reason: c.Reason})
		}
		if first.IsZero() || c.Time.Before(first) {
			first = c.Time
		}
		if c.Time.After(last) {
			last = c.Time
		}
	}
	sort.Slice(st.Failures, func(a, b int) bool {
		if st.Failures[a].Team != st.Failures[b].Team {
			return st.Failures[a].Team < st.Failures[b].Team
		}
		return st.Failures[a].Key < st.Failures[b].Key
	})
	if n := st.Rotated + st.Superseded + st.Failed; n > 1 && last.After(first) {
		st.Rate = float64(n-1) / last.Sub(first).Seconds()
		if st.Remaining > 0 && j.State != StateCancelled {
			st.ETA = time.Duration(float64(st.Remaining) / st.Rate * float64(time.Second))
		}
	}
	return st, nil
}

// statusReads bounds the confirmation reads GetStatus keeps in flight: one
// at a time, a 100,000-key job's status took 100,000 round trips end to
// end (tens of seconds, minutes on a cluster).
const statusReads = 32

// planConfirmations reads the confirmation of the planned events at the
// plan indexes in which, in that order: nil where there is none yet, or
// where the subject holds something that is not this event's confirmation
// (counted as open).
func planConfirmations(ctx context.Context, stream jetstream.Stream, plan []Target, which []int) ([]*events.Confirmation, error) {
	out := make([]*events.Confirmation, len(which))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(statusReads, len(which)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := plan[which[i]]
				m, err := stream.GetLastMsgForSubject(ctx, events.ConfirmationSubject(t.Team, t.Key, t.EventID))
				if errors.Is(err, jetstream.ErrMsgNotFound) {
					continue
				}
				if err != nil {
					cancel(err)
					continue
				}
				var c events.Confirmation
				if json.Unmarshal(m.Data, &c) == nil && c.EventID == t.EventID {
					out[i] = &c
				}
			}
		}()
	}
send:
	for i := range which {
		select {
		case next <- i:
		case <-ctx.Done():
			break send
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return out, nil
}
