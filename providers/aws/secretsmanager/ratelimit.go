package secretsmanager

import (
	"context"
	"fmt"
	"sync"

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
	bucketList                  // ListSecretVersionIds, ListSecrets
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
	mk := providers.NewLimiter
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

// wait takes a token from bucket b (see providers.WaitTokens): a token
// the call's deadline cannot wait for fails at once as Throttled with the
// wait as RetryAfter.
func (p *Provider) wait(ctx context.Context, op, name string, b bucket) error {
	d, err := providers.WaitTokens(ctx, p.lim[b])
	switch {
	case err == nil:
		return nil
	case d > 0:
		e := providers.NewError(Name, op, name, providers.Throttled, fmt.Errorf("%s quota: %w", b, err))
		e.RetryAfter = d
		return e
	}
	return ctxErr(op, name, err)
}

func (b bucket) String() string {
	return [...]string{"read", "write", "create", "delete", "restore", "tag", "list"}[b]
}
