package secretsmanager

import (
	"context"
	"fmt"
	"strings"
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

// wait takes a token from bucket b (see providers.WaitTokens), then, when
// the provider has cluster-wide quotas (providers.Config.Quotas), one of
// the same quota from them (see quotaName), at the same rate: a token the
// call's deadline cannot wait for fails at once as Throttled with the wait
// as RetryAfter.
func (p *Provider) wait(ctx context.Context, op, name string, b bucket) error {
	d, err := providers.WaitTokens(ctx, p.lim[b])
	if err == nil && p.quotas != nil {
		d, err = p.quotas.Wait(ctx, p.key.quotaName(b), p.key.perSecond(b))
	}
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

// perSecond is bucket b's rate: the figure its local limiter uses.
func (k limiterKey) perSecond(b bucket) float64 {
	switch b {
	case bucketRead:
		return k.read
	case bucketWrite:
		return k.write
	}
	return k.control
}

// quotaName names bucket b's quota for providers.Quotas as AWS scopes it,
// per account and Region: "aws_secret_manager/ACCOUNT/REGION/BUCKET",
// e.g. "aws_secret_manager/123456789012/us-east-1/write". ACCOUNT is the
// role's account; without a role it is the endpoint, lowercased and
// without its scheme ("localhost:4566"), or "default" for AWS's own
// endpoints, where the account is the default credentials' own.
func (k limiterKey) quotaName(b bucket) string {
	owner := k.account
	if owner == "" {
		owner = strings.ToLower(strings.TrimRight(k.endpoint, "/"))
		if i := strings.Index(owner, "://"); i >= 0 {
			owner = owner[i+3:]
		}
	}
	if owner == "" {
		owner = "default"
	}
	return Name + "/" + owner + "/" + k.region + "/" + b.String()
}
