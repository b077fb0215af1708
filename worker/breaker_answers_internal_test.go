package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
)

// TestBreakerCountsOnlyABackendDown: the breaker opens after
// BreakerFailures consecutive failures that say the backend is down, and
// never for answers about one secret from a backend that is up: a
// concurrent modification, or AWS Secrets Manager's versions quota
// (providers.ErrSecretLimit; the provider's own test shows kumofront's
// LimitExceededException on PutSecretValue classified so). Before, both
// were retryable failures like an outage, so a single hot or full secret
// opened the breaker and held back every team's writes to that backend.
func TestBreakerCountsOnlyABackendDown(t *testing.T) {
	const failures = 4
	tests := map[string]struct {
		err      error
		wantOpen bool
	}{
		"unavailable":       {providers.NewError("vault", "put", "k", providers.Retryable, fmt.Errorf("%w: 503", providers.ErrUnavailable)), true},
		"throttled":         {providers.NewError("aws_secret_manager", "put", "k", providers.Throttled, providers.ErrThrottled), true},
		"deadline":          {providers.NewError("vault", "put", "k", providers.Retryable, context.DeadlineExceeded), true},
		"conflict":          {providers.NewError("vault", "put", "k", providers.Retryable, fmt.Errorf("%w: check-and-set", providers.ErrConflict)), false},
		"secret quota":      {providers.NewError("aws_secret_manager", "put", "k", providers.Retryable, providers.ErrSecretLimit), false},
		"permanent":         {providers.NewError("vault", "put", "k", providers.Permanent, providers.ErrAccessDenied), false},
		"own rate limit":    {providers.NewError("vault", "put", "k", providers.Throttled, errors.Join(providers.ErrOwnLimit, providers.ErrThrottled)), false},
		"own deadline only": {ownDeadline(&keyWork{res: settings.Resolved{Backend: "vault"}}), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := newBackendGuards(4, 4, 0, failures, time.Minute, NewMetrics(prometheus.NewRegistry()))
			bg := g.get("k", "vault")
			for range 3 * failures {
				if err := bg.call(func() error { return tc.err }); err == nil {
					t.Fatal("call returned no error")
				}
			}
			// One more call: refused without running while the breaker is open.
			ran := false
			err := bg.call(func() error { ran = true; return nil })
			if open := errors.Is(err, errBreakerOpen); open != tc.wantOpen || open == ran {
				t.Fatalf("after %d failures of %v: breaker open %v (call ran %v), want open %v", 3*failures, tc.err, open, ran, tc.wantOpen)
			}
		})
	}
}
