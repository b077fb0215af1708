package awsconfig

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Option keys read by FromOptions. The aws_* keys are LiteLLM's
// key_management_settings names; region, endpoint, ca_bundle and
// max_attempts are keyrelay's.
const (
	OptionRegion              = "region"
	OptionEndpoint            = "endpoint"
	OptionCABundle            = "ca_bundle"
	OptionMaxAttempts         = "max_attempts"
	OptionAWSRegionName       = "aws_region_name"
	OptionAWSAccessKeyID      = "aws_access_key_id"
	OptionAWSSecretAccessKey  = "aws_secret_access_key"
	OptionAWSSessionToken     = "aws_session_token"
	OptionAWSProfileName      = "aws_profile_name"
	OptionAWSRoleName         = "aws_role_name"
	OptionAWSSessionName      = "aws_session_name"
	OptionAWSExternalID       = "aws_external_id"
	OptionAWSWebIdentityToken = "aws_web_identity_token"
	OptionAWSSTSEndpoint      = "aws_sts_endpoint"
)

// Environment variables read (through getenv) when the matching option is
// not set: LiteLLM's names, plus the SDK's standard region and CA bundle
// variables.
const (
	EnvRegionName       = "AWS_REGION_NAME"
	EnvRegion           = "AWS_REGION"
	EnvDefaultRegion    = "AWS_DEFAULT_REGION"
	EnvCABundle         = "AWS_CA_BUNDLE"
	EnvAccessKeyID      = "AWS_ACCESS_KEY_ID"
	EnvSecretAccessKey  = "AWS_SECRET_ACCESS_KEY"
	EnvSessionToken     = "AWS_SESSION_TOKEN"
	EnvProfileName      = "AWS_PROFILE_NAME"
	EnvRoleName         = "AWS_ROLE_NAME"
	EnvSessionName      = "AWS_SESSION_NAME"
	EnvExternalID       = "AWS_EXTERNAL_ID"
	EnvWebIdentityToken = "AWS_WEB_IDENTITY_TOKEN"
	EnvSTSEndpoint      = "AWS_STS_ENDPOINT"
	// EnvIRSARoleARN and EnvIRSATokenFile are set by EKS for IAM roles for
	// service accounts; the SDK's default chain reads them itself.
	EnvIRSARoleARN   = "AWS_ROLE_ARN"
	EnvIRSATokenFile = "AWS_WEB_IDENTITY_TOKEN_FILE"
)

// Defaults.
const (
	// DefaultRegion is used when no option, variable or profile names a
	// region: LiteLLM's fallback.
	DefaultRegion = "us-west-2"
	// DefaultSessionName is the role session name when aws_session_name is
	// not set.
	DefaultSessionName = "keyrelay"
	// DefaultMaxAttempts is the SDK's attempts per call (first try
	// included). keyrelay's worker retries failed events itself, so the SDK
	// only smooths over short blips.
	DefaultMaxAttempts = 3
	// MaxMaxAttempts bounds Settings.MaxAttempts.
	MaxMaxAttempts = 10
)

// Settings is one AWS connection: region, endpoints, trust and the
// credential source. Build it with FromOptions; the zero value means the
// SDK's defaults. Fields hold credentials: String and GoString redact them.
type Settings struct {
	// Region of the service. Empty means the profile's region, else
	// DefaultRegion. Options "region", then "aws_region_name"; variables
	// AWS_REGION_NAME, AWS_REGION, AWS_DEFAULT_REGION.
	Region string
	// Endpoint overrides the service endpoint (an absolute http or https
	// URL). Option "endpoint". Default: the SDK's regional endpoint.
	Endpoint string
	// CABundle is a PEM file of certificate authorities trusted for every
	// AWS call (STS included) in addition to none: it replaces the system
	// pool, as the SDK's AWS_CA_BUNDLE does. Option "ca_bundle"; variable
	// AWS_CA_BUNDLE.
	CABundle string
	// MaxAttempts is the SDK's attempts per call, 1..MaxMaxAttempts.
	// Option "max_attempts". Default: DefaultMaxAttempts (3).
	MaxAttempts int

	// AccessKeyID, SecretAccessKey and SessionToken are static credentials
	// (the first two together). Options aws_access_key_id, ...; variables
	// AWS_ACCESS_KEY_ID, ... Put them in the configuration file as
	// os.environ/NAME references, never in team settings.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// Profile is a shared config profile. Option aws_profile_name;
	// variable AWS_PROFILE_NAME.
	Profile string
	// RoleARN is a role to assume. Option aws_role_name; variable
	// AWS_ROLE_NAME.
	RoleARN string
	// SessionName is the role session name. Option aws_session_name;
	// variable AWS_SESSION_NAME. Default: DefaultSessionName.
	SessionName string
	// ExternalID is AssumeRole's ExternalId (not used with a web identity
	// token, which STS does not accept it with). Option aws_external_id;
	// variable AWS_EXTERNAL_ID.
	ExternalID string
	// WebIdentityToken is an OIDC token for AssumeRoleWithWebIdentity with
	// RoleARN; a value starting with "/" names a file holding it, read on
	// every credential refresh. Option aws_web_identity_token; variable
	// AWS_WEB_IDENTITY_TOKEN. Ignored without RoleARN, as in LiteLLM.
	WebIdentityToken string
	// STSEndpoint is the STS endpoint URL for the role calls. Option
	// aws_sts_endpoint; variable AWS_STS_ENDPOINT. Ignored without RoleARN.
	STSEndpoint string

	// irsaRoleARN and irsaTokenFile are EKS's AWS_ROLE_ARN and
	// AWS_WEB_IDENTITY_TOKEN_FILE as getenv saw them.
	irsaRoleARN, irsaTokenFile string
}

// FromOptions reads Settings from a provider options map and the
// environment (getenv nil means os.Getenv), option keys first. Keys it does
// not know are ignored: the map also carries other providers' options. The
// result is validated; errors name the option, never its value.
func FromOptions(opts map[string]string, getenv func(string) string) (Settings, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	get := func(key string, envs ...string) string {
		if v := strings.TrimSpace(opts[key]); v != "" {
			return v
		}
		for _, e := range envs {
			if v := strings.TrimSpace(getenv(e)); v != "" {
				return v
			}
		}
		return ""
	}
	s := Settings{
		Region:           get(OptionRegion),
		Endpoint:         get(OptionEndpoint),
		CABundle:         get(OptionCABundle, EnvCABundle),
		AccessKeyID:      get(OptionAWSAccessKeyID, EnvAccessKeyID),
		SecretAccessKey:  get(OptionAWSSecretAccessKey, EnvSecretAccessKey),
		SessionToken:     get(OptionAWSSessionToken, EnvSessionToken),
		Profile:          get(OptionAWSProfileName, EnvProfileName),
		RoleARN:          get(OptionAWSRoleName, EnvRoleName),
		SessionName:      get(OptionAWSSessionName, EnvSessionName),
		ExternalID:       get(OptionAWSExternalID, EnvExternalID),
		WebIdentityToken: get(OptionAWSWebIdentityToken, EnvWebIdentityToken),
		STSEndpoint:      get(OptionAWSSTSEndpoint, EnvSTSEndpoint),
		irsaRoleARN:      strings.TrimSpace(getenv(EnvIRSARoleARN)),
		irsaTokenFile:    strings.TrimSpace(getenv(EnvIRSATokenFile)),
	}
	if s.Region == "" {
		s.Region = get(OptionAWSRegionName, EnvRegionName, EnvRegion, EnvDefaultRegion)
	}
	if v := get(OptionMaxAttempts); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Settings{}, fmt.Errorf("awsconfig: option %q (Settings.MaxAttempts) is not an integer", OptionMaxAttempts)
		}
		s.MaxAttempts = n
	}
	return s, s.Validate()
}

var (
	regionRE      = regexp.MustCompile(`^[a-z0-9-]+$`)
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE  = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// Validate checks the settings and names the bad field and its option.
func (s Settings) Validate() error {
	bad := func(field, option, format string, args ...any) error {
		return fmt.Errorf("awsconfig: Settings.%s (option %q) "+format, append([]any{field, option}, args...)...)
	}
	if s.Region != "" && !regionRE.MatchString(s.Region) {
		return bad("Region", OptionAWSRegionName, "must be lowercase letters, digits and hyphens (e.g. us-east-1)")
	}
	if err := checkURL(s.Endpoint); err != nil {
		return bad("Endpoint", OptionEndpoint, "%v", err)
	}
	if err := checkURL(s.STSEndpoint); err != nil {
		return bad("STSEndpoint", OptionAWSSTSEndpoint, "%v", err)
	}
	if s.MaxAttempts < 0 || s.MaxAttempts > MaxMaxAttempts {
		return bad("MaxAttempts", OptionMaxAttempts, "must be between 1 and %d", MaxMaxAttempts)
	}
	if (s.AccessKeyID == "") != (s.SecretAccessKey == "") {
		return bad("AccessKeyID", OptionAWSAccessKeyID, "and %q must be set together", OptionAWSSecretAccessKey)
	}
	if s.SessionToken != "" && s.AccessKeyID == "" {
		return bad("SessionToken", OptionAWSSessionToken, "needs %q and %q", OptionAWSAccessKeyID, OptionAWSSecretAccessKey)
	}
	if s.RoleARN != "" && !strings.HasPrefix(s.RoleARN, "arn:") {
		return bad("RoleARN", OptionAWSRoleName, "must be a role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
	}
	if s.SessionName != "" && !sessionNameRE.MatchString(s.SessionName) {
		return bad("SessionName", OptionAWSSessionName, `must be 2 to 64 characters of letters, digits and "_+=,.@-"`)
	}
	if s.ExternalID != "" && (len(s.ExternalID) < 2 || len(s.ExternalID) > 1224 || !externalIDRE.MatchString(s.ExternalID)) {
		return bad("ExternalID", OptionAWSExternalID, `must be 2 to 1224 characters of letters, digits and "_+=,.@:/-"`)
	}
	if strings.ContainsRune(s.CABundle, 0) {
		return bad("CABundle", OptionCABundle, "contains a NUL byte")
	}
	return nil
}

func checkURL(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an absolute http:// or https:// URL")
	}
	if u.User != nil {
		return fmt.Errorf("must not carry user information")
	}
	return nil
}

// sessionName returns the role session name to use.
func (s Settings) sessionName() string {
	if s.SessionName != "" {
		return s.SessionName
	}
	return DefaultSessionName
}

// usesIRSARole reports whether the process already runs as RoleARN through
// EKS IRSA, in which case the SDK's default chain assumes it.
func (s Settings) usesIRSARole() bool {
	return s.RoleARN != "" && s.WebIdentityToken == "" && s.irsaTokenFile != "" && s.irsaRoleARN == s.RoleARN
}

// Account returns the account id in RoleARN, or "" without a role. It is
// not a secret and identifies whose quotas calls count against.
func (s Settings) Account() string {
	parts := strings.Split(s.RoleARN, ":")
	if len(parts) >= 6 {
		return parts[4]
	}
	return ""
}

// String describes the settings with every credential redacted.
func (s Settings) String() string {
	red := func(v string) string {
		if v == "" {
			return `""`
		}
		return "REDACTED"
	}
	return fmt.Sprintf("awsconfig.Settings{Region:%q Endpoint:%q CABundle:%q MaxAttempts:%d AccessKeyID:%s SecretAccessKey:%s SessionToken:%s Profile:%q RoleARN:%q SessionName:%q ExternalID:%s WebIdentityToken:%s STSEndpoint:%q}",
		s.Region, s.Endpoint, s.CABundle, s.MaxAttempts, red(s.AccessKeyID), red(s.SecretAccessKey), red(s.SessionToken),
		s.Profile, s.RoleARN, s.SessionName, red(s.ExternalID), red(s.WebIdentityToken), s.STSEndpoint)
}

// GoString is String, so %#v redacts too.
func (s Settings) GoString() string { return s.String() }
