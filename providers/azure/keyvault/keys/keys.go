package keys

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/internal/credential"
	"github.com/keyrelay/keyrelay/seal"
)

// Alg is the algorithm of values whose data keys Azure Key Vault wraps.
const Alg = "A256GCM-AZKV"

// Provider is the name errors and metrics carry.
const Provider = "azure_key_vault_keys"

// Option keys New reads (keyrelay.sealing.azure_keys).
const (
	OptionVaultURL        = "vault_url"
	OptionKeyName         = "key_name"
	OptionAllowedKeyNames = "allowed_key_names"
	OptionTenantID        = "tenant_id"
	OptionClientID        = "client_id"
	OptionClientSecret    = "client_secret"
	OptionAuthorityHost   = "authority_host"
	OptionCABundle        = "ca_bundle"
	OptionDisableChallRes = "disable_challenge_resource_verification"
	// OptionDisableInstanceDiscovery skips Entra ID's instance discovery,
	// for an authority_host that is not a public cloud's (sovereign clouds
	// behind a private endpoint, tests).
	OptionDisableInstanceDiscovery = "disable_instance_discovery"
)

// Algorithm is the key-wrapping algorithm: RSA-OAEP-256.
const Algorithm = azkeys.EncryptionAlgorithmRSAOAEP256

var nameRe = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

// Errors callers branch on, besides the providers sentinels.
var (
	// ErrInvalidCiphertext: unwrapKey refused the wrapped key (400): it is
	// tampered or belongs to another key. Permanent.
	ErrInvalidCiphertext = errors.New("Key Vault cannot unwrap this key (tampered, or another key)")
	// ErrKeyUnusable: the key or its version does not exist (404). Permanent.
	ErrKeyUnusable = errors.New("Key Vault key or version not found")
)

// API is the part of *azkeys.Client the wrapper uses.
type API interface {
	WrapKey(ctx context.Context, name, version string, p azkeys.KeyOperationParameters, o *azkeys.WrapKeyOptions) (azkeys.WrapKeyResponse, error)
	UnwrapKey(ctx context.Context, name, version string, p azkeys.KeyOperationParameters, o *azkeys.UnwrapKeyOptions) (azkeys.UnwrapKeyResponse, error)
}

var _ API = (*azkeys.Client)(nil)

// Wrapper wraps data keys with a Key Vault RSA key.
type Wrapper struct {
	api  API
	name string
}

var _ seal.Wrapper = (*Wrapper)(nil)

// NewWrapper returns a Wrapper calling api, wrapping with the key name
// ("" for open only).
func NewWrapper(api API, name string) (*Wrapper, error) {
	if api == nil {
		return nil, errors.New("azure_key_vault_keys: no Key Vault client")
	}
	if name != "" && !nameRe.MatchString(name) {
		return nil, fmt.Errorf("azure_key_vault_keys config: %s must be 1 to 127 letters, digits and dashes", OptionKeyName)
	}
	return &Wrapper{api: api, name: name}, nil
}

// NewClient returns an azkeys client for opts and getenv (nil means
// os.Getenv), with the SDK's retries off. It makes no network call.
func NewClient(opts map[string]string, getenv func(string) string) (*azkeys.Client, error) {
	build, err := clientBuilder(opts, getenv)
	if err != nil {
		return nil, err
	}
	return build()
}

// clientBuilder checks opts and returns a function building an azkeys
// client, each with a credential of its own (see refreshingAPI).
func clientBuilder(opts map[string]string, getenv func(string) string) (func() (*azkeys.Client, error), error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	get := func(opt, env string) string {
		if v := strings.TrimSpace(opts[opt]); v != "" {
			return v
		}
		if env == "" {
			return ""
		}
		return strings.TrimSpace(getenv(env))
	}
	vaultURL := get(OptionVaultURL, "AZURE_KEY_VAULT_URI")
	if !strings.HasPrefix(vaultURL, "https://") {
		return nil, fmt.Errorf("azure_key_vault_keys config: %s (or AZURE_KEY_VAULT_URI) must be an https:// URL", OptionVaultURL)
	}
	co := azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: -1}}
	if ca := get(OptionCABundle, ""); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("azure_key_vault_keys config: %s: cannot read the file", OptionCABundle)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("azure_key_vault_keys config: %s holds no PEM certificate", OptionCABundle)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		co.Transport = &http.Client{Transport: t}
	}
	if ah := get(OptionAuthorityHost, "AZURE_AUTHORITY_HOST"); ah != "" {
		co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: ah, Services: map[cloud.ServiceName]cloud.ServiceConfiguration{}}
	}
	tenant, client, secret := get(OptionTenantID, "AZURE_TENANT_ID"), get(OptionClientID, "AZURE_CLIENT_ID"), get(OptionClientSecret, "AZURE_CLIENT_SECRET")
	noDiscovery, _ := strconv.ParseBool(get(OptionDisableInstanceDiscovery, ""))
	disable, _ := strconv.ParseBool(get(OptionDisableChallRes, ""))
	build := func() (*azkeys.Client, error) {
		var cred azcore.TokenCredential
		var err error
		if secret != "" {
			cred, err = azidentity.NewClientSecretCredential(tenant, client, secret,
				&azidentity.ClientSecretCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: noDiscovery})
		} else {
			cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: co, TenantID: tenant,
				DisableInstanceDiscovery: noDiscovery})
		}
		if err != nil {
			return nil, fmt.Errorf("azure_key_vault_keys: credential: %s", seal.Sanitize(seal.FirstLine(err.Error()), true))
		}
		return NewClientWithCredential(vaultURL, cred, co, disable)
	}
	if _, err := build(); err != nil {
		return nil, err
	}
	return build, nil
}

// Token refreshes after a 401 are limited to refreshBurst at once and one
// per refreshEvery after that, as in the secrets provider: a vault that
// rejects every fresh token must not turn each call into a token request.
const (
	refreshBurst = 5
	refreshEvery = 5 * time.Second
)

// refreshingAPI is the API of a Wrapper built by New. A call Key Vault
// answers 401 (a token revoked, signed with a retired key, or expired by
// the vault's clock) is made once more with a client built around a new
// credential: the SDK asks its credential again on a 401, but
// azidentity's credentials answer from their own cache, so the rejected
// token would be sent until it expires locally, every wrap and unwrap a
// permanent access denied meanwhile. Only a 401 the fresh token does not
// cure is returned.
type refreshingAPI struct {
	build func() (*azkeys.Client, error)
	lim   *rate.Limiter

	mu  sync.Mutex
	c   *azkeys.Client
	gen uint64
}

func newRefreshingAPI(build func() (*azkeys.Client, error)) (*refreshingAPI, error) {
	c, err := build()
	if err != nil {
		return nil, err
	}
	return &refreshingAPI{build: build, c: c, lim: rate.NewLimiter(rate.Every(refreshEvery), refreshBurst)}, nil
}

func (r *refreshingAPI) current() (*azkeys.Client, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c, r.gen
}

// refresh replaces generation gen's client and reports whether another
// client is there to retry with. Calls that failed on the same generation
// share one refresh.
func (r *refreshingAPI) refresh(gen uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen {
		return true
	}
	if !r.lim.Allow() {
		return false
	}
	c, err := r.build()
	if err != nil {
		return false
	}
	r.c, r.gen = c, r.gen+1
	return true
}

func retried[T any](ctx context.Context, r *refreshingAPI, fn func(*azkeys.Client) (T, error)) (T, error) {
	c, gen := r.current()
	res, err := fn(c)
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusUnauthorized || ctx.Err() != nil || !r.refresh(gen) {
		return res, err
	}
	c, _ = r.current()
	return fn(c)
}

func (r *refreshingAPI) WrapKey(ctx context.Context, name, version string, p azkeys.KeyOperationParameters, o *azkeys.WrapKeyOptions) (azkeys.WrapKeyResponse, error) {
	return retried(ctx, r, func(c *azkeys.Client) (azkeys.WrapKeyResponse, error) { return c.WrapKey(ctx, name, version, p, o) })
}

func (r *refreshingAPI) UnwrapKey(ctx context.Context, name, version string, p azkeys.KeyOperationParameters, o *azkeys.UnwrapKeyOptions) (azkeys.UnwrapKeyResponse, error) {
	return retried(ctx, r, func(c *azkeys.Client) (azkeys.UnwrapKeyResponse, error) { return c.UnwrapKey(ctx, name, version, p, o) })
}

// NewClientWithCredential returns an azkeys client with cred and co (the
// SDK's retries are turned off whatever co says).
func NewClientWithCredential(vaultURL string, cred azcore.TokenCredential, co azcore.ClientOptions, disableChallengeResourceVerification bool) (*azkeys.Client, error) {
	co.Retry = policy.RetryOptions{MaxRetries: -1}
	c, err := azkeys.NewClient(vaultURL, cred, &azkeys.ClientOptions{ClientOptions: co, DisableChallengeResourceVerification: disableChallengeResourceVerification})
	if err != nil {
		return nil, fmt.Errorf("azure_key_vault_keys: %w", err)
	}
	return c, nil
}

// New builds a Sealer from one options map (see the package doc).
func New(ctx context.Context, opts map[string]string, getenv func(string) string) (*seal.Sealer, error) {
	_ = ctx
	cfg, err := seal.FromOptions(opts, OptionAllowedKeyNames)
	if err != nil {
		return nil, fmt.Errorf("azure_key_vault_keys config: %w", err)
	}
	build, err := clientBuilder(opts, getenv)
	if err != nil {
		return nil, err
	}
	api, err := newRefreshingAPI(build)
	if err != nil {
		return nil, err
	}
	w, err := NewWrapper(api, strings.TrimSpace(opts[OptionKeyName]))
	if err != nil {
		return nil, err
	}
	return seal.New(w, cfg)
}

// Name implements seal.Wrapper.
func (w *Wrapper) Name() string { return Provider }

// Alg implements seal.Wrapper: Alg.
func (w *Wrapper) Alg() string { return Alg }

// KeyID implements seal.Wrapper: the key's name.
func (w *Wrapper) KeyID() string { return w.name }

// Wrap implements seal.Wrapper with wrapKey on the key's current version.
func (w *Wrapper) Wrap(ctx context.Context, dataKey []byte, _ seal.Context) (seal.Wrapped, error) {
	alg := Algorithm
	resp, err := w.api.WrapKey(ctx, w.name, "", azkeys.KeyOperationParameters{Algorithm: &alg, Value: dataKey}, nil)
	if err != nil {
		return seal.Wrapped{}, classify("wrapKey", w.name, err)
	}
	version := ""
	if resp.KID != nil {
		version = resp.KID.Version()
	}
	if version == "" || len(version) > 255 || len(resp.Result) == 0 {
		return seal.Wrapped{}, newErr("wrapKey", w.name, providers.Permanent, "Key Vault returned no key version or no wrapped key", providers.ErrInvalid)
	}
	edk := make([]byte, 0, 1+len(version)+len(resp.Result))
	edk = append(edk, byte(len(version)))
	edk = append(edk, version...)
	edk = append(edk, resp.Result...)
	return seal.Wrapped{KID: w.name, EDK: edk}, nil
}

// Version returns the key version recorded in an edk, and the wrapped
// key after it.
func Version(edk []byte) (version string, wrapped []byte, ok bool) {
	if len(edk) < 2 || edk[0] == 0 || len(edk) <= 1+int(edk[0]) {
		return "", nil, false
	}
	return string(edk[1 : 1+int(edk[0])]), edk[1+int(edk[0]):], true
}

// Unwrap implements seal.Wrapper with unwrapKey on the version edk names.
func (w *Wrapper) Unwrap(ctx context.Context, kid string, edk []byte, _ seal.Context) ([]byte, error) {
	if !nameRe.MatchString(kid) {
		return nil, newErr("unwrapKey", kid, providers.Permanent, "kid is not a Key Vault key name", events.ErrUnknownKeyID)
	}
	version, wrapped, ok := Version(edk)
	if !ok {
		return nil, newErr("unwrapKey", kid, providers.Permanent, "malformed wrapped key", ErrInvalidCiphertext, providers.ErrInvalid)
	}
	alg := Algorithm
	resp, err := w.api.UnwrapKey(ctx, kid, version, azkeys.KeyOperationParameters{Algorithm: &alg, Value: wrapped}, nil)
	if err != nil {
		return nil, classify("unwrapKey", kid, err)
	}
	return resp.Result, nil
}

// Classify implements seal.Wrapper.
func (w *Wrapper) Classify(err error) seal.Class {
	c := seal.ClassifyProviderError(err)
	c.Refused = errors.Is(err, ErrInvalidCiphertext)
	return c
}

type callError struct {
	msg    string
	causes []error
}

func (e *callError) Error() string   { return e.msg }
func (e *callError) Unwrap() []error { return e.causes }

func newErr(op, name string, kind providers.Kind, msg string, causes ...error) *providers.Error {
	return providers.NewError(Provider, op, name, kind, &callError{msg: msg, causes: causes})
}

// classify turns an azkeys error into a classified *providers.Error.
func classify(op, name string, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return newErr(op, name, providers.Retryable, "timed out", context.DeadlineExceeded, providers.ErrUnavailable)
	case errors.Is(err, context.Canceled):
		return newErr(op, name, providers.Retryable, "canceled", context.Canceled)
	}
	if f, ok := credential.Classify(err); ok {
		// Shared with the secrets provider: an invalid client secret
		// (AADSTS7000215) is permanent until an operator fixes it, a
		// credential source not available yet (IMDS at boot) is retried.
		msg := f.Msg // scrubbed of URLs and tokens already
		if f.TLS {
			msg += " (set " + OptionCABundle + "?)"
		}
		e := newErr(op, name, f.Kind, msg, f.Err)
		e.RetryAfter = f.RetryAfter
		return e
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		var ne net.Error
		if errors.As(err, &ne) {
			return newErr(op, name, providers.Retryable, "network error", providers.ErrUnavailable)
		}
		// Transport errors the SDK wraps.
		return newErr(op, name, providers.Retryable, "request failed: "+seal.Sanitize(seal.FirstLine(err.Error()), true), providers.ErrUnavailable)
	}
	msg := fmt.Sprintf("HTTP %d %s", re.StatusCode, re.ErrorCode)
	switch {
	case re.StatusCode == http.StatusTooManyRequests:
		e := newErr(op, name, providers.Throttled, msg, providers.ErrThrottled)
		if re.RawResponse != nil {
			if s, err := strconv.Atoi(strings.TrimSpace(re.RawResponse.Header.Get("Retry-After"))); err == nil && s >= 0 {
				e.RetryAfter = time.Duration(s) * time.Second
			}
		}
		return e
	case re.StatusCode >= 500 || re.StatusCode == http.StatusRequestTimeout:
		return newErr(op, name, providers.Retryable, msg, providers.ErrUnavailable)
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
		return newErr(op, name, providers.Permanent, msg, providers.ErrAccessDenied)
	case re.StatusCode == http.StatusNotFound:
		return newErr(op, name, providers.Permanent, msg, ErrKeyUnusable, providers.ErrInvalid)
	case re.StatusCode == http.StatusBadRequest && op == "unwrapKey":
		return newErr(op, name, providers.Permanent, msg, ErrInvalidCiphertext, providers.ErrInvalid, events.ErrOpenFailed)
	}
	return newErr(op, name, providers.Permanent, msg, providers.ErrInvalid)
}
