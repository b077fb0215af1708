package vault

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Option names read by ConfigFromOptions: keyrelay.providers.hashicorp_vault
// in the config file, or a team's provider options (team values win key by
// key). Each option falls back to the LiteLLM environment variable named in
// its comment, then to the default.
const (
	OptionAddr             = "addr"               // HCP_VAULT_ADDR
	OptionToken            = "token"              // HCP_VAULT_TOKEN
	OptionNamespace        = "namespace"          // HCP_VAULT_SECRET_NAMESPACE, then HCP_VAULT_NAMESPACE
	OptionLoginNamespace   = "login_namespace"    // HCP_VAULT_LOGIN_NAMESPACE, then HCP_VAULT_NAMESPACE
	OptionMount            = "mount"              // HCP_VAULT_MOUNT_NAME
	OptionPathPrefix       = "path_prefix"        // HCP_VAULT_PATH_PREFIX
	OptionDataKey          = "data"               // LiteLLM's team option "data"
	OptionAuthMethod       = "auth_method"        // "", "token", "approle", "cert"
	OptionAppRoleRoleID    = "approle_role_id"    // HCP_VAULT_APPROLE_ROLE_ID
	OptionAppRoleSecretID  = "approle_secret_id"  // HCP_VAULT_APPROLE_SECRET_ID
	OptionAppRoleMountPath = "approle_mount_path" // HCP_VAULT_APPROLE_MOUNT_PATH
	OptionClientCert       = "client_cert"        // HCP_VAULT_CLIENT_CERT
	OptionClientKey        = "client_key"         // HCP_VAULT_CLIENT_KEY
	OptionCertRole         = "cert_role"          // HCP_VAULT_CERT_ROLE
	OptionCertMountPath    = "cert_mount_path"
	OptionCACert           = "ca_cert"
	OptionTLSServerName    = "tls_server_name"
	OptionTLSSkipVerify    = "tls_skip_verify"
	OptionDeleteMode       = "delete_mode"
	OptionMaxVersions      = "max_versions"
	OptionEventHistory     = "event_history"
	OptionTimeout          = "timeout"
	OptionMaxRetries       = "max_retries"
	OptionRateLimit        = "rate_limit"
	OptionRateBurst        = "rate_burst"
)

// TeamOptions are the options a team's settings may safely override:
// LiteLLM's team overrides (namespace, mount, path_prefix, data). The
// others (address, TLS, credentials, auth method) should come from the
// global configuration only: the provider receives global and team options
// merged and cannot tell them apart, and a team-chosen addr would receive
// the global credentials.
var TeamOptions = []string{OptionNamespace, OptionMount, OptionPathPrefix, OptionDataKey}

// LiteLLM's environment variables, read through providers.Config.Getenv.
const (
	EnvAddr             = "HCP_VAULT_ADDR"
	EnvToken            = "HCP_VAULT_TOKEN"
	EnvNamespace        = "HCP_VAULT_NAMESPACE"
	EnvLoginNamespace   = "HCP_VAULT_LOGIN_NAMESPACE"
	EnvSecretNamespace  = "HCP_VAULT_SECRET_NAMESPACE"
	EnvMountName        = "HCP_VAULT_MOUNT_NAME"
	EnvPathPrefix       = "HCP_VAULT_PATH_PREFIX"
	EnvAppRoleRoleID    = "HCP_VAULT_APPROLE_ROLE_ID"
	EnvAppRoleSecretID  = "HCP_VAULT_APPROLE_SECRET_ID"
	EnvAppRoleMountPath = "HCP_VAULT_APPROLE_MOUNT_PATH"
	EnvClientCert       = "HCP_VAULT_CLIENT_CERT"
	EnvClientKey        = "HCP_VAULT_CLIENT_KEY"
	EnvCertRole         = "HCP_VAULT_CERT_ROLE"
)

// liteLLMAliases maps the field names of LiteLLM's Hashicorp Vault settings
// (its Admin UI and config overrides) to keyrelay's option names, so a
// LiteLLM settings block can be pasted as provider options. The keyrelay
// name wins when both are set.
var liteLLMAliases = map[string]string{
	"vault_addr":         OptionAddr,
	"vault_token":        OptionToken,
	"vault_namespace":    OptionNamespace,
	"vault_mount_name":   OptionMount,
	"vault_path_prefix":  OptionPathPrefix,
	"vault_cert_role":    OptionCertRole,
	"approle_role_id":    OptionAppRoleRoleID,
	"approle_secret_id":  OptionAppRoleSecretID,
	"approle_mount_path": OptionAppRoleMountPath,
	"client_cert":        OptionClientCert,
	"client_key":         OptionClientKey,
}

// AuthMethod selects how the provider obtains its Vault token.
type AuthMethod string

// Authentication methods.
const (
	// AuthAuto picks LiteLLM's order: AppRole when a role id and secret id
	// are set, else TLS certificate when a client certificate and key are
	// set, else the token.
	AuthAuto AuthMethod = ""
	// AuthToken uses Config.Token as given. When the token has a TTL and is
	// renewable it is renewed before it expires.
	AuthToken AuthMethod = "token"
	// AuthAppRole logs in at auth/<AppRoleMountPath>/login.
	AuthAppRole AuthMethod = "approle"
	// AuthCert logs in at auth/<CertMountPath>/login with the client
	// certificate (Vault's listener must be TLS).
	AuthCert AuthMethod = "cert"
)

// DeleteMode says what Delete does without DeleteRequest.Force.
type DeleteMode string

// Delete modes.
const (
	// DeleteSoft marks the current version deleted (DELETE <mount>/data/<path>,
	// as LiteLLM does). The versions and the metadata stay; `vault kv
	// undelete` recovers it and a later Put restores it.
	DeleteSoft DeleteMode = "soft"
	// DeleteDestroy destroys every version's data (PUT <mount>/destroy/<path>)
	// and keeps the metadata, so ownership and version numbers survive.
	DeleteDestroy DeleteMode = "destroy"
	// DeleteMetadata removes the metadata and every version
	// (DELETE <mount>/metadata/<path>). DeleteRequest.Force always does this.
	DeleteMetadata DeleteMode = "metadata"
)

// Defaults.
const (
	// DefaultAddr is LiteLLM's default for HCP_VAULT_ADDR.
	DefaultAddr = "http://127.0.0.1:8200"
	// DefaultMount is LiteLLM's default for HCP_VAULT_MOUNT_NAME (the dev
	// server's KV v2 mount).
	DefaultMount = "secret"
	// DefaultDataKey is the field holding the value in the KV data, as
	// LiteLLM writes and reads it: {"key": "<value>"}.
	DefaultDataKey = "key"
	// DefaultAppRoleMountPath is LiteLLM's default AppRole mount.
	DefaultAppRoleMountPath = "approle"
	// DefaultCertMountPath is where cert auth is mounted (LiteLLM always
	// uses auth/cert/login).
	DefaultCertMountPath = "cert"
	// DefaultDeleteMode is DeleteSoft.
	DefaultDeleteMode = DeleteSoft
	// DefaultEventHistory is how many versions Versions reports with their
	// event ids: Vault KV v2 keeps 10 versions unless max_versions says
	// otherwise.
	DefaultEventHistory = 10
	// MaxEventHistory bounds EventHistory: custom_metadata holds at most 64
	// keys, shared with the ownership tags and extra tags.
	MaxEventHistory = 32
	// DefaultTimeout bounds each HTTP request (the caller's context may end
	// it sooner).
	DefaultTimeout = 30 * time.Second
	// DefaultMaxRetries is the number of retries the Vault client makes by
	// itself on 5xx, 412 and 429 responses and connection errors. keyrelay's
	// worker retries with backoff honouring Retry-After, so the default is
	// none.
	DefaultMaxRetries = 0
)

// Config configures a Vault provider. Build it with ConfigFromOptions (which
// applies LiteLLM's environment variables and the defaults) or fill it in
// and call Validate.
type Config struct {
	// Addr is Vault's address, http:// or https://. Option "addr",
	// HCP_VAULT_ADDR. Default DefaultAddr.
	Addr string
	// Token is a Vault token for AuthToken. Option "token", HCP_VAULT_TOKEN.
	Token string
	// Namespace is the Vault Enterprise namespace the secrets live in,
	// sent, as LiteLLM does, as the first segments of every secret path
	// (never as a header). Option "namespace" (a team's "namespace"
	// overrides it), else HCP_VAULT_SECRET_NAMESPACE, else
	// HCP_VAULT_NAMESPACE. Default: none (root namespace).
	Namespace string
	// LoginNamespace is the namespace of the AppRole or cert login, and of
	// the token (a static one too): sent as the X-Vault-Namespace header on
	// the login and on the token's own requests (lookup-self, renew-self,
	// revoke-self), never on secret requests. Option "login_namespace",
	// else HCP_VAULT_LOGIN_NAMESPACE, else HCP_VAULT_NAMESPACE. Default:
	// none (root namespace).
	LoginNamespace string
	// Mount is the KV v2 mount path. Option "mount", HCP_VAULT_MOUNT_NAME.
	// Default DefaultMount ("secret").
	Mount string
	// PathPrefix is put between the mount and the secret name: a secret
	// named "litellm/sk-1" with PathPrefix "team-a" is stored at
	// <mount>/data/team-a/litellm/sk-1. Option "path_prefix",
	// HCP_VAULT_PATH_PREFIX. Default: none.
	PathPrefix string
	// DataKey is the field of the KV data holding the value. Option "data"
	// (LiteLLM's team option). Default DefaultDataKey ("key").
	DataKey string
	// AuthMethod selects the authentication. Option "auth_method".
	// Default AuthAuto (LiteLLM's order).
	AuthMethod AuthMethod
	// AppRoleRoleID and AppRoleSecretID are the AppRole credentials.
	// Options "approle_role_id", "approle_secret_id";
	// HCP_VAULT_APPROLE_ROLE_ID, HCP_VAULT_APPROLE_SECRET_ID.
	AppRoleRoleID   string
	AppRoleSecretID string
	// AppRoleMountPath is the AppRole auth mount. Option
	// "approle_mount_path", HCP_VAULT_APPROLE_MOUNT_PATH. Default
	// DefaultAppRoleMountPath ("approle").
	AppRoleMountPath string
	// ClientCert and ClientKey are PEM files of the TLS client certificate
	// for cert auth. They are presented on every TLS connection. Options
	// "client_cert", "client_key"; HCP_VAULT_CLIENT_CERT,
	// HCP_VAULT_CLIENT_KEY.
	ClientCert string
	ClientKey  string
	// CertRole is the cert auth role to log in with ("name" in the login
	// request); empty lets Vault pick the matching role. Option
	// "cert_role", HCP_VAULT_CERT_ROLE.
	CertRole string
	// CertMountPath is the cert auth mount. Option "cert_mount_path".
	// Default DefaultCertMountPath ("cert").
	CertMountPath string
	// CACert is a PEM bundle of the CAs to trust for Vault's certificate,
	// instead of the system pool. Option "ca_cert".
	CACert string
	// TLSServerName overrides the name checked in Vault's certificate.
	// Option "tls_server_name".
	TLSServerName string
	// TLSSkipVerify disables verification of Vault's certificate (never in
	// production). Option "tls_skip_verify" (a boolean). Default false.
	TLSSkipVerify bool
	// DeleteMode is what Delete does without Force. Option "delete_mode":
	// "soft", "destroy" or "metadata". Default DefaultDeleteMode ("soft").
	DeleteMode DeleteMode
	// MaxVersions is written as max_versions on the metadata of secrets
	// keyrelay creates; 0 leaves the mount's setting (10 by default).
	// Option "max_versions". Default 0.
	MaxVersions int
	// EventHistory is how many of the newest versions Versions reports
	// with the event id (idempotency key) that wrote them, reading each
	// one's data (versions written before DataEventKey kept it in
	// custom_metadata, where it stays), 1 to MaxEventHistory. Option
	// "event_history". Default DefaultEventHistory (10).
	EventHistory int
	// Timeout bounds each HTTP request. Option "timeout" (a Go duration).
	// Default DefaultTimeout (30s).
	Timeout time.Duration
	// MaxRetries is how often the Vault client retries a request by itself.
	// Option "max_retries". Default DefaultMaxRetries (0).
	MaxRetries int
	// RateLimit caps this provider instance's requests per second to
	// Vault; 0 means no limit. Option "rate_limit". Default 0.
	RateLimit float64
	// RateBurst is the limiter's burst. Option "rate_burst". Default: the
	// rate rounded up, at least 1.
	RateBurst int
}

// ConfigFromOptions builds a Config from a provider options map and LiteLLM's
// environment variables (getenv; nil means none are set). Options win over
// the environment; keys this provider does not know are ignored (the map
// merges global and team options, which may carry other backends' keys).
// The result is validated.
func ConfigFromOptions(opts map[string]string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	get := func(name string) (string, bool) {
		if v, ok := opts[name]; ok {
			return strings.TrimSpace(v), true
		}
		for alias, canon := range liteLLMAliases {
			if canon == name && alias != name {
				if v, ok := opts[alias]; ok {
					return strings.TrimSpace(v), true
				}
			}
		}
		return "", false
	}
	str := func(name string, envs ...string) string {
		if v, ok := get(name); ok && v != "" {
			return v
		}
		for _, e := range envs {
			if v := strings.TrimSpace(getenv(e)); v != "" {
				return v
			}
		}
		return ""
	}
	c := Config{
		Addr:             str(OptionAddr, EnvAddr),
		Token:            str(OptionToken, EnvToken),
		Namespace:        str(OptionNamespace, EnvSecretNamespace, EnvNamespace),
		LoginNamespace:   str(OptionLoginNamespace, EnvLoginNamespace, EnvNamespace),
		Mount:            str(OptionMount, EnvMountName),
		PathPrefix:       str(OptionPathPrefix, EnvPathPrefix),
		DataKey:          str(OptionDataKey),
		AuthMethod:       AuthMethod(strings.ToLower(str(OptionAuthMethod))),
		AppRoleRoleID:    str(OptionAppRoleRoleID, EnvAppRoleRoleID),
		AppRoleSecretID:  str(OptionAppRoleSecretID, EnvAppRoleSecretID),
		AppRoleMountPath: str(OptionAppRoleMountPath, EnvAppRoleMountPath),
		ClientCert:       str(OptionClientCert, EnvClientCert),
		ClientKey:        str(OptionClientKey, EnvClientKey),
		CertRole:         str(OptionCertRole, EnvCertRole),
		CertMountPath:    str(OptionCertMountPath),
		CACert:           str(OptionCACert),
		TLSServerName:    str(OptionTLSServerName),
		DeleteMode:       DeleteMode(strings.ToLower(str(OptionDeleteMode))),
	}
	var errs []error
	if s := str(OptionTLSSkipVerify); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("vault: option %q: %q is not a boolean", OptionTLSSkipVerify, s))
		}
		c.TLSSkipVerify = b
	}
	intOpt := func(name string, dst *int) {
		if s := str(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("vault: option %q: %q is not an integer", name, s))
				return
			}
			*dst = n
		}
	}
	intOpt(OptionMaxVersions, &c.MaxVersions)
	intOpt(OptionEventHistory, &c.EventHistory)
	intOpt(OptionMaxRetries, &c.MaxRetries)
	intOpt(OptionRateBurst, &c.RateBurst)
	if s := str(OptionTimeout); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("vault: option %q: %q is not a duration (e.g. 30s)", OptionTimeout, s))
		}
		c.Timeout = d
	}
	if s := str(OptionRateLimit); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("vault: option %q: %q is not a number", OptionRateLimit, s))
		}
		c.RateLimit = f
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	c.setDefaults()
	return c, c.Validate()
}

// setDefaults fills the zero fields with their defaults. Namespace and path
// values are normalized as LiteLLM does: surrounding spaces and slashes are
// trimmed.
func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	c.Addr = strings.TrimRight(c.Addr, "/")
	c.Namespace = trimSlashes(c.Namespace)
	c.LoginNamespace = trimSlashes(c.LoginNamespace)
	c.Mount = trimSlashes(c.Mount)
	if c.Mount == "" {
		c.Mount = DefaultMount
	}
	c.PathPrefix = trimSlashes(c.PathPrefix)
	if c.DataKey == "" {
		c.DataKey = DefaultDataKey
	}
	c.AppRoleMountPath = trimSlashes(c.AppRoleMountPath)
	if c.AppRoleMountPath == "" {
		c.AppRoleMountPath = DefaultAppRoleMountPath
	}
	c.CertMountPath = trimSlashes(c.CertMountPath)
	if c.CertMountPath == "" {
		c.CertMountPath = DefaultCertMountPath
	}
	if c.DeleteMode == "" {
		c.DeleteMode = DefaultDeleteMode
	}
	if c.EventHistory == 0 {
		c.EventHistory = DefaultEventHistory
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RateLimit > 0 && c.RateBurst == 0 {
		c.RateBurst = int(math.Max(1, math.Ceil(c.RateLimit)))
	}
}

func trimSlashes(s string) string { return strings.Trim(strings.TrimSpace(s), "/") }

// Method returns the authentication method c uses: AuthMethod, or under
// AuthAuto the first of AppRole, cert and token whose credentials are set.
func (c Config) Method() AuthMethod {
	if c.AuthMethod != AuthAuto {
		return c.AuthMethod
	}
	switch {
	case c.AppRoleRoleID != "" && c.AppRoleSecretID != "":
		return AuthAppRole
	case c.ClientCert != "" && c.ClientKey != "":
		return AuthCert
	}
	return AuthToken
}

// Validate checks the config (after defaults) and names the bad field. Its
// errors never contain a token or secret id.
func (c Config) Validate() error {
	field := func(f, opt, format string, args ...any) error {
		return fmt.Errorf("vault: Config.%s (option %q): "+format, append([]any{f, opt}, args...)...)
	}
	u, err := url.Parse(c.Addr)
	switch {
	case c.Addr == "":
		return field("Addr", OptionAddr, "empty (set it or %s)", EnvAddr)
	case err != nil:
		return field("Addr", OptionAddr, "not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return field("Addr", OptionAddr, "scheme %q, want http or https", u.Scheme)
	case u.Host == "":
		return field("Addr", OptionAddr, "no host")
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return field("Addr", OptionAddr, "must not carry a query, fragment or user info")
	}
	for _, p := range []struct{ f, opt, v string }{
		{"Namespace", OptionNamespace, c.Namespace},
		{"LoginNamespace", OptionLoginNamespace, c.LoginNamespace},
		{"Mount", OptionMount, c.Mount},
		{"PathPrefix", OptionPathPrefix, c.PathPrefix},
		{"AppRoleMountPath", OptionAppRoleMountPath, c.AppRoleMountPath},
		{"CertMountPath", OptionCertMountPath, c.CertMountPath},
	} {
		if p.v == "" {
			continue
		}
		if err := checkPath(p.v); err != nil {
			return field(p.f, p.opt, "%v", err)
		}
	}
	if c.Mount == "" {
		return field("Mount", OptionMount, "empty")
	}
	if c.DataKey == "" || !utf8.ValidString(c.DataKey) || strings.IndexFunc(c.DataKey, unicode.IsControl) >= 0 {
		return field("DataKey", OptionDataKey, "must be a non-empty printable string")
	}
	if c.DataKey == DataEventKey {
		return field("DataKey", OptionDataKey, "%q holds keyrelay's event id next to the value", DataEventKey)
	}
	switch c.DeleteMode {
	case DeleteSoft, DeleteDestroy, DeleteMetadata:
	default:
		return field("DeleteMode", OptionDeleteMode, "%q, want soft, destroy or metadata", c.DeleteMode)
	}
	if c.MaxVersions < 0 {
		return field("MaxVersions", OptionMaxVersions, "%d is negative", c.MaxVersions)
	}
	if c.EventHistory < 1 || c.EventHistory > MaxEventHistory {
		return field("EventHistory", OptionEventHistory, "%d, want 1 to %d", c.EventHistory, MaxEventHistory)
	}
	if c.Timeout < 0 {
		return field("Timeout", OptionTimeout, "%v is negative", c.Timeout)
	}
	if c.MaxRetries < 0 || c.MaxRetries > 10 {
		return field("MaxRetries", OptionMaxRetries, "%d, want 0 to 10", c.MaxRetries)
	}
	if c.RateLimit < 0 || math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) {
		return field("RateLimit", OptionRateLimit, "must be a non-negative number")
	}
	if c.RateBurst < 0 {
		return field("RateBurst", OptionRateBurst, "%d is negative", c.RateBurst)
	}
	if (c.ClientCert == "") != (c.ClientKey == "") {
		return field("ClientCert", OptionClientCert, "client_cert and client_key (%s, %s) must be set together", EnvClientCert, EnvClientKey)
	}
	switch c.Method() {
	case AuthToken:
		if c.Token == "" {
			return field("Token", OptionToken, "no credentials: set %s, or %s and %s, or %s and %s",
				EnvToken, EnvAppRoleRoleID, EnvAppRoleSecretID, EnvClientCert, EnvClientKey)
		}
	case AuthAppRole:
		if c.AppRoleRoleID == "" {
			return field("AppRoleRoleID", OptionAppRoleRoleID, "empty (set it or %s)", EnvAppRoleRoleID)
		}
		if c.AppRoleSecretID == "" {
			return field("AppRoleSecretID", OptionAppRoleSecretID, "empty (set it or %s)", EnvAppRoleSecretID)
		}
	case AuthCert:
		if c.ClientCert == "" {
			return field("ClientCert", OptionClientCert, "cert auth needs client_cert and client_key (%s, %s)", EnvClientCert, EnvClientKey)
		}
		if u.Scheme != "https" {
			return field("Addr", OptionAddr, "cert auth needs an https:// address")
		}
	default:
		return field("AuthMethod", OptionAuthMethod, "%q, want token, approle or cert", c.AuthMethod)
	}
	return nil
}

// String describes the config without credentials.
func (c Config) String() string {
	return fmt.Sprintf("vault{addr=%s auth=%s namespace=%q login_namespace=%q mount=%q path_prefix=%q data=%q delete_mode=%s}",
		c.Addr, c.Method(), c.Namespace, c.LoginNamespace, c.Mount, c.PathPrefix, c.DataKey, c.DeleteMode)
}

// GoString keeps credentials out of %#v.
func (c Config) GoString() string { return c.String() }
