package secretsmanager

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
)

// bucket is one of AWS's per-region request quotas.
type bucket int

const (
	bucketRead    bucket = iota // GetSecretValue, DescribeSecret
	bucketWrite                 // PutSecretValue, UpdateSecret, UpdateSecretVersionStage
	bucketCreate                // CreateSecret
	bucketDelete                // DeleteSecret
	bucketRestore               // RestoreSecret
	bucketTag                   // TagResource, UntagResource
	bucketList                  // ListSecretVersionIds
	numBuckets
)

// limiterKey identifies whose quotas a provider's calls count against:
// quotas are per account and region; the endpoint separates partitions and
// test servers, the role's account separates teams' accounts.
type limiterKey struct {
	region, endpoint, account string
	write, read, control      float64
}

// limiters holds one token bucket per quota.
type limiters [numBuckets]*rate.Limiter

var (
	sharedMu       sync.Mutex
	sharedLimiters = map[limiterKey]*limiters{}
)

// limitersFor returns the limiters for k, shared by every provider with
// the same key in this process.
func limitersFor(k limiterKey) *limiters {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if l, ok := sharedLimiters[k]; ok {
		return l
	}
	mk := func(tps float64) *rate.Limiter {
		return rate.NewLimiter(rate.Limit(tps), max(1, int(math.Ceil(tps))))
	}
	l := &limiters{}
	for b := range numBuckets {
		switch b {
		case bucketRead:
			l[b] = mk(k.read)
		case bucketWrite:
			l[b] = mk(k.write)
		default:
			l[b] = mk(k.control)
		}
	}
	sharedLimiters[k] = l
	return l
}

// wait takes a token from bucket b. When the context's deadline comes
// before the token, it fails at once with a Throttled error whose
// RetryAfter is the wait: the caller can come back then instead of
// holding a worker.
func (p *Provider) wait(ctx context.Context, op, name string, b bucket) error {
	r := p.lim[b].Reserve()
	d := r.Delay()
	if d == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		r.Cancel()
		e := providers.NewError(Name, op, name, providers.Throttled,
			fmt.Errorf("%w: client-side rate limit (%s) needs %v, more than the call has left", providers.ErrThrottled, b, d.Round(time.Millisecond)))
		e.RetryAfter = d
		return e
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctxErr(op, name, ctx.Err())
	}
}

func (b bucket) String() string {
	return [...]string{"read", "write", "create", "delete", "restore", "tag", "list"}[b]
}
