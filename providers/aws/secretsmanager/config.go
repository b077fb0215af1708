package secretsmanager

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/keyrelay/keyrelay/providers/aws/awsconfig"
)

// Option names read by ConfigFromOptions, besides awsconfig's (region,
// endpoint, ca_bundle, max_attempts and LiteLLM's aws_* keys).
const (
	OptionRecoveryWindowDays = "recovery_window_days"
	OptionKMSKeyID           = "kms_key_id"
	OptionReplicaRegions     = "replica_regions"
	OptionWriteTPS           = "write_tps"
	OptionReadTPS            = "read_tps"
	OptionControlTPS         = "control_tps"
	OptionTimeout            = "timeout"
	OptionListPageSize       = "list_page_size"
)

// Defaults and limits.
const (
	// DefaultRecoveryWindowDays is how long a deleted secret stays
	// recoverable: AWS's default, 30 days.
	DefaultRecoveryWindowDays = 30
	// MinRecoveryWindowDays and MaxRecoveryWindowDays are AWS's bounds.
	MinRecoveryWindowDays = 7
	MaxRecoveryWindowDays = 30

	// DefaultWriteTPS is the published per-region quota shared by
	// PutSecretValue, UpdateSecret and UpdateSecretVersionStage (and the
	// replication calls keyrelay does not make): 50 per second.
	DefaultWriteTPS = 50
	// DefaultReadTPS is the per-region quota shared by GetSecretValue and
	// DescribeSecret: 10,000 per second.
	DefaultReadTPS = 10000
	// DefaultControlTPS is the per-region quota of each of CreateSecret,
	// DeleteSecret, RestoreSecret, ListSecretVersionIds and
	// TagResource+UntagResource: 50 per second, each with its own bucket.
	DefaultControlTPS = 50

	// DefaultTimeout bounds one provider call (a Put may make several AWS
	// requests) when the caller's context has no deadline.
	DefaultTimeout = 30 * time.Second

	// MaxListPageSize is ListSecrets' MaxResults limit (100), and
	// DefaultListPageSize the page size List asks for.
	MaxListPageSize     = 100
	DefaultListPageSize = MaxListPageSize

	// MaxNameLength is the longest keyrelay name accepted, in bytes; names
	// AWS cannot hold as they are (longer than 512 bytes, or with
	// characters outside A-Z a-z 0-9 /_+=.@-) are mapped (see SecretID).
	MaxNameLength = 1024
	// MaxAWSNameLength is AWS's limit on secret names.
	MaxAWSNameLength = 512
	// MaxValueSize is AWS's limit on SecretString and SecretBinary.
	MaxValueSize = 65536
	// MaxDescriptionLength is AWS's limit on descriptions, in characters.
	MaxDescriptionLength = 2048
	// MaxTags is AWS's limit on tags per secret (keyrelay's three
	// ownership tags included).
	MaxTags = 50
)

// Config configures an aws_secret_manager provider. Build it with
// ConfigFromOptions, or by hand and check it with Validate; zero numeric
// fields take their defaults.
type Config struct {
	// AWS is the connection: region, endpoint, CA bundle and credentials,
	// from LiteLLM's aws_* settings (see package awsconfig).
	AWS awsconfig.Settings
	// RecoveryWindowDays is the recovery window of deletes (Force skips
	// it), MinRecoveryWindowDays..MaxRecoveryWindowDays. Option
	// "recovery_window_days". Default: DefaultRecoveryWindowDays (30).
	RecoveryWindowDays int
	// KMSKeyID is the KMS key (id, ARN or alias) new secrets are encrypted
	// with. Option "kms_key_id". Default: AWS's aws/secretsmanager key.
	// Existing secrets keep their key.
	KMSKeyID string
	// ReplicaRegions are regions new secrets are replicated to (as
	// CreateSecret's AddReplicaRegions; a written secret lacking one, such
	// as a restored one, gets it with ReplicateSecretToRegions; Delete
	// removes them first). Option "replica_regions",
	// comma-separated (LiteLLM's replica_regions list). Default: none.
	ReplicaRegions []string
	// WriteTPS, ReadTPS and ControlTPS are the client-side rate limits, in
	// requests per second, with a burst of one second's worth. Limiters
	// are shared by every provider instance with the same region, endpoint
	// and role account. Options "write_tps", "read_tps", "control_tps".
	// Defaults: DefaultWriteTPS (50), DefaultReadTPS (10,000),
	// DefaultControlTPS (50).
	WriteTPS   float64
	ReadTPS    float64
	ControlTPS float64
	// Timeout bounds one provider call when the context has no deadline.
	// Option "timeout" (a Go duration). Default: DefaultTimeout (30s).
	Timeout time.Duration
	// ListPageSize is the MaxResults of each ListSecrets call List makes,
	// 1..MaxListPageSize. Option "list_page_size". Default:
	// DefaultListPageSize (100, AWS's maximum).
	ListPageSize int
}

// ConfigFromOptions builds a Config from a provider options map (LiteLLM's
// aws_* settings, keyrelay.providers.aws_secret_manager and a team's
// options, merged) and the environment (getenv nil means os.Getenv). Keys
// it does not know are ignored. The result is validated, defaults applied.
func ConfigFromOptions(opts map[string]string, getenv func(string) string) (Config, error) {
	aws, err := awsconfig.FromOptions(opts, getenv)
	if err != nil {
		return Config{}, err
	}
	c := Config{AWS: aws, KMSKeyID: strings.TrimSpace(opts[OptionKMSKeyID])}
	for _, r := range strings.Split(opts[OptionReplicaRegions], ",") {
		if r = strings.TrimSpace(r); r != "" {
			c.ReplicaRegions = append(c.ReplicaRegions, r)
		}
	}
	if v := strings.TrimSpace(opts[OptionRecoveryWindowDays]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretsmanager: Config.RecoveryWindowDays (option %q) is not an integer", OptionRecoveryWindowDays)
		}
		c.RecoveryWindowDays = n
	}
	for _, f := range []struct {
		opt, field string
		dst        *float64
	}{
		{OptionWriteTPS, "WriteTPS", &c.WriteTPS},
		{OptionReadTPS, "ReadTPS", &c.ReadTPS},
		{OptionControlTPS, "ControlTPS", &c.ControlTPS},
	} {
		if v := strings.TrimSpace(opts[f.opt]); v != "" {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return Config{}, fmt.Errorf("secretsmanager: Config.%s (option %q) is not a number", f.field, f.opt)
			}
			*f.dst = x
		}
	}
	if v := strings.TrimSpace(opts[OptionListPageSize]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretsmanager: Config.ListPageSize (option %q) is not an integer", OptionListPageSize)
		}
		c.ListPageSize = n
	}
	if v := strings.TrimSpace(opts[OptionTimeout]); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretsmanager: Config.Timeout (option %q) is not a duration (e.g. 30s)", OptionTimeout)
		}
		c.Timeout = d
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c.withDefaults(), nil
}

// Validate checks the config and names the bad field and its option. Zero
// numeric fields are valid (they take their defaults).
func (c Config) Validate() error {
	bad := func(field, opt, format string, args ...any) error {
		return fmt.Errorf("secretsmanager: Config.%s (option %q) "+format, append([]any{field, opt}, args...)...)
	}
	if err := c.AWS.Validate(); err != nil {
		return err
	}
	if w := c.RecoveryWindowDays; w != 0 && (w < MinRecoveryWindowDays || w > MaxRecoveryWindowDays) {
		return bad("RecoveryWindowDays", OptionRecoveryWindowDays, "must be between %d and %d days", MinRecoveryWindowDays, MaxRecoveryWindowDays)
	}
	for _, f := range []struct {
		field, opt string
		v          float64
	}{
		{"WriteTPS", OptionWriteTPS, c.WriteTPS},
		{"ReadTPS", OptionReadTPS, c.ReadTPS},
		{"ControlTPS", OptionControlTPS, c.ControlTPS},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return bad(f.field, f.opt, "must be a positive number of requests per second")
		}
	}
	if n := c.ListPageSize; n < 0 || n > MaxListPageSize {
		return bad("ListPageSize", OptionListPageSize, "must be between 1 and %d", MaxListPageSize)
	}
	if c.Timeout < 0 {
		return bad("Timeout", OptionTimeout, "must not be negative")
	}
	if len(c.KMSKeyID) > 2048 {
		return bad("KMSKeyID", OptionKMSKeyID, "is longer than 2048 characters")
	}
	for _, r := range c.ReplicaRegions {
		if !regionOK(r) {
			return bad("ReplicaRegions", OptionReplicaRegions, "holds an invalid region name")
		}
		if r == c.AWS.Region {
			return bad("ReplicaRegions", OptionReplicaRegions, "must not include the secret's own region")
		}
	}
	return nil
}

func regionOK(r string) bool {
	if r == "" {
		return false
	}
	for _, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	if c.RecoveryWindowDays == 0 {
		c.RecoveryWindowDays = DefaultRecoveryWindowDays
	}
	if c.WriteTPS == 0 {
		c.WriteTPS = DefaultWriteTPS
	}
	if c.ReadTPS == 0 {
		c.ReadTPS = DefaultReadTPS
	}
	if c.ControlTPS == 0 {
		c.ControlTPS = DefaultControlTPS
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ListPageSize == 0 {
		c.ListPageSize = DefaultListPageSize
	}
	return c
}
