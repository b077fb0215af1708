package app

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/quota"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// lateQuotas is the providers.Quotas a registry gets before NATS is
// reachable (providers may be opened by the backend health checks before
// then): its Wait waits for the cluster-wide manager, so no call goes out
// uncounted at start-up; a call whose deadline comes first is throttled
// (retried later, as a quota refusal is).
type lateQuotas struct {
	ready chan struct{}
	once  sync.Once
	m     *quota.Manager
}

func newLateQuotas() *lateQuotas { return &lateQuotas{ready: make(chan struct{})} }

func (l *lateQuotas) set(m *quota.Manager) {
	l.once.Do(func() { l.m = m; close(l.ready) })
}

// Wait implements providers.Quotas.
func (l *lateQuotas) Wait(ctx context.Context, name string, perSecond float64) (time.Duration, error) {
	select {
	case <-l.ready:
		return l.m.Wait(ctx, name, perSecond)
	default:
	}
	var deadline <-chan time.Time
	if dl, ok := ctx.Deadline(); ok {
		t := time.NewTimer(time.Until(dl) - 10*time.Millisecond)
		defer t.Stop()
		deadline = t.C
	}
	select {
	case <-l.ready:
		return l.m.Wait(ctx, name, perSecond)
	case <-deadline:
		return time.Second, fmt.Errorf("%w: the cluster-wide quotas are not reachable yet (NATS) (%w)", providers.ErrThrottled, providers.ErrOwnLimit)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// StartQuotas makes the cluster-wide quota manager of keyrelay.quotas.
// The bucket is created first through worker.EnsureCall, so that a create
// the cluster leaves unanswered (several processes starting at once) is
// tried again within seconds; quota.New then finds it.
func StartQuotas(ctx context.Context, c *settings.Config, js jetstream.JetStream, log *zap.Logger) (*quota.Manager, error) {
	cfg := quota.Config{Replicas: c.Keyrelay.Streams.Replicas, Margin: c.Keyrelay.Quotas.Margin, Logger: log.Named("quota")}
	if err := worker.EnsureCall(ctx, func(ctx context.Context) error {
		_, err := quota.EnsureBucket(ctx, js, cfg)
		return err
	}); err != nil {
		return nil, err
	}
	return quota.New(ctx, js, cfg)
}
