package conjur

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	for name, c := range map[string]struct {
		header   string
		min, max time.Duration
	}{
		"none":      {"", 0, 0},
		"seconds":   {"3", 3 * time.Second, 3 * time.Second},
		"spaces":    {" 8 ", 8 * time.Second, 8 * time.Second},
		"zero":      {"0", 0, 0},
		"negative":  {"-1", 0, 0},
		"garbage":   {"soon", 0, 0},
		"date":      {time.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat), 3 * time.Second, 5 * time.Second},
		"past date": {time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			h := http.Header{}
			if c.header != "" {
				h.Set("Retry-After", c.header)
			}
			if got := retryAfter(h); got < c.min || got > c.max {
				t.Errorf("retryAfter(%q) = %v, want %v..%v", c.header, got, c.min, c.max)
			}
		})
	}
}

func TestPolicyConflictWait(t *testing.T) {
	for name, c := range map[string]struct {
		err      error
		wait     time.Duration
		conflict bool
	}{
		"hint":      {&apiError{Status: 409, Code: "policy_conflict", RetryAfter: 2 * time.Second}, 2 * time.Second, true},
		"no hint":   {&apiError{Status: 409, Code: "policy_conflict"}, policyConflictWait, true},
		"long hint": {&apiError{Status: 409, RetryAfter: time.Minute}, maxPolicyConflictWait, true},
		"other":     {&apiError{Status: 500, RetryAfter: time.Second}, 0, false},
		"not conj":  {errors.New("x"), 0, false},
	} {
		if wait, conflict := policyConflict(c.err); wait != c.wait || conflict != c.conflict {
			t.Errorf("%s: policyConflict = %v, %v; want %v, %v", name, wait, conflict, c.wait, c.conflict)
		}
	}
}

// A writer waiting for a lock gives up when its context ends.
