package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/worker"
)

// Start-up retries. While NATS is unreachable, has no JetStream quorum or
// is electing a leader, `serve` keeps its operations listener up (with
// /readyz answering 503 and the reason) and retries each start-up step
// with capped exponential backoff and jitter until it succeeds or the
// process is stopped; it never exits for a transient failure.
const (
	// StartRetryInitial is the first wait after a failed start-up step.
	StartRetryInitial = 250 * time.Millisecond
	// StartRetryMax caps the wait between two attempts of a start-up step.
	StartRetryMax = 10 * time.Second
	// StartAttemptTimeout bounds one attempt of a start-up step (creating
	// the streams, buckets and consumer; opening the worker).
	StartAttemptTimeout = 20 * time.Second
)

// retryStart runs step until it succeeds, returns an error wrapped with
// backoff.Permanent, or ctx ends. Each attempt gets StartAttemptTimeout;
// every failure is logged and shown by /readyz through rd.
func retryStart(ctx context.Context, what string, rd *readiness, log *zap.Logger, step func(ctx context.Context) error) error {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(StartRetryInitial), backoff.WithMaxInterval(StartRetryMax),
		backoff.WithMaxElapsedTime(0))
	last := ""
	for attempt := 1; ; attempt++ {
		if attempt == 1 {
			rd.setPhase("starting: " + what)
		} else {
			rd.setPhase(fmt.Sprintf("starting: %s: attempt %d (attempt %d failed: %s)", what, attempt, attempt-1, last))
		}
		actx, cancel := context.WithTimeout(ctx, StartAttemptTimeout)
		err := step(actx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("start-up step succeeded after retries", zap.String("step", what), zap.Int("attempts", attempt))
			}
			return nil
		}
		var perm *backoff.PermanentError
		if errors.As(err, &perm) {
			return perm.Err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		}
		wait := b.NextBackOff()
		last = err.Error()
		rd.setPhase(fmt.Sprintf("starting: %s: attempt %d failed: %s; retrying", what, attempt, last))
		log.Warn("start-up step failed; retrying", zap.String("step", what), zap.Int("attempt", attempt),
			zap.Duration("retry_in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// connectWait bounds how long one start-up attempt waits for the
// connection, so that /readyz and the log show the latest reason.
const connectWait = 5 * time.Second

// waitConnected waits until nc is connected (a connection made with
// RetryOnFailedConnect starts out reconnecting), connectWait passes or
// ctx ends.
func waitConnected(ctx context.Context, nc *nats.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, connectWait)
	defer cancel()
	for nc.Status() != nats.CONNECTED {
		if nc.IsClosed() {
			return backoff.Permanent(errors.New("nats: connection closed"))
		}
		select {
		case <-ctx.Done():
			last := nc.LastError()
			if last == nil {
				last = errors.New("no server reachable")
			}
			return fmt.Errorf("nats: %s: %w", strings.ToLower(nc.Status().String()), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// EnsureTopology creates or updates keyrelay's streams, buckets and
// consumer like worker.EnsureTopology, retrying with backoff (see
// StartRetryInitial) until it succeeds or ctx ends: while NATS is
// unreachable or JetStream elects a leader, and when several processes
// create the topology at once (a losing create is retried as an update).
func EnsureTopology(ctx context.Context, conn *Conn, cfg worker.TopologyConfig, log *zap.Logger) error {
	return retryStart(ctx, "jetstream topology", &readiness{}, log, func(actx context.Context) error {
		if err := waitConnected(actx, conn.NC); err != nil {
			return err
		}
		return worker.EnsureTopology(actx, conn.JS, cfg)
	})
}

// readiness is what /readyz answers: the start-up phase until start-up is
// done, then the running checks, and the backends' health throughout.
type readiness struct {
	mu      sync.Mutex
	phase   string
	running func() (bool, string)
	// backends is nil until the health checks run.
	backends *backendHealth
}

func (r *readiness) setPhase(p string) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
}

// started switches from the start-up phase to the running checks.
func (r *readiness) started(check func() (bool, string)) {
	r.mu.Lock()
	r.phase, r.running = "", check
	r.mu.Unlock()
}

// report returns whether the process is ready and the text /readyz
// shows: the first line "ok" or the reason it is not ready, then one line
// per configured backend.
func (r *readiness) report() (bool, string) {
	r.mu.Lock()
	phase, running, backends := r.phase, r.running, r.backends
	r.mu.Unlock()
	ok, why := true, "ok"
	switch {
	case running == nil:
		ok, why = false, phase
		if why == "" {
			why = "starting"
		}
	default:
		ok, why = running()
	}
	var lines []string
	if backends != nil {
		var bok bool
		var bwhy string
		bok, bwhy, lines = backends.report()
		if ok && !bok {
			ok, why = false, bwhy
		}
	}
	return ok, strings.Join(append([]string{why}, lines...), "\n")
}

// topologyPresent reports whether the shared consumer exists (a cheap
// check that the topology is in place).
func topologyPresent(ctx context.Context, js jetstream.JetStream) bool {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := js.Consumer(cctx, worker.EventsStream, worker.ConsumerName)
	return err == nil
}
