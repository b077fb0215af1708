package kms

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults for Config. Every zero field of a Config means its default.
const (
	// DefaultDataKeyTTL is how long one generated data key seals new
	// values of a team.
	DefaultDataKeyTTL = 5 * time.Minute
	// DefaultDataKeyMaxUses is how many values one data key seals at most.
	DefaultDataKeyMaxUses = 1000
	// DefaultSealCacheSize is how many teams' sealing data keys are kept.
	DefaultSealCacheSize = 1000
	// DefaultOpenCacheTTL is how long an unwrapped data key is kept for
	// opening more values wrapped the same way.
	DefaultOpenCacheTTL = 5 * time.Minute
	// DefaultOpenCacheSize is how many unwrapped data keys are kept.
	DefaultOpenCacheSize = 1000
	// DefaultCallTimeout bounds one KMS call.
	DefaultCallTimeout = 10 * time.Second
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

// Option keys FromOptions reads (keyrelay's, next to the AWS connection
// options of providers/aws/awsconfig in the same map).
const (
	OptionKeyID          = "key_id"
	OptionAllowedKeyARNs = "allowed_key_arns"
	OptionDataKeyTTL     = "data_key_ttl"
	OptionDataKeyMaxUses = "data_key_max_uses"
	OptionSealCacheSize  = "seal_cache_size"
	OptionOpenCacheTTL   = "open_cache_ttl"
	OptionOpenCacheSize  = "open_cache_size"
	OptionCallTimeout    = "call_timeout"
)

// Config configures a Sealer. The zero value is valid and makes an
// open-only Sealer with every default.
type Config struct {
	// KeyID is the KMS key new data keys are generated under: a key id,
	// key ARN, alias name ("alias/keyrelay") or alias ARN. Required for
	// Seal; empty makes a Sealer that only opens. Option "key_id".
	// Default: none.
	KeyID string
	// AllowedKeyARNs, when not empty, are the only KMS key ARNs whose
	// values Open unwraps; a value naming another key is refused without a
	// KMS call (events.ErrUnknownKeyID). Empty: any key that KMS lets this
	// process use (Decrypt is always called with the value's kid as KeyId).
	// Option "allowed_key_arns", comma-separated. Default: empty.
	AllowedKeyARNs []string
	// DataKeyTTL is how long one data key seals new values of a team
	// before a new one is generated. Option "data_key_ttl" (a Go duration).
	// Default: DefaultDataKeyTTL (5m); at most MaxDataKeyTTL.
	DataKeyTTL time.Duration
	// DataKeyMaxUses is how many values one data key seals at most; 1
	// generates a data key per value. Option "data_key_max_uses".
	// Default: DefaultDataKeyMaxUses (1000); at most MaxDataKeyMaxUses.
	DataKeyMaxUses int
	// SealCacheSize is how many teams' sealing data keys are kept (least
	// recently used evicted first). Option "seal_cache_size". Default:
	// DefaultSealCacheSize (1000).
	SealCacheSize int
	// OpenCacheTTL is how long an unwrapped data key is kept to open
	// further values wrapped the same way; revoking kms:Decrypt takes
	// effect for this process after at most this long. Option
	// "open_cache_ttl". Default: DefaultOpenCacheTTL (5m); at most
	// MaxOpenCacheTTL.
	OpenCacheTTL time.Duration
	// OpenCacheSize is how many unwrapped data keys are kept (least
	// recently used evicted first). Option "open_cache_size". Default:
	// DefaultOpenCacheSize (1000).
	OpenCacheSize int
	// CallTimeout bounds each KMS call, whatever the caller's deadline.
	// Option "call_timeout". Default: DefaultCallTimeout (10s).
	CallTimeout time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.DataKeyTTL == 0 {
		c.DataKeyTTL = DefaultDataKeyTTL
	}
	if c.DataKeyMaxUses == 0 {
		c.DataKeyMaxUses = DefaultDataKeyMaxUses
	}
	if c.SealCacheSize == 0 {
		c.SealCacheSize = DefaultSealCacheSize
	}
	if c.OpenCacheTTL == 0 {
		c.OpenCacheTTL = DefaultOpenCacheTTL
	}
	if c.OpenCacheSize == 0 {
		c.OpenCacheSize = DefaultOpenCacheSize
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	return c
}

// Validate checks c as WithDefaults completes it. Its errors name fields,
// never values other than numbers.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	if c.KeyID != "" {
		if err := checkKeyRef(c.KeyID, true); err != nil {
			errs = append(errs, fmt.Errorf("KeyID (%s): %w", OptionKeyID, err))
		}
	}
	for i, arn := range c.AllowedKeyARNs {
		if !strings.HasPrefix(arn, "arn:") || !strings.Contains(arn, ":key/") {
			errs = append(errs, fmt.Errorf("AllowedKeyARNs[%d] (%s): must be a key ARN (arn:PARTITION:kms:REGION:ACCOUNT:key/ID)", i, OptionAllowedKeyARNs))
		} else if err := checkKeyRef(arn, false); err != nil {
			errs = append(errs, fmt.Errorf("AllowedKeyARNs[%d] (%s): %w", i, OptionAllowedKeyARNs, err))
		}
	}
	between := func(name, opt string, v, lo, hi time.Duration) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s (%s) is %v, want %v to %v", name, opt, v, lo, hi))
		}
	}
	between("DataKeyTTL", OptionDataKeyTTL, c.DataKeyTTL, time.Second, MaxDataKeyTTL)
	between("OpenCacheTTL", OptionOpenCacheTTL, c.OpenCacheTTL, time.Second, MaxOpenCacheTTL)
	between("CallTimeout", OptionCallTimeout, c.CallTimeout, 100*time.Millisecond, 5*time.Minute)
	intBetween := func(name, opt string, v, lo, hi int) {
		if v < lo || v > hi {
			errs = append(errs, fmt.Errorf("%s (%s) is %d, want %d to %d", name, opt, v, lo, hi))
		}
	}
	intBetween("DataKeyMaxUses", OptionDataKeyMaxUses, c.DataKeyMaxUses, 1, MaxDataKeyMaxUses)
	intBetween("SealCacheSize", OptionSealCacheSize, c.SealCacheSize, 1, MaxCacheSize)
	intBetween("OpenCacheSize", OptionOpenCacheSize, c.OpenCacheSize, 1, MaxCacheSize)
	if len(errs) > 0 {
		return fmt.Errorf("aws_kms config: %w", errors.Join(errs...))
	}
	return nil
}

// checkKeyRef accepts what KMS accepts as a KeyId (ARN, key id, alias name
// or alias ARN) as far as keyrelay needs: 1 to 2048 characters from
// letters, digits and ":/_-", starting with a letter or digit. That is also
// what a sealed value's kid may hold.
func checkKeyRef(s string, aliasOK bool) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > 2048:
		return fmt.Errorf("is %d bytes, longer than 2048", len(s))
	case !aliasOK && strings.Contains(s, "alias/"):
		return errors.New("must name a key, not an alias")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnumByte(c):
		case i == 0:
			return errors.New("must start with a letter or digit")
		case c == ':' || c == '/' || c == '_' || c == '-':
		default:
			return fmt.Errorf("contains a character other than letters, digits and :/_- at byte %d", i)
		}
	}
	return nil
}

// FromOptions reads a Config from an options map (keyrelay's sealing
// options, e.g. keyrelay.sealing.kms); keys it does not know are ignored,
// so the same map can carry the AWS connection options awsconfig reads.
// Values are validated by Validate, not here, except that numbers and
// durations must parse.
func FromOptions(opts map[string]string) (Config, error) {
	var c Config
	var errs []error
	c.KeyID = strings.TrimSpace(opts[OptionKeyID])
	if v := strings.TrimSpace(opts[OptionAllowedKeyARNs]); v != "" {
		for _, arn := range strings.Split(v, ",") {
			if arn = strings.TrimSpace(arn); arn != "" {
				c.AllowedKeyARNs = append(c.AllowedKeyARNs, arn)
			}
		}
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
	num(OptionDataKeyMaxUses, &c.DataKeyMaxUses)
	num(OptionSealCacheSize, &c.SealCacheSize)
	num(OptionOpenCacheSize, &c.OpenCacheSize)
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("aws_kms config: %w", errors.Join(errs...))
	}
	return c, c.Validate()
}
