package conjur

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Environment variables LiteLLM's CyberArk secret manager reads, and the
// CA bundle keyrelay adds.
const (
	EnvAPIBase    = "CYBERARK_API_BASE"
	EnvAccount    = "CYBERARK_ACCOUNT"
	EnvUsername   = "CYBERARK_USERNAME"
	EnvAPIKey     = "CYBERARK_API_KEY"
	EnvClientCert = "CYBERARK_CLIENT_CERT"
	EnvClientKey  = "CYBERARK_CLIENT_KEY"
	EnvSSLVerify  = "CYBERARK_SSL_VERIFY"
	EnvCABundle   = "CYBERARK_CA_BUNDLE"
)

// Option names read by ConfigFromOptions. Only OptionPolicyBranch may be set
// by a team (see Register); the others are the operator's.
const (
	OptionAPIBase      = "api_base"
	OptionAccount      = "account"
	OptionCABundle     = "ca_bundle"
	OptionSSLVerify    = "ssl_verify"
	OptionPolicyBranch = "policy_branch"
	OptionTimeout      = "timeout"
	OptionListPageSize = "list_page_size"
	// OptionAllowRootPolicy ("true") permits policy_branch "root". It is
	// the operator's, not a team option, so a team cannot point keyrelay
	// at the root policy.
	OptionAllowRootPolicy = "allow_root_policy"
)

// Defaults and limits.
const (
	// DefaultPolicyBranch is the branch variables are declared in when no
	// policy_branch is configured.
	DefaultPolicyBranch = "keyrelay"
	// DefaultTimeout bounds one provider call when the context has no
	// deadline.
	DefaultTimeout = 30 * time.Second
	// MaxNameLength is the longest name accepted, in bytes.
	MaxNameLength = 512
	// MaxVersions is how many versions Conjur keeps per variable.
	MaxVersions = 20
	// DefaultListPageSize is how many resources List asks for per request
	// when no list_page_size is configured. Conjur has no maximum unless
	// the appliance sets api_resource_list_limit_max
	// (CONJUR_API_RESOURCE_LIST_LIMIT_MAX); keep list_page_size at or
	// below it.
	DefaultListPageSize = 100
	// MinListPageSize is the smallest list_page_size: consecutive pages
	// overlap by one resource (see Provider.List).
	MinListPageSize = 2
)

// Config configures a cyberark provider.
type Config struct {
	// APIBase is the Conjur appliance URL (CYBERARK_API_BASE, option
	// "api_base").
	APIBase string
	// Account is the Conjur account (CYBERARK_ACCOUNT, option "account").
	Account string
	// Username is the login of the role keyrelay authenticates as, e.g.
	// "host/keyrelay" (CYBERARK_USERNAME).
	Username string
	// APIKey is the role's API key (CYBERARK_API_KEY). Never logged. As in
	// LiteLLM it may be empty when a client certificate is configured (the
	// appliance then authenticates the TLS client).
	APIKey string
	// ClientCertFile and ClientKeyFile are a PEM client certificate and key
	// presented in the TLS handshake (CYBERARK_CLIENT_CERT,
	// CYBERARK_CLIENT_KEY), for appliances behind mutual TLS.
	ClientCertFile string
	ClientKeyFile  string
	// CABundle is a PEM file of CAs trusted for the appliance
	// (CYBERARK_CA_BUNDLE, option "ca_bundle"); default: the system pool.
	CABundle string
	// CAPEM is PEM CA data, used in addition to CABundle (tests, embedding).
	CAPEM []byte
	// SSLVerify: false disables certificate verification
	// (CYBERARK_SSL_VERIFY, option "ssl_verify"). Default true.
	SSLVerify bool
	// PolicyBranch is the policy branch variables are declared in (option
	// "policy_branch"). Default DefaultPolicyBranch. "root" only when set
	// explicitly.
	PolicyBranch string
	// AllowRootPolicy permits PolicyBranch "root" (option
	// "allow_root_policy"), where LiteLLM itself declares the variables it
	// writes. Default false.
	AllowRootPolicy bool
	// Timeout bounds one provider call (for List: one page) when the
	// context has no deadline (option "timeout"). Default DefaultTimeout.
	Timeout time.Duration
	// ListPageSize is the limit of each resources request List makes, at
	// least MinListPageSize and at most the appliance's
	// api_resource_list_limit_max when it has one (option
	// "list_page_size"). Default DefaultListPageSize.
	ListPageSize int
}

// ConfigFromOptions builds a Config from provider options and the
// environment (getenv nil means os.Getenv); options win over environment
// variables. The result is validated, defaults applied.
func ConfigFromOptions(opts map[string]string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	pick := func(opt, env string) string {
		if opt != "" {
			if v := strings.TrimSpace(opts[opt]); v != "" {
				return v
			}
		}
		return strings.TrimSpace(getenv(env))
	}
	c := Config{
		APIBase:        pick(OptionAPIBase, EnvAPIBase),
		Account:        pick(OptionAccount, EnvAccount),
		Username:       pick("", EnvUsername),
		APIKey:         getenv(EnvAPIKey),
		ClientCertFile: pick("", EnvClientCert),
		ClientKeyFile:  pick("", EnvClientKey),
		CABundle:       pick(OptionCABundle, EnvCABundle),
		PolicyBranch:   strings.TrimSpace(opts[OptionPolicyBranch]),
		SSLVerify:      true,
	}
	if v := pick(OptionSSLVerify, EnvSSLVerify); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("conjur: Config.SSLVerify (option %q / %s) is not a boolean", OptionSSLVerify, EnvSSLVerify)
		}
		c.SSLVerify = b
	}
	if v := strings.TrimSpace(opts[OptionAllowRootPolicy]); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Config{}, fmt.Errorf("conjur: Config.AllowRootPolicy (option %q) is not a boolean", OptionAllowRootPolicy)
		}
		c.AllowRootPolicy = b
	}
	if v := strings.TrimSpace(opts[OptionTimeout]); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return Config{}, fmt.Errorf("conjur: Config.Timeout (option %q) is not a duration (e.g. 30s)", OptionTimeout)
		}
		c.Timeout = d
	}
	if v := strings.TrimSpace(opts[OptionListPageSize]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Config{}, fmt.Errorf("conjur: Config.ListPageSize (option %q) is not an integer", OptionListPageSize)
		}
		c.ListPageSize = n
	}
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c Config) withDefaults() Config {
	if c.PolicyBranch == "" {
		c.PolicyBranch = DefaultPolicyBranch
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ListPageSize == 0 {
		c.ListPageSize = DefaultListPageSize
	}
	return c
}

var (
	branchRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$`)
	accountRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// Validate checks the config and names the bad field. Zero Timeout,
// PolicyBranch and ListPageSize are valid (they take their defaults).
func (c Config) Validate() error {
	switch {
	case c.APIBase == "":
		return fmt.Errorf("conjur: Config.APIBase (%s) is required", EnvAPIBase)
	case !strings.HasPrefix(c.APIBase, "https://") && !strings.HasPrefix(c.APIBase, "http://"):
		return fmt.Errorf("conjur: Config.APIBase (%s) must be an http(s) URL", EnvAPIBase)
	case c.Account == "":
		return fmt.Errorf("conjur: Config.Account (%s) is required", EnvAccount)
	case !accountRE.MatchString(c.Account):
		return fmt.Errorf("conjur: Config.Account (%s) has characters outside A-Z a-z 0-9 _ . -", EnvAccount)
	case c.Username == "":
		return fmt.Errorf("conjur: Config.Username (%s) is required", EnvUsername)
	case c.APIKey == "" && c.ClientCertFile == "":
		return fmt.Errorf("conjur: Config.APIKey (%s) is required unless a client certificate (%s, %s) is set", EnvAPIKey, EnvClientCert, EnvClientKey)
	case (c.ClientCertFile == "") != (c.ClientKeyFile == ""):
		return fmt.Errorf("conjur: Config.ClientCertFile (%s) and Config.ClientKeyFile (%s) must be set together", EnvClientCert, EnvClientKey)
	case c.Timeout < 0:
		return fmt.Errorf("conjur: Config.Timeout (option %q) must not be negative", OptionTimeout)
	case c.ListPageSize != 0 && c.ListPageSize < MinListPageSize:
		return fmt.Errorf("conjur: Config.ListPageSize (option %q) must be at least %d", OptionListPageSize, MinListPageSize)
	case c.PolicyBranch != "" && !branchRE.MatchString(c.PolicyBranch):
		return fmt.Errorf("conjur: Config.PolicyBranch (option %q) must be slash-separated segments of A-Z a-z 0-9 _ . - (no leading '.' or '-')", OptionPolicyBranch)
	case c.PolicyBranch == "root" && !c.AllowRootPolicy:
		return fmt.Errorf("conjur: Config.PolicyBranch (option %q) is the root policy, which needs Config.AllowRootPolicy (option %q)", OptionPolicyBranch, OptionAllowRootPolicy)
	case c.PolicyBranch != "" && hasDotSegment(c.PolicyBranch):
		return fmt.Errorf("conjur: Config.PolicyBranch (option %q) must not contain '.' or '..' segments", OptionPolicyBranch)
	}
	return nil
}

func hasDotSegment(s string) bool {
	for _, seg := range strings.Split(s, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
