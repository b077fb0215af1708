package recovery

import (
	"context"
	"errors"
	"time"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
)

// ownLimitRetry runs call again as long as it fails with a throttle of
// keyrelay's own client-side limits (providers.ErrOwnLimit: a local rate
// limit, or a cluster-wide quota this process has no share of yet),
// sleeping the wait each throttle names first. Such a throttle is not the
// backend failing: it spends none of the caller's attempts and fails no
// row. It returns the throttle when ctx would end before the wait.
func ownLimitRetry(ctx context.Context, call func() error) error {
	for {
		err := call()
		if err == nil || !errors.Is(err, providers.ErrOwnLimit) {
			return err
		}
		d := max(providers.RetryAfter(err), 10*time.Millisecond)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return err
		}
		if ctxtime.Sleep(ctx, d) != nil {
			return err
		}
	}
}
