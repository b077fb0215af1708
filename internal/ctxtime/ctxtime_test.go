package ctxtime

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	tests := map[string]struct {
		ctx     func() (context.Context, context.CancelFunc)
		d       time.Duration
		want    error
		atLeast time.Duration // the wait the call must not return before
	}{
		"delay passes":          {ctx: background, d: 20 * time.Millisecond, atLeast: 20 * time.Millisecond},
		"zero delay":            {ctx: background, d: 0},
		"negative delay":        {ctx: background, d: -time.Second},
		"ended before the call": {ctx: func() (context.Context, context.CancelFunc) { return ended, func() {} }, d: 0, want: context.Canceled},
		"deadline first": {
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 20*time.Millisecond)
			},
			d:    time.Hour,
			want: context.DeadlineExceeded, atLeast: 20 * time.Millisecond,
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			// Before the context: a deadline counts from its creation.
			start := time.Now()
			ctx, cancel := tt.ctx()
			defer cancel()
			err := Sleep(ctx, tt.d)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Sleep = %v, want %v", err, tt.want)
			}
			if took := time.Since(start); took < tt.atLeast {
				t.Errorf("returned after %v, before %v", took, tt.atLeast)
			}
		})
	}
}

func background() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
