// Package ctxtime holds the one way keyrelay waits out a delay: until the
// delay has passed or the context ends, whichever comes first.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits for d or until ctx ends. It returns nil after d, or ctx's
// error if ctx ended first (at once when it already has, whatever d is).
// A d of zero or less returns nil without waiting unless ctx has ended.
func Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
