package events

import (
	"errors"
	"math"
	"testing"
)

// TestGracePeriodBounds: grace_period_seconds is refused above
// MaxGracePeriodSeconds by Decode and by the key.rotated schema alike; a
// value that would overflow a time.Duration (MaxInt64, "forever") is one
// of them, with a reason naming the maximum.
func TestGracePeriodBounds(t *testing.T) {
	cases := map[string]struct {
		grace int64
		ok    bool
	}{
		"zero":                     {0, true},
		"one day":                  {86400, true},
		"the maximum":              {MaxGracePeriodSeconds, true},
		"one more than the max":    {MaxGracePeriodSeconds + 1, false},
		"first duration overflow":  {math.MaxInt64/int64(1e9) + 1, false},
		"MaxInt64 meaning forever": {math.MaxInt64, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := baseEvent(t, KeyRotated)
			d.data()["grace_period_seconds"] = tc.grace
			b := d.bytes(t)
			ev, err := Decode(b)
			serr := ValidateSchema(SchemaEvent, b)
			if tc.ok {
				if err != nil || serr != nil {
					t.Fatalf("Decode: %v; schema: %v; want both to accept", err, serr)
				}
				if kd, err := ev.KeyData(); err != nil || kd.GracePeriodSeconds != tc.grace {
					t.Fatalf("key data %+v (%v), want grace %d", kd, err, tc.grace)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != "data.grace_period_seconds" {
				t.Fatalf("Decode: %v, want a validation error on data.grace_period_seconds", err)
			}
			if serr == nil {
				t.Fatal("the schema accepts it, Decode refuses it")
			}
		})
	}
}
