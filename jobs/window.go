package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// WindowDefault is how many of a job's events may be published and not yet
// confirmed (Job.Window 0).
//
// The window is what shares the bulk lane fairly. The lane is one stream
// consumed in order; a job that published all of its 50,000 events at once
// would hold every other job behind them until it finished. Holding each
// job to a window of unconfirmed events keeps the lane's backlog at about
// one window per running job, interleaved in the stream, so jobs running
// at once progress at about the same rate whatever their sizes, and a
// cancel stops a job within one window. 512 is far above what the workers
// hold in flight (bulk_concurrency per process), so the window never idles
// them.
const WindowDefault = 512

// confirmed counts the confirmations of one job, following the
// confirmations stream from the job's creation.
type confirmed struct {
	mu      sync.Mutex
	n       int
	changed chan struct{} // closed and replaced on every count
	err     error
}

func newConfirmed() *confirmed { return &confirmed{changed: make(chan struct{})} }

func (c *confirmed) add(n int) {
	c.mu.Lock()
	c.n += n
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *confirmed) get() (int, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.changed
}

// follow counts the confirmations of job id's planned events, published
// since since, until ctx ends: one per event of the plan, whatever the
// number of confirmations of it. job_id is only a filter: any publisher
// can put a job's id on its own events, so a confirmation counts only
// when its event id is one of the plan's and its team and key (and
// subject) are that event's. A consumer that fails (NATS trouble) is
// recreated where it stopped: the ordered consumer resumes after the last
// sequence it delivered.
func (c *confirmed) follow(ctx context.Context, js jetstream.JetStream, id string, plan []Target, since time.Time) {
	needle := []byte(`"job_id":"` + id + `"`)
	planned := make(map[string]Target, len(plan))
	for _, t := range plan {
		planned[t.EventID] = t
	}
	counted := map[string]bool{}
	var after uint64
	for ctx.Err() == nil {
		occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since}
		if after > 0 {
			occ = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1}
		}
		err := func() error {
			cons, err := js.OrderedConsumer(ctx, worker.ConfirmationsStream, occ)
			if err != nil {
				return err
			}
			it, err := cons.Messages()
			if err != nil {
				return err
			}
			c.mu.Lock()
			c.err = nil // following again
			c.mu.Unlock()
			defer it.Stop()
			go func() { <-ctx.Done(); it.Stop() }()
			for {
				msg, err := it.Next()
				if err != nil {
					return err
				}
				if md, err := msg.Metadata(); err == nil {
					after = md.Sequence.Stream
				}
				if !bytes.Contains(msg.Data(), needle) {
					continue
				}
				var conf events.Confirmation
				if json.Unmarshal(msg.Data(), &conf) != nil || conf.JobID != id || counted[conf.EventID] {
					continue
				}
				t, ok := planned[conf.EventID]
				if !ok || conf.TeamID != t.Team || conf.KeyID != t.Key || msg.Subject() != events.ConfirmationSubject(t.Team, t.Key, t.EventID) {
					continue // not one of this job's events
				}
				counted[conf.EventID] = true
				c.add(1)
			}
		}()
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// lastErr is why following the confirmations last failed (nil: it did
// not, or it recovered).
func (c *confirmed) lastErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// waitWindow blocks until fewer than window of the published events are
// unconfirmed, or ctx ends.
func (c *confirmed) waitWindow(ctx context.Context, published, window int) error {
	for {
		n, changed := c.get()
		if published-n < window {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

var errNoWindow = errors.New("jobs: window must not be negative")
