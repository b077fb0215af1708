package secretmanager

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/auth"
)

// Option names read by ConfigFromOptions.
const (
	OptionProject                = "project"
	OptionEndpoint               = "endpoint"
	OptionInsecure               = "insecure"
	OptionCABundle               = "ca_bundle"
	OptionCredentialsFile        = "credentials_file"
	OptionReplication            = "replication"
	OptionLocations              = "locations"
	OptionSupersededGrace        = "superseded_grace"
	OptionDestroyGrace           = "destroy_grace"
	OptionProjectWritesPerMinute = "project_writes_per_minute"
	OptionReadsPerMinute         = "project_reads_per_minute"
	OptionAccessPerMinute        = "project_access_per_minute"
	OptionSecretWritesPerSecond  = "secret_writes_per_second"
	OptionTimeout                = "timeout"
	OptionListPageSize           = "list_page_size"

	// EnvProject is LiteLLM's project setting, used when the options name
	// no project.
	EnvProject = "GOOGLE_SECRET_MANAGER_PROJECT_ID"
)

// Replication policies.
const (
	ReplicationAutomatic   = "automatic"
	ReplicationUserManaged = "user_managed"
)

// Defaults and limits.
const (
	// DefaultProjectWritesPerMinute is Secret Manager's per-project write
	// quota: 600 a minute.
	DefaultProjectWritesPerMinute = 600
	// DefaultReadsPerMinute is Secret Manager's per-project read quota
	// (every call but the mutating ones and AccessSecretVersion): 600 a
	// minute.
	DefaultReadsPerMinute = 600
	// DefaultAccessPerMinute is Secret Manager's per-project access quota
	// (AccessSecretVersion): 90,000 a minute.
	DefaultAccessPerMinute = 90000
	// DefaultSecretWritesPerSecond is the sustained write rate Google
	// recommends per secret: about 2 a second.
	DefaultSecretWritesPerSecond = 2
	// DefaultSupersededGrace is how long ConfigFromOptions keeps a
	// superseded version enabled when the option is absent.
	DefaultSupersededGrace = 24 * time.Hour
	// DefaultDestroyGrace is how long ConfigFromOptions keeps a disabled
	// version before destroying it when the option is absent.
	DefaultDestroyGrace = 7 * 24 * time.Hour
	// DefaultTimeout bounds one provider call when the caller's context
	// has no deadline.
	DefaultTimeout = 30 * time.Second
	// MaxListPageSize is ListSecrets' largest page_size.
	MaxListPageSize = 25000
	// MaxValueSize is Secret Manager's limit on a version's data.
	MaxValueSize = 64 * 1024
	// MaxNameLength is the longest keyrelay name accepted, in bytes;
	// longer or non-conforming names are mapped (see SecretID).
	MaxNameLength = 1024
)

// Config configures a google_secret_manager provider. Build it with
// ConfigFromOptions, or by hand and check it with Validate.
type Config struct {
	// Project is the GCP project id (or number) secrets live in. Option
	// "project" (a team may set it), else LiteLLM's
	// GOOGLE_SECRET_MANAGER_PROJECT_ID. Required.
	Project string
	// Endpoint is the gRPC endpoint (host:port), for private endpoints and
	// emulators. Option "endpoint". Default: Google's.
	Endpoint string
	// Insecure selects plaintext gRPC without authentication, for a local
	// emulator only; it needs an explicit Endpoint. Option "insecure"
	// ("true"). Default false.
	Insecure bool
	// CABundle is a PEM file of CAs that the endpoint's TLS certificate is
	// checked against (private endpoints behind a TLS-inspecting proxy).
	// Option "ca_bundle". Default: the system roots.
	CABundle string
	// CredentialsFile is a service-account JSON key file. Option
	// "credentials_file". Default: Application Default Credentials. A
	// call Google answers UNAUTHENTICATED (an access token expired by
	// Google's clock or revoked) is sent once more after the credentials
	// are read again, with a new token.
	CredentialsFile string
	// Replication is ReplicationAutomatic or ReplicationUserManaged (then
	// Locations are required). Option "replication". Default automatic.
	Replication string
	// Locations are the user-managed replica locations. Option
	// "locations", comma-separated.
	Locations []string
	// SupersededGrace is how long a superseded version stays enabled; after
	// it, the next Put disables it. 0 keeps every version enabled. Option
	// "superseded_grace" (a Go duration). ConfigFromOptions defaults it to
	// DefaultSupersededGrace.
	SupersededGrace time.Duration
	// DestroyGrace is how long a version stays disabled (after
	// SupersededGrace) before a Put destroys it; 0 never destroys. Option
	// "destroy_grace". ConfigFromOptions defaults it to DefaultDestroyGrace.
	DestroyGrace time.Duration
	// ProjectWritesPerMinute and SecretWritesPerSecond size the client-side
	// write limiters. Options "project_writes_per_minute",
	// "secret_writes_per_second". Defaults 600 and 2. The per-minute
	// limits (this one, ReadsPerMinute and AccessPerMinute) are whole
	// calls, 1 or more (0: the default), and hold in any minute: the
	// project limiters refill at providers.WindowRate of them (590/60 a
	// second for 600, with a burst of 10), as does providers.Quotas.
	ProjectWritesPerMinute float64
	SecretWritesPerSecond  float64
	// ReadsPerMinute sizes the project's client-side read limiter, taken
	// before every RPC that is neither a write nor AccessSecretVersion
	// (GetSecret, GetSecretVersion, each page of ListSecrets and
	// ListSecretVersions): a Put makes two or three of them. Option
	// "project_reads_per_minute". Default DefaultReadsPerMinute (600).
	ReadsPerMinute float64
	// AccessPerMinute sizes the project's client-side limiter on
	// AccessSecretVersion (Get). Option "project_access_per_minute". Default
	// DefaultAccessPerMinute (90,000).
	AccessPerMinute float64
	// Timeout bounds one call when the context has no deadline. Option
	// "timeout". Default 30s.
	Timeout time.Duration
	// ListPageSize is the page_size of each ListSecrets call List makes,
	// 0..MaxListPageSize; 0 lets the server choose (25,000 by the API
	// reference). Option "list_page_size". Default 0.
	ListPageSize int
	// Now is the clock used for version hygiene. Default time.Now.
	Now func() time.Time

	// quotaWindow is the window the per-minute limits hold in: a minute,
	// shorter in tests only (export_test.go).
	quotaWindow time.Duration
	// credentials builds the credentials whose tokens calls carry (unless
	// Insecure): nil for CredentialsFile or Application Default
	// Credentials; a fake's in tests only (export_test.go).
	credentials func() (*auth.Credentials, error)
}

// ConfigFromOptions builds a validated Config, defaults applied, from the
// merged provider options and the environment (getenv nil: os.Getenv).
func ConfigFromOptions(opts map[string]string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	get := func(k string) string { return strings.TrimSpace(opts[k]) }
	c := Config{
		Project:         get(OptionProject),
		Endpoint:        get(OptionEndpoint),
		CABundle:        get(OptionCABundle),
		CredentialsFile: get(OptionCredentialsFile),
		Replication:     strings.ToLower(get(OptionReplication)),
		SupersededGrace: DefaultSupersededGrace,
		DestroyGrace:    DefaultDestroyGrace,
	}
	if c.Project == "" {
		c.Project = strings.TrimSpace(getenv(EnvProject))
	}
	if v := get(OptionInsecure); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretmanager: Config.Insecure (option %q) is not a boolean", OptionInsecure)
		}
		c.Insecure = b
	}
	for _, l := range strings.Split(get(OptionLocations), ",") {
		if l = strings.TrimSpace(l); l != "" {
			c.Locations = append(c.Locations, l)
		}
	}
	for _, d := range []struct {
		opt, field string
		dst        *time.Duration
	}{
		{OptionSupersededGrace, "SupersededGrace", &c.SupersededGrace},
		{OptionDestroyGrace, "DestroyGrace", &c.DestroyGrace},
		{OptionTimeout, "Timeout", &c.Timeout},
	} {
		if v := get(d.opt); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil {
				return Config{}, fmt.Errorf("secretmanager: Config.%s (option %q) is not a duration (e.g. 24h)", d.field, d.opt)
			}
			*d.dst = x
		}
	}
	for _, f := range []struct {
		opt, field string
		dst        *float64
	}{
		{OptionProjectWritesPerMinute, "ProjectWritesPerMinute", &c.ProjectWritesPerMinute},
		{OptionSecretWritesPerSecond, "SecretWritesPerSecond", &c.SecretWritesPerSecond},
		{OptionReadsPerMinute, "ReadsPerMinute", &c.ReadsPerMinute},
		{OptionAccessPerMinute, "AccessPerMinute", &c.AccessPerMinute},
	} {
		if v := get(f.opt); v != "" {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return Config{}, fmt.Errorf("secretmanager: Config.%s (option %q) is not a number", f.field, f.opt)
			}
			*f.dst = x
		}
	}
	if v := get(OptionListPageSize); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Config{}, fmt.Errorf("secretmanager: Config.ListPageSize (option %q) is not an integer", OptionListPageSize)
		}
		c.ListPageSize = n
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c.withDefaults(), nil
}

// Validate checks the config and names the bad field and its option.
func (c Config) Validate() error {
	bad := func(field, opt, format string, args ...any) error {
		return fmt.Errorf("secretmanager: Config.%s (option %q) "+format, append([]any{field, opt}, args...)...)
	}
	if c.Project == "" {
		return bad("Project", OptionProject, "is required (or set %s)", EnvProject)
	}
	if !projectOK(c.Project) {
		return bad("Project", OptionProject, "is not a valid project id")
	}
	if c.ListPageSize < 0 || c.ListPageSize > MaxListPageSize {
		return bad("ListPageSize", OptionListPageSize, "must be between 0 and %d", MaxListPageSize)
	}
	if c.Insecure && c.Endpoint == "" {
		return bad("Insecure", OptionInsecure, "needs an explicit endpoint (plaintext gRPC is for local emulators only)")
	}
	if c.Insecure && (c.CredentialsFile != "" || c.CABundle != "") {
		return bad("Insecure", OptionInsecure, "cannot be combined with credentials_file or ca_bundle")
	}
	if strings.ContainsAny(c.Endpoint, " /\\") {
		return bad("Endpoint", OptionEndpoint, "must be host:port")
	}
	switch c.Replication {
	case "", ReplicationAutomatic:
		if len(c.Locations) > 0 {
			return bad("Locations", OptionLocations, "need replication %q", ReplicationUserManaged)
		}
	case ReplicationUserManaged:
		if len(c.Locations) == 0 {
			return bad("Locations", OptionLocations, "are required with replication %q", ReplicationUserManaged)
		}
		for _, l := range c.Locations {
			if !locationOK(l) {
				return bad("Locations", OptionLocations, "holds an invalid location")
			}
		}
	default:
		return bad("Replication", OptionReplication, "must be %q or %q", ReplicationAutomatic, ReplicationUserManaged)
	}
	if c.SupersededGrace < 0 {
		return bad("SupersededGrace", OptionSupersededGrace, "must not be negative")
	}
	if c.DestroyGrace < 0 {
		return bad("DestroyGrace", OptionDestroyGrace, "must not be negative")
	}
	if c.Timeout < 0 {
		return bad("Timeout", OptionTimeout, "must not be negative")
	}
	for _, f := range []struct {
		field, opt string
		v          float64
		perMinute  bool
	}{
		{"ProjectWritesPerMinute", OptionProjectWritesPerMinute, c.ProjectWritesPerMinute, true},
		{"SecretWritesPerSecond", OptionSecretWritesPerSecond, c.SecretWritesPerSecond, false},
		{"ReadsPerMinute", OptionReadsPerMinute, c.ReadsPerMinute, true},
		{"AccessPerMinute", OptionAccessPerMinute, c.AccessPerMinute, true},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return bad(f.field, f.opt, "must be a positive number")
		}
		if f.perMinute && f.v > 0 && f.v < 1 {
			return bad(f.field, f.opt, "must be at least 1 (a whole number of calls a minute)")
		}
	}
	return nil
}

// projectOK accepts project ids (6-30 of a-z 0-9 -) and numbers, and the
// domain-scoped form "example.com:proj".
func projectOK(p string) bool {
	if len(p) > 100 {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':') {
			return false
		}
	}
	return true
}

func locationOK(l string) bool {
	if l == "" || len(l) > 64 {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func (c Config) withDefaults() Config {
	if c.Replication == "" {
		c.Replication = ReplicationAutomatic
	}
	if c.ProjectWritesPerMinute == 0 {
		c.ProjectWritesPerMinute = DefaultProjectWritesPerMinute
	}
	if c.SecretWritesPerSecond == 0 {
		c.SecretWritesPerSecond = DefaultSecretWritesPerSecond
	}
	if c.ReadsPerMinute == 0 {
		c.ReadsPerMinute = DefaultReadsPerMinute
	}
	if c.AccessPerMinute == 0 {
		c.AccessPerMinute = DefaultAccessPerMinute
	}
	if c.quotaWindow <= 0 {
		c.quotaWindow = time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
