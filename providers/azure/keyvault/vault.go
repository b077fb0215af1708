package keyvault

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
)

// Token refreshes after a 401 are limited to refreshBurst at once and one
// per refreshEvery after that: a vault that rejects every fresh token
// (a credential without access to it) must not turn each event into a
// token request.
const (
	refreshBurst = 5
	refreshEvery = 5 * time.Second
)

// vaultClient holds the azsecrets client and the SDK calls the provider
// makes. A call the vault answers 401 Unauthorized (a token revoked,
// expired by the vault's clock, or signed with a retired key) is retried
// once with a new client built around a new credential: the SDK's bearer
// policy asks its credential again on a 401, but azidentity's credentials
// answer from their own token cache, so the same rejected token would be
// sent until it expires locally. Only a 401 that the fresh token does not
// cure reaches classify.
type vaultClient struct {
	build func() (*azsecrets.Client, error)
	log   *zap.Logger
	lim   *rate.Limiter

	// maxRetries is Config.MaxRetries: how often SetSecret is sent again
	// after a 429.
	maxRetries int

	mu  sync.Mutex
	c   *azsecrets.Client
	gen uint64
}

func newVaultClient(build func() (*azsecrets.Client, error), log *zap.Logger) (*vaultClient, error) {
	c, err := build()
	if err != nil {
		return nil, err
	}
	return &vaultClient{build: build, log: log, c: c, lim: rate.NewLimiter(rate.Every(refreshEvery), refreshBurst)}, nil
}

func (v *vaultClient) current() (*azsecrets.Client, uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.c, v.gen
}

// refresh replaces the client used by generation gen with a new one and
// reports whether a client other than gen's is there to retry with. Calls
// that failed on the same generation share one refresh.
func (v *vaultClient) refresh(gen uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gen != gen {
		return true
	}
	if !v.lim.Allow() {
		v.log.Warn("key vault rejected a fresh token again; not refreshing", zap.String("provider", Name))
		return false
	}
	c, err := v.build()
	if err != nil {
		v.log.Warn("key vault: could not build a new credential", zap.String("provider", Name), zap.String("reason", clip(sanitize(err.Error(), nil), 200)))
		return false
	}
	v.c, v.gen = c, v.gen+1
	v.log.Info("key vault answered 401: dropped the cached token, retrying with a new one", zap.String("provider", Name))
	return true
}

// call runs fn, and once more after a token refresh when the vault
// answers 401.
func call[T any](ctx context.Context, v *vaultClient, fn func(*azsecrets.Client) (T, error)) (T, error) {
	c, gen := v.current()
	res, err := fn(c)
	if statusOf(err) != http.StatusUnauthorized || ctx.Err() != nil || !v.refresh(gen) {
		return res, err
	}
	c, _ = v.current()
	return fn(c)
}

func (v *vaultClient) GetSecret(ctx context.Context, name, version string) (azsecrets.GetSecretResponse, error) {
	return call(ctx, v, func(c *azsecrets.Client) (azsecrets.GetSecretResponse, error) {
		return c.GetSecret(ctx, name, version, nil)
	})
}

// SetSecret is not retried by the SDK's retry policy (Config.MaxRetries):
// Set Secret is not idempotent, and the policy resends on a 5xx, a timeout
// or a reset connection, which may come after Key Vault committed the
// write: each resend would make another version. Only a 429 (Key Vault
// throttles before it writes anything) is sent again here, up to
// maxRetries times, after its Retry-After; any other failure goes back to
// the caller's retry, whose Put finds the event's version (a Duplicate).
func (v *vaultClient) SetSecret(ctx context.Context, name string, params azsecrets.SetSecretParameters) (azsecrets.SetSecretResponse, error) {
	once := policy.WithRetryOptions(ctx, policy.RetryOptions{MaxRetries: -1})
	for attempt := 0; ; attempt++ {
		res, err := call(once, v, func(c *azsecrets.Client) (azsecrets.SetSecretResponse, error) {
			return c.SetSecret(once, name, params, nil)
		})
		if statusOf(err) != http.StatusTooManyRequests || attempt >= v.maxRetries {
			return res, err
		}
		var d time.Duration
		var re *azcore.ResponseError
		if errors.As(err, &re) && re.RawResponse != nil {
			d = retryAfter(re.RawResponse.Header)
		}
		if d <= 0 {
			d = min(800*time.Millisecond<<attempt, time.Minute)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
			return res, err // the caller's retry waits out Retry-After
		}
		if ctxtime.Sleep(ctx, d) != nil {
			return res, err
		}
	}
}

func (v *vaultClient) UpdateSecretProperties(ctx context.Context, name, version string, params azsecrets.UpdateSecretPropertiesParameters) (azsecrets.UpdateSecretPropertiesResponse, error) {
	return call(ctx, v, func(c *azsecrets.Client) (azsecrets.UpdateSecretPropertiesResponse, error) {
		return c.UpdateSecretProperties(ctx, name, version, params, nil)
	})
}

func (v *vaultClient) DeleteSecret(ctx context.Context, name string) (azsecrets.DeleteSecretResponse, error) {
	return call(ctx, v, func(c *azsecrets.Client) (azsecrets.DeleteSecretResponse, error) {
		return c.DeleteSecret(ctx, name, nil)
	})
}

func (v *vaultClient) GetDeletedSecret(ctx context.Context, name string) (azsecrets.GetDeletedSecretResponse, error) {
	return call(ctx, v, func(c *azsecrets.Client) (azsecrets.GetDeletedSecretResponse, error) {
		return c.GetDeletedSecret(ctx, name, nil)
	})
}

func (v *vaultClient) RecoverDeletedSecret(ctx context.Context, name string) (azsecrets.RecoverDeletedSecretResponse, error) {
	return call(ctx, v, func(c *azsecrets.Client) (azsecrets.RecoverDeletedSecretResponse, error) {
		return c.RecoverDeletedSecret(ctx, name, nil)
	})
}

func (v *vaultClient) PurgeDeletedSecret(ctx context.Context, name string) (azsecrets.PurgeDeletedSecretResponse, error) {
	return call(ctx, v, func(c *azsecrets.Client) (azsecrets.PurgeDeletedSecretResponse, error) {
		return c.PurgeDeletedSecret(ctx, name, nil)
	})
}

// ListVersions returns the properties (tags, attributes, no value) of
// every version of name, all pages.
func (v *vaultClient) ListVersions(ctx context.Context, name string) ([]*azsecrets.SecretProperties, error) {
	return call(ctx, v, func(c *azsecrets.Client) ([]*azsecrets.SecretProperties, error) {
		var out []*azsecrets.SecretProperties
		pager := c.NewListSecretPropertiesVersionsPager(name, nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, sp := range page.Value {
				if sp != nil && sp.ID != nil {
					out = append(out, sp)
				}
			}
		}
		return out, nil
	})
}

// isDisabled reports whether err is Key Vault's answer to a read of a
// disabled version: 403 Forbidden with the inner error code
// SecretDisabled.
func isDisabled(err error) bool {
	return statusOf(err) == http.StatusForbidden && innerCode(err) == "SecretDisabled"
}

// isBeingDeleted reports whether err is Key Vault's answer to a write of a
// name whose delete or purge has not finished: 409 Conflict with inner
// error ObjectIsBeingDeleted. Key Vault purges asynchronously; for a few
// seconds after a purge the name is neither a secret nor a deleted secret
// (both reads answer 404) and cannot be written. Only waiting helps.
func isBeingDeleted(err error) bool {
	return statusOf(err) == http.StatusConflict && innerCode(err) == "ObjectIsBeingDeleted"
}

// innerCode returns the inner error code of a Key Vault error response,
// {"error":{"code":...,"message":...,"innererror":{"code":...}}}, or "".
// (azcore.ResponseError.ErrorCode holds the outer code only.)
func innerCode(err error) string {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.RawResponse == nil {
		return ""
	}
	body, perr := runtime.Payload(re.RawResponse)
	if perr != nil {
		return ""
	}
	var e struct {
		Error struct {
			InnerError *struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.InnerError == nil {
		return ""
	}
	return e.Error.InnerError.Code
}

// currentVersion is what the provider needs of a secret's current
// version: its id and tags, and whether it is disabled.
type currentVersion struct {
	version  string
	tags     map[string]*string
	disabled bool
	// others are further versions created in the same second as the
	// current one, which the list of versions cannot tell apart from it;
	// ownership is checked on them too.
	others []map[string]*string
}

// currentOf reads kvn's current version. When it is disabled, Key Vault
// refuses the read (403 SecretDisabled) but lists it with its tags: the
// current version is the newest one listed (Key Vault makes the latest
// created version current), preferring disabled ones among versions
// created in the same second.
func (p *Provider) currentOf(ctx context.Context, kvn string) (currentVersion, error) {
	res, err := p.client.GetSecret(ctx, kvn, "")
	if err == nil {
		cv := currentVersion{tags: res.Tags}
		if res.ID != nil {
			cv.version = res.ID.Version()
		}
		return cv, nil
	}
	if !isDisabled(err) {
		return currentVersion{}, err
	}
	props, lerr := p.client.ListVersions(ctx, kvn)
	if lerr != nil {
		return currentVersion{}, lerr
	}
	var newest time.Time
	for _, sp := range props {
		if a := sp.Attributes; a != nil && a.Created != nil && a.Created.After(newest) {
			newest = *a.Created
		}
	}
	var cands []*azsecrets.SecretProperties
	for _, sp := range props {
		if a := sp.Attributes; a != nil && a.Created != nil && a.Created.Equal(newest) {
			cands = append(cands, sp)
		}
	}
	if len(cands) == 0 {
		return currentVersion{}, err
	}
	pick := len(cands) - 1
	for i := len(cands) - 1; i >= 0; i-- {
		if a := cands[i].Attributes; a.Enabled != nil && !*a.Enabled {
			pick = i
			break
		}
	}
	cv := currentVersion{version: cands[pick].ID.Version(), tags: cands[pick].Tags, disabled: true}
	for i, c := range cands {
		if i != pick {
			cv.others = append(cv.others, c.Tags)
		}
	}
	p.log.Info("key vault: the secret's current version is disabled; its tags were read from the list of versions",
		zap.String("provider", Name), zap.String("secret", kvn), zap.String("version", cv.version))
	return cv, nil
}

// ownedBy reports whether the current version, and any version that
// cannot be told apart from it, is keyrelay's for o.
func (cv currentVersion) ownedBy(o providers.Owner) bool {
	if !providers.IsOwnedBy(tagMap(cv.tags), o) {
		return false
	}
	for _, t := range cv.others {
		if !providers.IsOwnedBy(tagMap(t), o) {
			return false
		}
	}
	return true
}
