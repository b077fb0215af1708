package kms

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Defaults for Config. Every zero field of a Config means its default.
const (
	// DefaultDataKeyTTL is how long one data key seals new values of a team.
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
	// DefaultCallTimeout bounds one Cloud KMS call.
	DefaultCallTimeout = 10 * time.Second
)

// Limits Validate enforces.
const (
	MaxDataKeyTTL     = 24 * time.Hour
	MaxOpenCacheTTL   = 24 * time.Hour
	MaxDataKeyMaxUses = 1 << 24
	MaxCacheSize      = 1 << 20
)

// Option keys FromOptions and New read (keyrelay's sealing options, e.g.
// keyrelay.sealing.gcp_kms).
const (
	// Sealing.
	OptionKeyName         = "key_name"
	OptionAllowedKeyNames = "allowed_key_names"
	OptionDataKeyTTL      = "data_key_ttl"
	OptionDataKeyMaxUses  = "data_key_max_uses"
	OptionSealCacheSize   = "seal_cache_size"
	OptionOpenCacheTTL    = "open_cache_ttl"
	OptionOpenCacheSize   = "open_cache_size"
	OptionCallTimeout     = "call_timeout"
	// Connection (the same names as providers/google/secretmanager).
	OptionEndpoint        = "endpoint"
	OptionInsecure        = "insecure"
	OptionCABundle        = "ca_bundle"
	OptionCredentialsFile = "credentials_file"
)

// EnvResourceName is LiteLLM's variable naming the CryptoKey that
// google_kms values are decrypted with.
const EnvResourceName = "GOOGLE_KMS_RESOURCE_NAME"

var (
	cryptoKeyRe  = regexp.MustCompile(`^projects/[a-z0-9][a-z0-9:_-]*/locations/[A-Za-z0-9_-]+/keyRings/[A-Za-z0-9_-]{1,63}/cryptoKeys/[A-Za-z0-9_-]{1,63}$`)
	keyVersionRe = regexp.MustCompile(`^(projects/[a-z0-9][a-z0-9:_-]*/locations/[A-Za-z0-9_-]+/keyRings/[A-Za-z0-9_-]{1,63}/cryptoKeys/[A-Za-z0-9_-]{1,63})/cryptoKeyVersions/[1-9][0-9]*$`)
)

// CryptoKeyOf returns the CryptoKey name of a CryptoKey or CryptoKeyVersion
// name, or "" when name is neither. Project ids with dots (the legacy
// "domain.com:project" form) are not supported: use the project number.
func CryptoKeyOf(name string) string {
	if cryptoKeyRe.MatchString(name) {
		return name
	}
	if m := keyVersionRe.FindStringSubmatch(name); m != nil {
		return m[1]
	}
	return ""
}

// Config configures a Sealer. The zero value is valid and makes an
// open-only Sealer with every default.
type Config struct {
	// KeyName is the Cloud KMS key data keys are wrapped with: a CryptoKey
	// ("projects/P/locations/L/keyRings/R/cryptoKeys/K", which encrypts
	// with its primary version) or one CryptoKeyVersion of it. Required for
	// Seal; empty makes a Sealer that only opens. Option "key_name".
	KeyName string
	// AllowedKeyNames, when not empty, are the only CryptoKey names whose
	// values Open unwraps; a value naming another key is refused without a
	// call (events.ErrUnknownKeyID). Option "allowed_key_names",
	// comma-separated. Default: empty (any key Cloud KMS lets this process
	// use).
	AllowedKeyNames []string
	// DataKeyTTL, DataKeyMaxUses, SealCacheSize, OpenCacheTTL,
	// OpenCacheSize and CallTimeout mean what they mean for AWS KMS
	// (providers/aws/kms), with the same defaults and limits.
	DataKeyTTL     time.Duration
	DataKeyMaxUses int
	SealCacheSize  int
	OpenCacheTTL   time.Duration
	OpenCacheSize  int
	CallTimeout    time.Duration
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
	if c.KeyName != "" && CryptoKeyOf(c.KeyName) == "" {
		errs = append(errs, fmt.Errorf("KeyName (%s): must be projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N]", OptionKeyName))
	}
	for i, n := range c.AllowedKeyNames {
		if !cryptoKeyRe.MatchString(n) {
			errs = append(errs, fmt.Errorf("AllowedKeyNames[%d] (%s): must be a CryptoKey name (projects/P/locations/L/keyRings/R/cryptoKeys/K)", i, OptionAllowedKeyNames))
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
		return fmt.Errorf("google_kms config: %w", errors.Join(errs...))
	}
	return nil
}

// FromOptions reads a Config from an options map; keys it does not know
// (the connection options, for one) are ignored. Numbers and durations
// must parse; everything else is checked by Validate.
func FromOptions(opts map[string]string) (Config, error) {
	var c Config
	var errs []error
	c.KeyName = strings.TrimSpace(opts[OptionKeyName])
	if v := strings.TrimSpace(opts[OptionAllowedKeyNames]); v != "" {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				c.AllowedKeyNames = append(c.AllowedKeyNames, n)
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
		return Config{}, fmt.Errorf("google_kms config: %w", errors.Join(errs...))
	}
	return c, c.Validate()
}
