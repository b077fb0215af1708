package transit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/seal"
)

// Alg is the algorithm of values whose data keys Vault Transit wraps.
const Alg = "A256GCM-VAULT"

// Provider is the name errors and metrics carry.
const Provider = "vault_transit"

// Option keys New reads (keyrelay.sealing.vault_transit).
const (
	OptionAddress         = "address"
	OptionToken           = "token"
	OptionNamespace       = "namespace"
	OptionMount           = "mount"
	OptionKeyName         = "key_name"
	OptionAllowedKeyNames = "allowed_key_names"
	OptionCABundle        = "ca_bundle"
	// MountDefault is the Transit mount when "mount" is not set.
	MountDefault = "transit"
)

var (
	nameRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	mountRe = regexp.MustCompile(`^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$`)
)

// ErrInvalidCiphertext: Transit refused to decrypt the wrapped key
// (tampered, another key, other associated data). Permanent.
var ErrInvalidCiphertext = errors.New("Vault Transit cannot decrypt this ciphertext (tampered, another key or other associated data)")

// API is the part of the Vault client the wrapper uses; *api.Logical
// implements it.
type API interface {
	WriteRawWithContext(ctx context.Context, path string, data []byte) (*api.Response, error)
}

// Wrapper wraps data keys with a Vault Transit key.
type Wrapper struct {
	api   API
	mount string
	name  string
}

var _ seal.Wrapper = (*Wrapper)(nil)

// NewWrapper returns a Wrapper calling api, wrapping with the Transit key
// name under mount ("" for MountDefault; name "" for open only).
func NewWrapper(api API, mount, name string) (*Wrapper, error) {
	if api == nil {
		return nil, errors.New("vault_transit: no Vault client")
	}
	if mount == "" {
		mount = MountDefault
	}
	mount = strings.Trim(mount, "/")
	if !mountRe.MatchString(mount) {
		return nil, fmt.Errorf("vault_transit config: %s must be a path of letters, digits, _ and -", OptionMount)
	}
	if name != "" && !nameRe.MatchString(name) {
		return nil, fmt.Errorf("vault_transit config: %s must be 1 to 128 letters, digits, _ and -", OptionKeyName)
	}
	return &Wrapper{api: api, mount: mount, name: name}, nil
}

// NewClient returns a Vault client from opts and getenv (nil means
// os.Getenv), with its own retries off. It makes no network call.
func NewClient(opts map[string]string, getenv func(string) string) (*api.Client, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	first := func(opt string, envs ...string) string {
		if v := strings.TrimSpace(opts[opt]); v != "" {
			return v
		}
		for _, e := range envs {
			if v := strings.TrimSpace(getenv(e)); v != "" {
				return v
			}
		}
		return ""
	}
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault_transit: %w", cfg.Error)
	}
	addr := first(OptionAddress, "HCP_VAULT_ADDR", "VAULT_ADDR")
	if addr == "" {
		return nil, fmt.Errorf("vault_transit config: %s (or HCP_VAULT_ADDR) is required", OptionAddress)
	}
	cfg.Address = addr
	cfg.MaxRetries = 0
	if ca := strings.TrimSpace(opts[OptionCABundle]); ca != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: ca}); err != nil {
			return nil, fmt.Errorf("vault_transit config: %s: cannot read the CA bundle", OptionCABundle)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault_transit: %w", err)
	}
	c.SetToken(first(OptionToken, "HCP_VAULT_TOKEN", "VAULT_TOKEN"))
	if ns := first(OptionNamespace, "HCP_VAULT_NAMESPACE", "VAULT_NAMESPACE"); ns != "" {
		c.SetNamespace(ns)
	}
	return c, nil
}

// New builds a Sealer from one options map (see the package doc). While
// ctx lasts it keeps a renewable token alive (see keepAlive).
func New(ctx context.Context, opts map[string]string, getenv func(string) string) (*seal.Sealer, error) {
	cfg, err := seal.FromOptions(opts, OptionAllowedKeyNames)
	if err != nil {
		return nil, fmt.Errorf("vault_transit config: %w", err)
	}
	c, err := NewClient(opts, getenv)
	if err != nil {
		return nil, err
	}
	w, err := NewWrapper(c.Logical(), opts[OptionMount], strings.TrimSpace(opts[OptionKeyName]))
	if err != nil {
		return nil, err
	}
	sl, err := seal.New(w, cfg)
	if err != nil {
		return nil, err
	}
	if c.Token() != "" {
		go keepAlive(ctx, c.Auth().Token())
	}
	return sl, nil
}

// Token renewal timing: a renewable token is renewed once renewAt of its
// TTL has passed; a failed lookup or renewal is tried again after
// renewRetry (at most), sooner for a short TTL.
const (
	renewAt    = 2.0 / 3.0
	renewRetry = 5 * time.Second
	renewCall  = 30 * time.Second
)

// tokenAPI is the part of the Vault token API keepAlive uses.
type tokenAPI interface {
	LookupSelfWithContext(ctx context.Context) (*api.Secret, error)
	RenewSelfWithContext(ctx context.Context, increment int) (*api.Secret, error)
}

// keepAlive renews the client's token until ctx ends, as the KV provider
// does with its own: a periodic token (what a long-running service given a
// token, not a login, is usually issued) expires at the end of its period
// unless renewed, and every Transit call would then be a permanent 403.
// A token that is not renewable, or does not expire (a root token), is
// left alone; renewal cannot extend a token past its max TTL. Failures are
// retried.
func keepAlive(ctx context.Context, tc tokenAPI) {
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	call := func(f func(context.Context) (*api.Secret, error)) (*api.Secret, error) {
		cctx, cancel := context.WithTimeout(ctx, renewCall)
		defer cancel()
		return f(cctx)
	}
	var ttl, increment time.Duration
	for ttl == 0 {
		sec, err := call(tc.LookupSelfWithContext)
		if err == nil && sec != nil {
			renewable, _ := sec.TokenIsRenewable()
			left, _ := sec.TokenTTL()
			if !renewable || left <= 0 {
				return
			}
			ttl, increment = left, left
			if n, err := parseSeconds(sec.Data["period"]); err == nil && n > 0 {
				increment = n
			} else if n, err := parseSeconds(sec.Data["creation_ttl"]); err == nil && n > 0 {
				increment = n
			}
			break
		}
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == 403 {
			return // the token may not look itself up, or is gone already
		}
		if !sleep(renewRetry) {
			return
		}
	}
	wait := time.Duration(float64(ttl) * renewAt)
	for {
		if !sleep(wait) {
			return
		}
		sec, err := call(func(ctx context.Context) (*api.Secret, error) {
			return tc.RenewSelfWithContext(ctx, int(increment/time.Second))
		})
		if err != nil || sec == nil || sec.Auth == nil {
			// Try again well before the token runs out.
			wait = min(renewRetry, max(ttl/10, 100*time.Millisecond))
			continue
		}
		ttl = time.Duration(sec.Auth.LeaseDuration) * time.Second
		if !sec.Auth.Renewable || ttl <= 0 {
			return
		}
		wait = time.Duration(float64(ttl) * renewAt)
	}
}

// parseSeconds reads a token lookup's duration field (seconds, as a JSON
// number).
func parseSeconds(v any) (time.Duration, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return time.Duration(i) * time.Second, err
	case float64:
		return time.Duration(n) * time.Second, nil
	}
	return 0, fmt.Errorf("unexpected %T", v)
}

// Name implements seal.Wrapper.
func (w *Wrapper) Name() string { return Provider }

// Alg implements seal.Wrapper: Alg.
func (w *Wrapper) Alg() string { return Alg }

// KeyID implements seal.Wrapper: "<mount>/<key name>", or "".
func (w *Wrapper) KeyID() string {
	if w.name == "" {
		return ""
	}
	return w.mount + "/" + w.name
}

// splitKID returns the mount and key name of a kid.
func splitKID(kid string) (mount, name string, ok bool) {
	i := strings.LastIndexByte(kid, '/')
	if i <= 0 {
		return "", "", false
	}
	mount, name = kid[:i], kid[i+1:]
	return mount, name, mountRe.MatchString(mount) && nameRe.MatchString(name)
}

// Wrap implements seal.Wrapper with POST <mount>/encrypt/<name>.
func (w *Wrapper) Wrap(ctx context.Context, dataKey []byte, wc seal.Context) (seal.Wrapped, error) {
	var out struct {
		Data struct {
			Ciphertext string `json:"ciphertext"`
		} `json:"data"`
	}
	err := w.call(ctx, "encrypt", w.mount, w.name, map[string]string{
		"plaintext":       base64.StdEncoding.EncodeToString(dataKey),
		"associated_data": base64.StdEncoding.EncodeToString(wc.AdditionalData()),
	}, &out)
	if err != nil {
		return seal.Wrapped{}, err
	}
	if !strings.HasPrefix(out.Data.Ciphertext, "vault:v") {
		return seal.Wrapped{}, newErr("encrypt", w.KeyID(), providers.Permanent, "Vault returned no Transit ciphertext", providers.ErrInvalid)
	}
	return seal.Wrapped{KID: w.KeyID(), EDK: []byte(out.Data.Ciphertext)}, nil
}

// Unwrap implements seal.Wrapper with POST <mount>/decrypt/<name>.
func (w *Wrapper) Unwrap(ctx context.Context, kid string, edk []byte, wc seal.Context) ([]byte, error) {
	mount, name, ok := splitKID(kid)
	if !ok {
		return nil, newErr("decrypt", kid, providers.Permanent, "kid is not <mount>/<key name>", events.ErrUnknownKeyID)
	}
	var out struct {
		Data struct {
			Plaintext string `json:"plaintext"`
		} `json:"data"`
	}
	err := w.call(ctx, "decrypt", mount, name, map[string]string{
		"ciphertext":      string(edk),
		"associated_data": base64.StdEncoding.EncodeToString(wc.AdditionalData()),
	}, &out)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(out.Data.Plaintext)
	if err != nil {
		return nil, newErr("decrypt", kid, providers.Permanent, "Vault returned a plaintext that is not base64", providers.ErrInvalid)
	}
	return key, nil
}

// Classify implements seal.Wrapper.
func (w *Wrapper) Classify(err error) seal.Class {
	c := seal.ClassifyProviderError(err)
	c.Refused = errors.Is(err, ErrInvalidCiphertext)
	return c
}

func (w *Wrapper) call(ctx context.Context, op, mount, name string, body map[string]string, out any) error {
	kid := mount + "/" + name
	data, _ := json.Marshal(body)
	resp, err := w.api.WriteRawWithContext(ctx, mount+"/"+op+"/"+name, data)
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
	}
	if err != nil {
		return classify(op, kid, resp, err)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return newErr(op, kid, providers.Retryable, "unreadable response from Vault", providers.ErrUnavailable)
	}
	return nil
}

type callError struct {
	msg    string
	causes []error
}

func (e *callError) Error() string   { return e.msg }
func (e *callError) Unwrap() []error { return e.causes }

func newErr(op, kid string, kind providers.Kind, msg string, causes ...error) *providers.Error {
	return providers.NewError(Provider, op, kid, kind, &callError{msg: msg, causes: causes})
}

// classify turns a Vault client error into a classified *providers.Error.
func classify(op, kid string, resp *api.Response, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return newErr(op, kid, providers.Retryable, "timed out", context.DeadlineExceeded, providers.ErrUnavailable)
	case errors.Is(err, context.Canceled):
		return newErr(op, kid, providers.Retryable, "canceled", context.Canceled)
	}
	var re *api.ResponseError
	if !errors.As(err, &re) {
		var ne net.Error
		if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") {
			return newErr(op, kid, providers.Retryable, "network error", providers.ErrUnavailable)
		}
		return newErr(op, kid, providers.Retryable, "request failed: "+seal.Sanitize(seal.FirstLine(err.Error()), true), providers.ErrUnavailable)
	}
	msg := fmt.Sprintf("HTTP %d", re.StatusCode)
	if len(re.Errors) > 0 {
		msg += ": " + seal.Sanitize(strings.Join(re.Errors, "; "), true)
	}
	text := strings.ToLower(strings.Join(re.Errors, " "))
	switch {
	case re.StatusCode == 429:
		e := newErr(op, kid, providers.Throttled, msg, providers.ErrThrottled)
		if resp != nil {
			if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s >= 0 {
				e.RetryAfter = time.Duration(s) * time.Second
			}
		}
		return e
	case re.StatusCode >= 500 || re.StatusCode == 412:
		return newErr(op, kid, providers.Retryable, msg, providers.ErrUnavailable)
	case re.StatusCode == 403:
		return newErr(op, kid, providers.Permanent, msg, providers.ErrAccessDenied)
	case op == "decrypt" && re.StatusCode == 400 && (strings.Contains(text, "authentication failed") ||
		strings.Contains(text, "invalid ciphertext") || strings.Contains(text, "unable to decrypt") ||
		strings.Contains(text, "invalid key version") || strings.Contains(text, "decode ciphertext")):
		return newErr(op, kid, providers.Permanent, msg, ErrInvalidCiphertext, providers.ErrInvalid, events.ErrOpenFailed)
	}
	return newErr(op, kid, providers.Permanent, msg, providers.ErrInvalid)
}
