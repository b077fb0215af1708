package seal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults for Config. Every zero field of a Config means its default.
const (
	// DataKeyTTLDefault is how long one data key seals new values of a team.
	DataKeyTTLDefault = 5 * time.Minute
	// DataKeyMaxUsesDefault is how many values one data key seals at most.
	DataKeyMaxUsesDefault = 1000
	// SealCacheSizeDefault is how many teams' sealing data keys are kept.
	SealCacheSizeDefault = 1000
	// OpenCacheTTLDefault is how long an unwrapped data key is kept for
	// opening more values wrapped the same way.
	OpenCacheTTLDefault = 5 * time.Minute
	// OpenCacheSizeDefault is how many unwrapped data keys are kept.
	OpenCacheSizeDefault = 1000
	// CallTimeoutDefault bounds one KMS call.
	CallTimeoutDefault = 10 * time.Second
	// MaxAttemptsDefault is how many times a retryable or throttled KMS
	// call is made before its error is returned.
	MaxAttemptsDefault = 3
	// RetryBaseDefault is the first backoff between attempts (doubled each
	// time, with jitter).
	RetryBaseDefault = 100 * time.Millisecond
	// MaxRetryAfterDefault caps how long a throttling hint is waited for
	// within one Seal or Open; a longer hint is returned to the caller as a
	// Throttled error for its own retry policy.
	MaxRetryAfterDefault = 5 * time.Second
)

// Limits Validate enforces.
const (
	// MaxDataKeyTTL and MaxOpenCacheTTL bound how long a plaintext data key
	// may stay in memory.
	MaxDataKeyTTL   = 24 * time.Hour
	MaxOpenCacheTTL = 24 * time.Hour
	// MaxDataKeyMaxUses keeps random 96-bit GCM nonces far below the 2^32
	// messages per key NIST SP 800-38D allows.
	MaxDataKeyMaxUses = 1 << 24
	// MaxCacheSize bounds both caches.
	MaxCacheSize = 1 << 20
)

// Option keys FromOptions reads: the same for every wrapper, next to the
// wrapper's own keys (key id, connection) in keyrelay.sealing.<wrapper>.
const (
	OptionDataKeyTTL     = "data_key_ttl"
	OptionDataKeyMaxUses = "data_key_max_uses"
	OptionSealCacheSize  = "seal_cache_size"
	OptionOpenCacheTTL   = "open_cache_ttl"
	OptionOpenCacheSize  = "open_cache_size"
	OptionCallTimeout    = "call_timeout"
	OptionMaxAttempts    = "max_attempts"
	OptionRetryBase      = "retry_base"
)

// Config configures a Sealer. The zero value is valid: every default.
type Config struct {
	// AllowedKeyIDs, when not empty, are the only kids whose values Open
	// unwraps; a value naming another is refused without a KMS call
	// (events.ErrUnknownKeyID), and Seal and Rewrap refuse (permanently)
	// to seal under another, rather than make values no opener of this
	// configuration opens. Each wrapper reads it from its own option
	// (allowed_key_arns, allowed_key_names, ...). Default: empty (any key
	// the KMS lets this process use).
	AllowedKeyIDs []string
	// DataKeyTTL is how long one data key seals new values of a team
	// before a new one is made. Option "data_key_ttl" (a Go duration).
	// Default: DataKeyTTLDefault (5m); 1s to MaxDataKeyTTL.
	DataKeyTTL time.Duration
	// DataKeyMaxUses is how many values one data key seals at most; 1
	// makes a data key per value. Option "data_key_max_uses". Default:
	// DataKeyMaxUsesDefault (1000); at most MaxDataKeyMaxUses.
	DataKeyMaxUses int
	// SealCacheSize is how many teams' sealing data keys are kept (least
	// recently used evicted first). Option "seal_cache_size". Default:
	// SealCacheSizeDefault (1000).
	SealCacheSize int
	// OpenCacheTTL is how long an unwrapped data key is kept to open
	// further values wrapped the same way; revoking the KEK takes effect
	// for this process after at most this long. Option "open_cache_ttl".
	// Default: OpenCacheTTLDefault (5m); 1s to MaxOpenCacheTTL.
	OpenCacheTTL time.Duration
	// OpenCacheSize is how many unwrapped data keys are kept. Option
	// "open_cache_size". Default: OpenCacheSizeDefault (1000).
	OpenCacheSize int
	// CallTimeout bounds each KMS call, whatever the caller's deadline.
	// Option "call_timeout". Default: CallTimeoutDefault (10s); 100ms to 5m.
	CallTimeout time.Duration
	// MaxAttempts is how many times a retryable or throttled KMS call is
	// made within one Seal or Open; 1 disables the Sealer's retries (the
	// caller's retry policy still applies). Option "max_attempts".
	// Default: MaxAttemptsDefault (3); 1 to 10.
	MaxAttempts int
	// RetryBase is the first backoff between attempts, doubled each time,
	// with jitter; a throttled call waits for the KMS's Retry-After when it
	// gave one (up to MaxRetryAfterDefault). Option "retry_base". Default:
	// RetryBaseDefault (100ms); 1ms to 10s.
	RetryBase time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	seti := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.DataKeyTTL, DataKeyTTLDefault)
	set(&c.OpenCacheTTL, OpenCacheTTLDefault)
	set(&c.CallTimeout, CallTimeoutDefault)
	set(&c.RetryBase, RetryBaseDefault)
	seti(&c.DataKeyMaxUses, DataKeyMaxUsesDefault)
	seti(&c.SealCacheSize, SealCacheSizeDefault)
	seti(&c.OpenCacheSize, OpenCacheSizeDefault)
	seti(&c.MaxAttempts, MaxAttemptsDefault)
	return c
}

// Validate checks c as WithDefaults completes it. Its errors name fields
// and options, never values other than numbers.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	between := func(name, opt string, v, lo, hi time.Duration) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s (%s) is %v, want %v to %v", name, opt, v, lo, hi))
		}
	}
	between("DataKeyTTL", OptionDataKeyTTL, c.DataKeyTTL, time.Second, MaxDataKeyTTL)
	between("OpenCacheTTL", OptionOpenCacheTTL, c.OpenCacheTTL, time.Second, MaxOpenCacheTTL)
	between("CallTimeout", OptionCallTimeout, c.CallTimeout, 100*time.Millisecond, 5*time.Minute)
	between("RetryBase", OptionRetryBase, c.RetryBase, time.Millisecond, 10*time.Second)
	intBetween := func(name, opt string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s (%s) is %d, want %d to %d", name, opt, v, lo, hi))
		}
	}
	intBetween("DataKeyMaxUses", OptionDataKeyMaxUses, c.DataKeyMaxUses, 1, MaxDataKeyMaxUses)
	intBetween("SealCacheSize", OptionSealCacheSize, c.SealCacheSize, 1, MaxCacheSize)
	intBetween("OpenCacheSize", OptionOpenCacheSize, c.OpenCacheSize, 1, MaxCacheSize)
	intBetween("MaxAttempts", OptionMaxAttempts, c.MaxAttempts, 1, 10)
	for i, id := range c.AllowedKeyIDs {
		if id == "" {
			errs = append(errs, fmt.Errorf("AllowedKeyIDs[%d] is empty", i))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// FromOptions reads the Sealer options of an options map (keyrelay's
// sealing options); keys it does not know are ignored, so the same map
// carries the wrapper's own. Numbers and durations must parse; the rest is
// checked by Validate. allowedOption names the wrapper's option listing
// AllowedKeyIDs, comma-separated ("" for none).
func FromOptions(opts map[string]string, allowedOption string) (Config, error) {
	var c Config
	var errs []error
	if allowedOption != "" {
		c.AllowedKeyIDs = SplitList(opts[allowedOption])
	}
	dur := func(key string, dst *time.Duration) {
		if v := strings.TrimSpace(opts[key]); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("option %s: not a duration such as 5m", key))
				return
			}
			*dst = d
		}
	}
	num := func(key string, dst *int) {
		if v := strings.TrimSpace(opts[key]); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("option %s: not an integer", key))
				return
			}
			*dst = n
		}
	}
	dur(OptionDataKeyTTL, &c.DataKeyTTL)
	dur(OptionOpenCacheTTL, &c.OpenCacheTTL)
	dur(OptionCallTimeout, &c.CallTimeout)
	dur(OptionRetryBase, &c.RetryBase)
	num(OptionDataKeyMaxUses, &c.DataKeyMaxUses)
	num(OptionSealCacheSize, &c.SealCacheSize)
	num(OptionOpenCacheSize, &c.OpenCacheSize)
	num(OptionMaxAttempts, &c.MaxAttempts)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, c.Validate()
}

// SplitList splits a comma-separated option, dropping blanks.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
