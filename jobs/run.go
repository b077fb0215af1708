package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// Spec is a new job: what to select and how to publish.
type Spec struct {
	// ID of the job; empty: a fresh one (NewID).
	ID        string
	Selection Selection
	Format    KeyFormat
	// Rate caps events published per second (0: no cap).
	Rate float64
	// Grace is carried by every event as grace_period_seconds.
	Grace time.Duration
	// Window bounds the published and unconfirmed events (0:
	// WindowDefault); see WindowDefault.
	Window int
}

// Deps are what a job reads and publishes with.
type Deps struct {
	JS     jetstream.JetStream
	Ledger *worker.Ledger
	Store  *Store
	// Sealer seals the generated values (the gateway's keyring or KMS).
	Sealer events.Sealer
	Logger *zap.Logger
	// LedgerSkipped is told of every ledger entry in a selection's scope
	// that cannot be used (never a value); the key is not selected, the
	// others are. Nil: each is logged as a warning on Logger.
	LedgerSkipped func(worker.SkippedEntry)
}

// Plan selects the keys of spec and creates the job (not yet published):
// the record and its plan are saved before any event is published.
func Plan(ctx context.Context, d Deps, spec Spec) (*Job, []Target, error) {
	if err := spec.Format.Validate(); err != nil {
		return nil, nil, err
	}
	if spec.Rate < 0 || spec.Grace < 0 {
		return nil, nil, errors.New("jobs: rate and grace must not be negative")
	}
	if spec.Window < 0 {
		return nil, nil, errNoWindow
	}
	now := time.Now().UTC()
	skipped := d.LedgerSkipped
	if skipped == nil {
		log := d.Logger
		if log == nil {
			log = zap.NewNop()
		}
		skipped = func(se worker.SkippedEntry) {
			log.Warn("ledger entry skipped: it cannot be used, its key is not selected (repair or delete it)",
				zap.String("key", se.Key), zap.String("reason", se.Reason))
		}
	}
	plan, err := SelectWith(ctx, d.Ledger, spec.Selection, now, skipped)
	if err != nil {
		return nil, nil, err
	}
	for i := range plan {
		plan[i].EventID = uuid.NewString()
	}
	id := spec.ID
	if id == "" {
		id = NewID(now)
	}
	j := &Job{ID: id, Selection: spec.Selection, Format: spec.Format.withDefaults(), Rate: spec.Rate, GraceSeconds: int64(spec.Grace / time.Second), Window: spec.Window,
		Total: len(plan), State: StateRunning, Created: now, Updated: now}
	return j, plan, nil
}

// Progress counts a job's publishing so far.
type Progress struct {
	Published, Total int
	Elapsed          time.Duration
}

// saveEvery is how often a running job saves its cursor (and sees a
// cancel).
const saveEvery = time.Second

// ErrCancelled: the job was cancelled while it ran.
var ErrCancelled = errors.New("job cancelled")

// Run publishes job id's events from its cursor: for each key a fresh
// value, sealed, in a key.rotated event with the plan's event id and
// generation and the job's id. It saves the cursor every second, stops
// when the job is cancelled, and marks the job published at the end. A
// job another process saved less than three seconds ago is refused (it may
// still be running).
func Run(ctx context.Context, d Deps, id string, progress func(Progress)) (*Job, error) {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	j, rev, err := d.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.State != StateRunning {
		return j, fmt.Errorf("job %s is %s: nothing to publish", id, j.State)
	}
	host, _ := os.Hostname()
	me := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	if age := time.Since(j.Updated); j.Holder != "" && age < 3*saveEvery {
		return j, fmt.Errorf("job %s was saved by %s %v ago: it may still be running", id, j.Holder, age.Round(time.Millisecond))
	}
	plan, err := d.Store.Plan(ctx, id)
	if err != nil {
		return j, err
	}
	if len(plan) != j.Total || j.Cursor < 0 || j.Cursor > len(plan) {
		return j, fmt.Errorf("job %s: the plan holds %d keys, the record %d (cursor %d)", id, len(plan), j.Total, j.Cursor)
	}
	j.Holder, j.Updated = me, time.Now().UTC()
	if rev, err = d.Store.put(ctx, j, rev); err != nil {
		return j, fmt.Errorf("jobs: take job %s: %w", id, err)
	}
	// save stores the cursor; it reports a cancel or another holder.
	save := func(ctx context.Context, final State) error {
		for {
			j.Updated = time.Now().UTC()
			cur := *j
			if final != "" {
				cur.State, cur.Holder = final, ""
			}
			nrev, err := d.Store.put(ctx, &cur, rev)
			if err == nil {
				rev, *j = nrev, cur
				return nil
			}
			if !isConflict(err) {
				return err
			}
			now, nrev2, gerr := d.Store.Get(ctx, id)
			if gerr != nil {
				return gerr
			}
			switch {
			case now.State == StateCancelled:
				j.State = StateCancelled
				return ErrCancelled
			case now.Holder != me:
				return fmt.Errorf("job %s was taken over by %s", id, now.Holder)
			}
			rev = nrev2
		}
	}
	// stop saves the cursor of a run that ends early and lets go of the
	// job, so that a resume need not wait.
	stop := func() {
		j.Holder, j.Waiting = "", ""
		if err := save(context.WithoutCancel(ctx), ""); err != nil && !errors.Is(err, ErrCancelled) {
			d.Logger.Warn("job cursor not saved; a resume publishes more again (idempotently)", zap.String("job", id), zap.Error(err))
		}
	}
	lim := rate.NewLimiter(rate.Inf, 1)
	if j.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(j.Rate), 1)
	}
	pub := client.NewPublisher(d.JS)
	window := j.Window
	if window <= 0 {
		window = WindowDefault
	}
	// The window counts the events this run publishes: those a stopped run
	// published before its cursor may have had their confirmations aged
	// out of the confirmations stream since (a resume days later), and
	// counting them as unconfirmed would hold the job for good.
	base := j.Cursor
	conf := newConfirmed()
	followCtx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	go conf.follow(followCtx, d.JS, j.ID, plan[base:], j.Created.Add(-time.Minute))
	start, lastSave := time.Now(), time.Now()
	laneFull := false
	for j.Cursor < len(plan) {
		// Wait for the rate, saving the cursor every second meanwhile:
		// a low rate must not make the job look abandoned (and taken
		// over), nor keep a cancel unseen.
		for r := lim.Reserve(); ; {
			d := r.Delay()
			if d <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				r.Cancel()
				stop()
				return j, ctx.Err()
			case <-time.After(min(d, saveEvery)):
			}
			if time.Since(lastSave) >= saveEvery {
				if err := save(ctx, ""); err != nil {
					r.Cancel()
					if !errors.Is(err, ErrCancelled) {
						stop()
					}
					return j, err
				}
				lastSave = time.Now()
			}
		}
		// Wait for the window, saving the cursor every second meanwhile:
		// that keeps the job held (and sees a cancel) while workers are
		// slow or stopped.
		for {
			wctx, cancel := context.WithTimeout(ctx, saveEvery)
			err := conf.waitWindow(wctx, j.Cursor-base, window)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				stop()
				return j, ctx.Err()
			}
			n, _ := conf.get()
			j.Waiting = fmt.Sprintf("%d published events not confirmed yet (the job's window is %d): waiting for the workers (slow, stopped, or failing to reach a backend)",
				j.Cursor-base-n, window)
			if ferr := conf.lastErr(); ferr != nil {
				j.Waiting += "; following the confirmations fails: " + ferr.Error()
			}
			if err := save(ctx, ""); err != nil {
				if !errors.Is(err, ErrCancelled) {
					stop()
				}
				return j, err
			}
			lastSave = time.Now()
		}
		if err := publishOne(ctx, d, pub, j, plan[j.Cursor]); err != nil {
			if !client.IsStreamFull(err) || ctx.Err() != nil {
				stop()
				return j, err
			}
			// The bulk lane is full of events the workers have not handled
			// yet (they trim only handled ones): the event was not stored.
			// Wait for room, saving the cursor (and seeing a cancel)
			// meanwhile, and publish it again.
			if !laneFull {
				d.Logger.Warn("bulk lane full of events not yet handled (streams.events_max_bytes): the job waits for the workers", zap.String("job", id))
			}
			laneFull = true
			j.Waiting = "the bulk lane is full of events the workers have not handled yet (streams.events_max_bytes): waiting for room"
			select {
			case <-ctx.Done():
				stop()
				return j, ctx.Err()
			case <-time.After(saveEvery):
			}
			if err := save(ctx, ""); err != nil {
				if !errors.Is(err, ErrCancelled) {
					stop()
				}
				return j, err
			}
			lastSave = time.Now()
			continue
		}
		laneFull = false
		j.Waiting = ""
		j.Cursor++
		if progress != nil {
			progress(Progress{Published: j.Cursor, Total: j.Total, Elapsed: time.Since(start)})
		}
		if time.Since(lastSave) >= saveEvery {
			if err := save(ctx, ""); err != nil {
				if !errors.Is(err, ErrCancelled) {
					stop()
				}
				return j, err
			}
			lastSave = time.Now()
		}
	}
	if err := save(context.WithoutCancel(ctx), StatePublished); err != nil {
		return j, err
	}
	return j, nil
}

// publishOne publishes t's event with a fresh value.
func publishOne(ctx context.Context, d Deps, pub *client.Publisher, j *Job, t Target) error {
	value, err := j.Format.NewKey()
	if err != nil {
		return err
	}
	defer clear(value)
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: t.EventID, Type: events.KeyRotated, Time: time.Now().UTC(),
		TeamID: t.Team, KeyID: t.Key, Generation: t.Generation, JobID: j.ID}
	sv, err := d.Sealer.Seal(ctx, value, events.BindingOf(ev))
	if err != nil {
		return fmt.Errorf("jobs: seal the value of %s/%s: %w", t.Team, t.Key, err)
	}
	ev.Data, err = json.Marshal(events.KeyData{Value: sv, GracePeriodSeconds: j.GraceSeconds})
	if err != nil {
		return err
	}
	if _, err := pub.PublishIn(ctx, events.LaneBulk, ev); err != nil {
		return fmt.Errorf("jobs: publish %s/%s: %w", t.Team, t.Key, err)
	}
	return nil
}
