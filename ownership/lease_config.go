package ownership

import (
	"errors"
	"fmt"
	"time"
	"unicode"

	"go.uber.org/zap"
)

const (
	// DefaultTTL is how long a lease record stands without renewal before
	// another process may take it over.
	DefaultTTL = 15 * time.Second
	// MinTTL is the shortest TTL accepted (tests use it; production keeps
	// the default).
	MinTTL = 100 * time.Millisecond
	// MaxRecordTTL caps the TTL a record may ask contenders to honour, so
	// a hostile or broken record cannot stall a takeover for long.
	MaxRecordTTL = 10 * time.Minute
	// MaxRecordBytes is the largest record read; a larger one is unreadable.
	MaxRecordBytes = 1024
	// MaxHolderLen bounds the holder's name.
	MaxHolderLen = 128
)

// Config describes one lease. Zero fields take the documented defaults.
type Config struct {
	// Key is the record's key in the bucket. Required.
	Key string
	// Holder names this process in the record, for operators and for
	// finding its own record after a lost reply. It must be unique per
	// process start (host, pid and a random part): a restarted process is a
	// new holder and waits out its previous life's lease. Required,
	// printable, at most MaxHolderLen bytes.
	Holder string
	// TTL: see DefaultTTL (the default). At least MinTTL and at most
	// MaxRecordTTL.
	TTL time.Duration
	// RenewEvery is how often the holder renews and a contender reads the
	// record. Default TTL/4; less than TTL/2.
	RenewEvery time.Duration
	// Logger receives acquisitions and losses (never at a rate above one
	// per renewal). Default: none.
	Logger *zap.Logger
}

func (c *Config) setDefaults() { timingDefaults(&c.TTL, &c.RenewEvery, &c.Logger) }

// timingDefaults fills the fields a lease and a claims request share.
func timingDefaults(ttl, renewEvery *time.Duration, log **zap.Logger) {
	if *ttl == 0 {
		*ttl = DefaultTTL
	}
	if *renewEvery == 0 {
		*renewEvery = *ttl / 4
	}
	if *log == nil {
		*log = zap.NewNop()
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.Key == "":
		return errors.New("ownership: key is required")
	case !validHolder(c.Holder):
		return fmt.Errorf("ownership: holder must be 1 to %d printable characters without spaces", MaxHolderLen)
	case c.TTL < MinTTL || c.TTL > MaxRecordTTL:
		return fmt.Errorf("ownership: ttl %s is outside [%s, %s]", c.TTL, MinTTL, MaxRecordTTL)
	case c.RenewEvery <= 0 || c.RenewEvery >= c.TTL/2:
		return fmt.Errorf("ownership: renew_every %s must be positive and less than half the ttl (%s)", c.RenewEvery, c.TTL)
	}
	return nil
}

func validHolder(s string) bool {
	if s == "" || len(s) > MaxHolderLen {
		return false
	}
	for _, r := range s {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) || r == ' ' {
			return false
		}
	}
	return true
}
