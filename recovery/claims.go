package recovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/worker"
)

// claimsGate holds one recovery command's claims request (package
// ownership). A worker running exclusive writes keys without claims, so a
// recovery command's claims alone would not keep it out: the request makes
// the lease holder stop writing without claims, and wait for the writes
// under way, before the command claims its first key. The request is
// registered at the first claim (a sweep with nothing to do pauses
// nobody) and withdrawn when the command ends. Without a holder (claims
// mode, or no worker running) it is granted at once.
type claimsGate struct {
	kv        jetstream.KeyValue
	requester string
	log       *zap.Logger

	mu   sync.Mutex
	req  *ownership.Request
	stop context.CancelFunc
	done chan struct{}
}

// newClaimsGate returns the gate of a command named id (made a valid
// requester name); nil kv: no gate (tests without the ownership bucket).
func newClaimsGate(kv jetstream.KeyValue, id string, log *zap.Logger) *claimsGate {
	if kv == nil {
		return nil
	}
	return &claimsGate{kv: kv, requester: ownership.RequesterName(id), log: log}
}

// wait returns once the command may claim keys, with the time its work
// on a key must end by (zero: no gate).
func (g *claimsGate) wait(ctx context.Context) (time.Time, error) {
	if g == nil {
		return time.Time{}, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.req == nil {
		req, err := ownership.NewRequest(g.kv, ownership.RequestConfig{Key: worker.WriterLeaseKey, Requester: g.requester, Logger: g.log})
		if err != nil {
			return time.Time{}, fmt.Errorf("claims request: %w", err)
		}
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g.req, g.stop, g.done = req, cancel, make(chan struct{})
		go func() { defer close(g.done); _ = req.Run(rctx) }()
	}
	for {
		// Granted for the request's current life: a request that lapsed
		// and was stored again must be acknowledged anew, since the holder
		// may have forgotten it and written without claims meanwhile.
		if d := g.req.GrantedUntil(); !d.IsZero() {
			return d, nil
		}
		d, err := g.req.Granted(ctx)
		if errors.Is(err, ownership.ErrRequestLapsed) {
			if err := ctxtime.Sleep(ctx, 100*time.Millisecond); err != nil {
				return time.Time{}, err
			}
			continue
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("claims request: %w", err)
		}
		return d, nil
	}
}

// close withdraws the request, if one was made; claimless writing resumes.
func (g *claimsGate) close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.req != nil {
		g.stop()
		<-g.done
		g.req = nil
	}
}
