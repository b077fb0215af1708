package worker

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
)

// isInfraTransient reports whether err is keyrelay's own infrastructure
// (NATS, a stream, the ledger or teams bucket) unavailable for now: no
// responders during a leader election, a request timeout, a connection
// being re-established, or JetStream answering 503. Such failures are not
// the event's: they are waited out and never spend its retry budget.
func isInfraTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, ErrLedgerConflict) || errors.Is(err, errAlreadyConfirmed) {
		return false
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) && api.Code >= 500 {
		return true
	}
	var pe *pubAckError
	return errors.As(err, &pe) && pe.Code >= 500
}

// infraAttemptTimeout bounds one attempt of an infraDo operation, and
// every request made with requestMsg. A
// JetStream request is answered within milliseconds, or at once with "no
// responders" while its stream has no leader; but a request in flight when
// the leader of its stream or bucket dies (SIGKILL, a machine lost) is
// never answered. Without this bound such a request held its event, and
// its handler slot, until the caller's deadline (infra_wait + 10 s for the
// ledger commit and the confirmation: in TestClusterNodeLossUnderLoad,
// commits sent as the ledger's leader was killed failed 15 s later with
// "context deadline exceeded"). The operations are idempotent
// (compare-and-set writes, Nats-Msg-Id and expected-sequence publishes,
// reads), so an attempt that timed out is simply made again; a
// compare-and-set whose first attempt did land fails as a conflict, which
// the callers already resolve by reading the entry again.
const infraAttemptTimeout = 3 * time.Second

// infraDo runs a NATS operation, retrying it in place with backoff while it
// fails for infrastructure reasons, for up to InfraWait; each attempt gets
// at most infraAttemptTimeout. Other errors are returned at once. The
// caller hands the event back (without spending its budget) if NATS is
// still unavailable after that.
func (w *Worker) infraDo(ctx context.Context, fn func(context.Context) error) error {
	return w.infraDoBounded(ctx, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, infraAttemptTimeout)
		defer cancel()
		return fn(actx)
	})
}

// infraDoBounded is infraDo for an operation that bounds each of its
// requests to infraAttemptTimeout itself (requestMsg: the ledger's writes
// and the confirmation's publish, the operations on every event's path):
// no context is made per attempt.
func (w *Worker) infraDoBounded(ctx context.Context, fn func(context.Context) error) error {
	deadline := time.Now().Add(w.cfg.InfraWait)
	wait := 50 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil || !isInfraTransient(err) || ctx.Err() != nil {
			return err
		}
		d := wait/2 + rand.N(wait)
		if time.Now().Add(d).After(deadline) {
			return err
		}
		w.m.Retries.WithLabelValues("infra").Inc()
		w.log.Debug("NATS unavailable; waiting in place", zap.Duration("wait", d), zap.Error(err))
		if ctxtime.Sleep(ctx, d) != nil {
			return err
		}
		wait = min(wait*2, 2*time.Second)
	}
}
