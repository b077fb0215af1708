package conjur

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/internal/keyedlock"
)

// Conjur runs one policy load of a branch at a time. A load that overlaps
// another load of the same branch, by any client, fails with 409
// {"error":{"code":"policy_conflict",...}} and a Retry-After of 1 to 8
// seconds (Conjur's PoliciesController: both loads would save the same
// policy version number of the branch, a unique key). Every Put, UpdateTags
// and Delete of a provider loads policy into its one branch, so:
//
//   - loads of one branch are serialized inside the process (branchLocks,
//     shared by every Provider on the same appliance, account and branch),
//     so that keyrelay's own writers never conflict with each other;
//   - a conflict with another client's load (another keyrelay process, an
//     operator) is retried policyConflictRetries times after the wait
//     Conjur asks for, when the call's deadline leaves room for it, and is
//     otherwise reported as a retryable ErrConflict whose RetryAfter is that
//     wait.
const (
	// policyConflictRetries is how often one call retries a policy load
	// that met another client's load of the branch.
	policyConflictRetries = 1
	// policyConflictWait is the wait before that retry when Conjur's 409
	// carries no Retry-After.
	policyConflictWait = time.Second
	// maxPolicyConflictWait caps the wait (Conjur asks for at most 8 s).
	maxPolicyConflictWait = 8 * time.Second
)

// branchLocks serializes the policy loads of the process per branch.
var branchLocks keyedlock.Set

// loadPolicy loads policy into the provider's branch (see the comment on
// policyConflictRetries). The error is the client's, for policyErr.
func (p *Provider) loadPolicy(ctx context.Context, policy string) error {
	unlock, err := branchLocks.Lock(ctx, p.cfg.APIBase+"\x00"+p.cfg.Account+"\x00"+p.cfg.PolicyBranch)
	if err != nil {
		return err
	}
	defer unlock()
	for attempt := 0; ; attempt++ {
		err := p.c.loadPolicy(ctx, p.cfg.PolicyBranch, policy)
		wait, conflict := policyConflict(err)
		if !conflict || attempt >= policyConflictRetries {
			return err
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) <= wait {
			return err
		}
		p.log.Debug("conjur: another client is loading policy into the branch; retrying",
			zap.String("branch", p.cfg.PolicyBranch), zap.Duration("after", wait))
		if err := ctxtime.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// policyConflict reports whether err is Conjur's 409 to a policy load that
// overlapped another, and how long Conjur asks to wait.
func policyConflict(err error) (time.Duration, bool) {
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		return 0, false
	}
	wait := ae.RetryAfter
	if wait <= 0 {
		wait = policyConflictWait
	}
	return min(wait, maxPolicyConflictWait), true
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
