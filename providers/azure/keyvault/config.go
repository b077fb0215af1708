package keyvault

import (
	"fmt"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Option names read by ConfigFromOptions.
const (
	OptionVaultURL                             = "vault_url"
	OptionTenantID                             = "tenant_id"
	OptionClientID                             = "client_id"
	OptionClientSecret                         = "client_secret"
	OptionAuthorityHost                        = "authority_host"
	OptionCABundle                             = "ca_bundle"
	OptionDisableChallengeResourceVerification = "disable_challenge_resource_verification"
	OptionDisableInstanceDiscovery             = "disable_instance_discovery"
	OptionContentType                          = "content_type"
	OptionPurgeOnForce                         = "purge_on_force"
	OptionCreatesPer10s                        = "creates_per_10s"
	OptionMaxRetries                           = "max_retries"
	OptionTimeout                              = "timeout"
	OptionRecoverTimeout                       = "recover_timeout"
)

// LiteLLM's environment variables, read when the matching option is unset.
const (
	EnvVaultURI      = "AZURE_KEY_VAULT_URI"
	EnvClientID      = "AZURE_CLIENT_ID"
	EnvClientSecret  = "AZURE_CLIENT_SECRET"
	EnvTenantID      = "AZURE_TENANT_ID"
	EnvAuthorityHost = "AZURE_AUTHORITY_HOST"
)

// Defaults.
const (
	// DefaultCreatesPer10s sizes the client-side limiter: Key Vault's
	// throttling guidance of 300 secret creates per 10 seconds per vault.
	// The limiter refills at providers.WindowRate(300, 10s): 27.2 a second
	// with a burst of 28, never more than 300 in any 10 seconds.
	DefaultCreatesPer10s = 300
	// DefaultContentType is the content type of written versions.
	DefaultContentType = "text/plain"
	// DefaultTimeout bounds one provider call when the caller's context has
	// no deadline.
	DefaultTimeout = 30 * time.Second
	// DefaultRecoverTimeout bounds waiting for a soft-deleted secret to be
	// recovered, or for a purge to finish before a write (Key Vault
	// recovers and purges asynchronously).
	DefaultRecoverTimeout = 30 * time.Second
	// MaxValueLength is Key Vault's limit on a secret value (25 KiB).
	MaxValueLength = 25 * 1024
)

// Config configures an azure_key_vault provider. Build it with
// ConfigFromOptions, or by hand and check it with Validate; zero numeric
// fields take their defaults.
type Config struct {
	// VaultURL is the vault, https://NAME.vault.azure.net/ or a private
	// endpoint. Option "vault_url", else $AZURE_KEY_VAULT_URI. Required.
	VaultURL string
	// TenantID, ClientID and ClientSecret select a client-secret
	// credential (options "tenant_id", "client_id", "client_secret", else
	// LiteLLM's $AZURE_TENANT_ID, $AZURE_CLIENT_ID, $AZURE_CLIENT_SECRET).
	// Without a client secret the default azidentity chain is used
	// (environment, workload identity, managed identity, Azure CLI...),
	// with TenantID and ClientID as hints.
	TenantID     string
	ClientID     string
	ClientSecret string
	// AuthorityHost is the Entra ID authority for sovereign clouds (e.g.
	// https://login.microsoftonline.us/). Option "authority_host", else
	// $AZURE_AUTHORITY_HOST. Default: Azure public cloud.
	AuthorityHost string
	// CABundle is a PEM file of CAs trusted for the vault and the token
	// endpoint (private endpoints, proxies, tests), in addition to the
	// system pool. Option "ca_bundle".
	CABundle string
	// DisableChallengeResourceVerification accepts a bearer challenge whose
	// resource is not the vault's domain (a vault behind a custom domain).
	// Option "disable_challenge_resource_verification".
	DisableChallengeResourceVerification bool
	// DisableInstanceDiscovery skips Entra ID instance discovery, for an
	// authority host Microsoft's discovery endpoint does not know (Azure
	// Stack, private clouds, tests). Option "disable_instance_discovery".
	DisableInstanceDiscovery bool
	// ContentType of written versions. Option "content_type". Default:
	// DefaultContentType.
	ContentType string
	// NoPurgeOnForce makes a forced Delete a soft delete only (for vaults
	// where purging is not allowed). Option "purge_on_force" = "false".
	NoPurgeOnForce bool
	// CreatesPer10s is the client-side limit on secret writes per 10
	// seconds per vault, shared by every provider in the process using the
	// same vault: whole writes, 1 or more (0: the default), that hold in any
	// 10 seconds (the limiter, and providers.Quotas, run at
	// providers.WindowRate of it). Option "creates_per_10s". Default:
	// DefaultCreatesPer10s.
	CreatesPer10s float64
	// MaxRetries is how often the SDK itself retries a failed request
	// (honouring Retry-After); Set Secret, which is not idempotent, only
	// after a 429. Option "max_retries". Default 0: failures
	// go straight back to keyrelay's retry policy, classified, with the
	// Retry-After hint.
	MaxRetries int
	// Timeout bounds one provider call when the context has no deadline.
	// Option "timeout". Default: DefaultTimeout.
	Timeout time.Duration
	// RecoverTimeout bounds waiting for a recovery, and a Put's retries of
	// a name whose purge has not finished (409 ObjectIsBeingDeleted).
	// Option "recover_timeout". Default: DefaultRecoverTimeout.
	RecoverTimeout time.Duration
}

// ConfigFromOptions builds a Config from provider options and the
// environment (getenv nil means os.Getenv); an option wins over its
// environment variable. Unknown keys are ignored.
// The result is validated, defaults applied.
func ConfigFromOptions(opts map[string]string, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	pick := func(opt, env string) string {
		if v := strings.TrimSpace(opts[opt]); v != "" {
			return v
		}
		if env == "" {
			return ""
		}
		return strings.TrimSpace(getenv(env))
	}
	c := Config{
		VaultURL:      pick(OptionVaultURL, EnvVaultURI),
		TenantID:      pick(OptionTenantID, EnvTenantID),
		ClientID:      pick(OptionClientID, EnvClientID),
		ClientSecret:  pick(OptionClientSecret, EnvClientSecret),
		AuthorityHost: pick(OptionAuthorityHost, EnvAuthorityHost),
		CABundle:      pick(OptionCABundle, ""),
		ContentType:   pick(OptionContentType, ""),
	}
	parseBool := func(opt string, dst *bool, invert bool) error {
		v := strings.TrimSpace(opts[opt])
		if v == "" {
			return nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("keyvault: option %q is not a boolean", opt)
		}
		*dst = b != invert
		return nil
	}
	if err := parseBool(OptionDisableChallengeResourceVerification, &c.DisableChallengeResourceVerification, false); err != nil {
		return Config{}, err
	}
	if err := parseBool(OptionDisableInstanceDiscovery, &c.DisableInstanceDiscovery, false); err != nil {
		return Config{}, err
	}
	if err := parseBool(OptionPurgeOnForce, &c.NoPurgeOnForce, true); err != nil {
		return Config{}, err
	}
	if v := strings.TrimSpace(opts[OptionCreatesPer10s]); v != "" {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return Config{}, fmt.Errorf("keyvault: Config.CreatesPer10s (option %q) is not a number", OptionCreatesPer10s)
		}
		c.CreatesPer10s = x
	}
	if v := strings.TrimSpace(opts[OptionMaxRetries]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return Config{}, fmt.Errorf("keyvault: Config.MaxRetries (option %q) is not an integer", OptionMaxRetries)
		}
		c.MaxRetries = n
	}
	for _, d := range []struct {
		opt, field string
		dst        *time.Duration
	}{{OptionTimeout, "Timeout", &c.Timeout}, {OptionRecoverTimeout, "RecoverTimeout", &c.RecoverTimeout}} {
		if v := strings.TrimSpace(opts[d.opt]); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil {
				return Config{}, fmt.Errorf("keyvault: Config.%s (option %q) is not a duration (e.g. 30s)", d.field, d.opt)
			}
			*d.dst = x
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c.withDefaults(), nil
}

// Validate checks the config and names the bad field and its option. It
// never echoes the client secret.
func (c Config) Validate() error {
	bad := func(field, opt, format string, args ...any) error {
		return fmt.Errorf("keyvault: Config.%s (option %q) "+format, append([]any{field, opt}, args...)...)
	}
	if c.VaultURL == "" {
		return bad("VaultURL", OptionVaultURL, "is required (or set $%s)", EnvVaultURI)
	}
	if err := httpsURL(c.VaultURL); err != nil {
		return bad("VaultURL", OptionVaultURL, "%s", err)
	}
	if c.AuthorityHost != "" {
		if err := httpsURL(c.AuthorityHost); err != nil {
			return bad("AuthorityHost", OptionAuthorityHost, "%s", err)
		}
	}
	if c.ClientSecret != "" {
		if c.TenantID == "" {
			return bad("TenantID", OptionTenantID, "is required with a client secret (or set $%s)", EnvTenantID)
		}
		if c.ClientID == "" {
			return bad("ClientID", OptionClientID, "is required with a client secret (or set $%s)", EnvClientID)
		}
	}
	if c.TenantID != "" && !idOK(c.TenantID) {
		return bad("TenantID", OptionTenantID, "must be a tenant id or domain (letters, digits, '.', '-')")
	}
	if c.ClientID != "" && !idOK(c.ClientID) {
		return bad("ClientID", OptionClientID, "must be an application (client) id")
	}
	if len(c.ContentType) > 255 {
		return bad("ContentType", OptionContentType, "is longer than 255 characters")
	}
	if x := c.CreatesPer10s; x < 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return bad("CreatesPer10s", OptionCreatesPer10s, "must be a positive number")
	}
	if x := c.CreatesPer10s; x > 0 && x < 1 {
		return bad("CreatesPer10s", OptionCreatesPer10s, "must be at least 1 (a whole number of writes per 10 seconds)")
	}
	if c.MaxRetries < 0 || c.MaxRetries > 10 {
		return bad("MaxRetries", OptionMaxRetries, "must be between 0 and 10")
	}
	if c.Timeout < 0 {
		return bad("Timeout", OptionTimeout, "must not be negative")
	}
	if c.RecoverTimeout < 0 {
		return bad("RecoverTimeout", OptionRecoverTimeout, "must not be negative")
	}
	return nil
}

func httpsURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("is not a URL")
	}
	switch {
	case u.Scheme != "https":
		return fmt.Errorf("must be an https:// URL (the SDK sends tokens over TLS only)")
	case u.Host == "":
		return fmt.Errorf("has no host")
	case u.User != nil:
		return fmt.Errorf("must not hold credentials")
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("must not have a query or fragment")
	}
	return nil
}

func idOK(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func (c Config) withDefaults() Config {
	if c.ContentType == "" {
		c.ContentType = DefaultContentType
	}
	if c.CreatesPer10s == 0 {
		c.CreatesPer10s = DefaultCreatesPer10s
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RecoverTimeout == 0 {
		c.RecoverTimeout = DefaultRecoverTimeout
	}
	return c
}
