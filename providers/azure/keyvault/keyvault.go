package keyvault

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
	"github.com/keyrelay/keyrelay/providers"
)

// Name is the provider's key_management_system name, as in LiteLLM.
const Name = "azure_key_vault"

// purgeRetryAfter is the RetryAfter of a write given up while Key Vault is
// still purging its name (Key Vault gives no hint; a purge takes seconds).
const purgeRetryAfter = time.Second

// Register adds the provider to r under Name and declares TeamOptions.
func Register(r *providers.Registry) {
	r.Register(Name, Factory)
	r.AllowTeamOptions(Name, TeamOptions...)
}

// TeamOptions are the options a team's settings may set. Only the content
// type: a team-chosen vault_url or authority_host would receive the
// operator's bearer token, a ca_bundle would read a file of the team's
// choosing and let it vouch for any server, credentials are the
// operator's, and the limiter and purge settings protect the operator's
// vault. A team that needs its own vault gets its own operator-configured
// provider instance.
var TeamOptions = []string{OptionContentType}

// Factory builds a provider from cfg.Options and cfg.Getenv (see
// ConfigFromOptions). It makes no network call; a bad configuration is a
// permanent error wrapping providers.ErrInvalid.
func Factory(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	c, err := ConfigFromOptions(cfg.Options, cfg.Getenv)
	if err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	return New(ctx, c, cfg.Logger, WithQuotas(cfg.Quotas))
}

// Option adjusts New.
type Option func(*newOptions)

type newOptions struct {
	cred   azcore.TokenCredential
	quotas providers.Quotas
}

// WithCredential uses cred instead of building one from the config.
func WithCredential(cred azcore.TokenCredential) Option {
	return func(o *newOptions) { o.cred = cred }
}

// Provider stores keyrelay secrets in an Azure Key Vault. It is safe for
// concurrent use.
type Provider struct {
	cfg    Config
	client *vaultClient
	log    *zap.Logger
	lim    *rate.Limiter
	quotas providers.Quotas // cluster-wide quotas, nil for none
	stripe [64]chan struct{}
}

var (
	_ providers.Provider   = (*Provider)(nil)
	_ providers.Versioner  = (*Provider)(nil)
	_ providers.TagUpdater = (*Provider)(nil)
)

// New builds a provider. cfg is validated; zero fields take defaults. It
// makes no network call.
func New(_ context.Context, cfg Config, log *zap.Logger, opts ...Option) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	var o newOptions
	for _, f := range opts {
		f(&o)
	}
	transport, err := httpClient(cfg.CABundle)
	if err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	co := azcore.ClientOptions{Transport: transport}
	if cfg.AuthorityHost != "" {
		co.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: cfg.AuthorityHost, Services: map[cloud.ServiceName]cloud.ServiceConfiguration{}}
	}
	if cfg.MaxRetries == 0 {
		co.Retry = policy.RetryOptions{MaxRetries: -1}
	} else {
		co.Retry = policy.RetryOptions{MaxRetries: int32(cfg.MaxRetries)}
	}
	newCred := func() (azcore.TokenCredential, error) {
		if o.cred != nil {
			return o.cred, nil
		}
		if cfg.ClientSecret != "" {
			return azidentity.NewClientSecretCredential(cfg.TenantID, cfg.ClientID, cfg.ClientSecret,
				&azidentity.ClientSecretCredentialOptions{ClientOptions: co, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery})
		}
		return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: co, TenantID: cfg.TenantID, DisableInstanceDiscovery: cfg.DisableInstanceDiscovery})
	}
	if _, err := newCred(); err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: credential: %s", providers.ErrAccessDenied, clip(sanitize(err.Error(), nil), 300)))
	}
	// Each client gets a credential of its own, so a client built after a
	// 401 starts with an empty token cache (see vaultClient).
	build := func() (*azsecrets.Client, error) {
		cred, err := newCred()
		if err != nil {
			return nil, err
		}
		return azsecrets.NewClient(cfg.VaultURL, cred, &azsecrets.ClientOptions{
			ClientOptions:                        co,
			DisableChallengeResourceVerification: cfg.DisableChallengeResourceVerification,
		})
	}
	client, err := newVaultClient(build, log)
	if err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %s", providers.ErrInvalid, clip(sanitize(err.Error(), nil), 300)))
	}
	client.maxRetries = cfg.MaxRetries
	p := &Provider{cfg: cfg, client: client, log: log, lim: createLimiter(cfg.VaultURL, cfg.CreatesPer10s), quotas: o.quotas}
	for i := range p.stripe {
		p.stripe[i] = make(chan struct{}, 1)
	}
	return p, nil
}

func httpClient(caBundle string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if caBundle != "" {
		pem, err := os.ReadFile(caBundle)
		if err != nil {
			return nil, fmt.Errorf("keyvault: Config.CABundle (option %q): cannot read the file", OptionCABundle)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("keyvault: Config.CABundle (option %q) holds no PEM certificate", OptionCABundle)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t}, nil
}

// Config returns the provider's configuration, defaults applied.
func (p *Provider) Config() Config { return p.cfg }

// Capabilities: versions stay readable, deletes are soft, tags are kept.
func (p *Provider) Capabilities() providers.Capabilities {
	return providers.Capabilities{Versions: true, SoftDelete: true, Tags: true}
}

// Close releases nothing; it exists for symmetry.
func (p *Provider) Close() error { return nil }

func (p *Provider) begin(ctx context.Context, op, name string) (context.Context, context.CancelFunc, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, "", ctxErr(op, name, err)
	}
	if name == "" {
		return nil, nil, "", errInvalid(op, name, "empty secret name")
	}
	if len(name) > MaxNameLength {
		return nil, nil, "", errInvalid(op, "", "secret name of %d bytes, at most %d", len(name), MaxNameLength)
	}
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
	}
	return ctx, cancel, KVName(name), nil
}

// lock serializes this process's writers of one Key Vault name, so
// Created and Duplicate are decided once per write.
func (p *Provider) lock(ctx context.Context, op, name, kvn string) (func(), error) {
	h := sha256.Sum256([]byte(kvn))
	ch := p.stripe[int(h[0])%len(p.stripe)]
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctxErr(op, name, ctx.Err())
	}
}

// Put writes req.Value as the new current version. A version written with
// the same IdempotencyKey and still current makes it a Duplicate; a
// soft-deleted secret is recovered (ownership checked) and then written.
func (p *Provider) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	const op = "put"
	ctx, cancel, kvn, err := p.begin(ctx, op, req.Name)
	if err != nil {
		return providers.PutResult{}, err
	}
	defer cancel()
	switch {
	case len(req.Value) == 0:
		return providers.PutResult{}, errInvalid(op, req.Name, "empty value (Key Vault does not store empty secrets)")
	case !utf8.Valid(req.Value):
		return providers.PutResult{}, errInvalid(op, req.Name, "value is not valid UTF-8 (Key Vault stores text)")
	case len(req.Value) > MaxValueLength:
		return providers.PutResult{}, errInvalid(op, req.Name, "value of %d bytes, Key Vault allows %d", len(req.Value), MaxValueLength)
	}
	tags, err := buildTags(op, req.Name, req.Owner, req.Tags, req.Description, req.IdempotencyKey)
	if err != nil {
		return providers.PutResult{}, err
	}
	unlock, err := p.lock(ctx, op, req.Name, kvn)
	if err != nil {
		return providers.PutResult{}, err
	}
	defer unlock()

	created := false
	cur, err := p.currentOf(ctx, kvn)
	switch {
	case err == nil:
		if !req.Adopt && !cur.ownedBy(req.Owner) {
			return providers.PutResult{}, errNotOwned(op, req.Name)
		}
		// A replay of the event that wrote the current version is a
		// duplicate, also when an operator disabled that version since:
		// the replay does not undo the operator's change.
		if req.IdempotencyKey != "" && tagOf(cur.tags, EventTag) == req.IdempotencyKey && cur.version != "" {
			return providers.PutResult{Version: cur.version, Duplicate: true}, nil
		}
		if cur.disabled {
			p.log.Info("key vault: the current version is disabled; writing a new, enabled version",
				zap.String("provider", Name), zap.String("secret", kvn), zap.String("disabled_version", cur.version))
		}
	case statusOf(err) == http.StatusNotFound:
		created = true
		if _, err := p.recoverDeleted(ctx, op, req.Name, kvn, req.Owner, req.Adopt); err != nil {
			return providers.PutResult{}, err
		}
	default:
		return providers.PutResult{}, classify(op, req.Name, err, req.Value)
	}
	recovered := false
	var purged time.Time // when waiting for a purge to finish ends
	for delay := 50 * time.Millisecond; ; {
		if err := p.wait(ctx, op, req.Name); err != nil {
			return providers.PutResult{}, err
		}
		v := string(req.Value)
		ct := p.cfg.ContentType
		enabled := true
		res, err := p.client.SetSecret(ctx, kvn, azsecrets.SetSecretParameters{
			Value: &v, ContentType: &ct, Tags: tags,
			SecretAttributes: &azsecrets.SecretAttributes{Enabled: &enabled},
		})
		if err == nil {
			if res.ID == nil {
				return providers.PutResult{}, newErr(op, req.Name, providers.Retryable, fmt.Errorf("%w: response without a secret id", providers.ErrUnavailable))
			}
			return providers.PutResult{Version: res.ID.Version(), Created: created}, nil
		}
		if statusOf(err) != http.StatusConflict {
			return providers.PutResult{}, classify(op, req.Name, err, req.Value)
		}
		if isBeingDeleted(err) {
			// A purge (or delete) of the name is finishing: there is
			// nothing to recover; the write goes through once it is done.
			if purged.IsZero() {
				purged = time.Now().Add(p.cfg.RecoverTimeout)
			}
			if err := p.waitPurge(ctx, op, req.Name, purged, delay); err != nil {
				return providers.PutResult{}, err
			}
			delay = min(2*delay, time.Second)
			created = true
			continue
		}
		// 409: the name was soft-deleted under us (or is being
		// recovered): recover it and write once more.
		if recovered {
			return providers.PutResult{}, classify(op, req.Name, err, req.Value)
		}
		recovered = true
		ok, rerr := p.recoverDeleted(ctx, op, req.Name, kvn, req.Owner, req.Adopt)
		if rerr != nil {
			return providers.PutResult{}, rerr
		}
		if !ok {
			if err := p.waitReadable(ctx, op, req.Name, kvn); err != nil {
				return providers.PutResult{}, err
			}
		}
		created = true
	}
}

// waitPurge sleeps delay before the next write of a name Key Vault is
// still purging, unless that would pass until or the context's deadline:
// then the write is left to the caller's retry policy, as a retryable
// ErrConflict with a short RetryAfter.
func (p *Provider) waitPurge(ctx context.Context, op, name string, until time.Time, delay time.Duration) error {
	end := time.Now().Add(delay)
	d, ok := ctx.Deadline()
	if end.After(until) || ok && end.After(d) {
		e := newErr(op, name, providers.Retryable, fmt.Errorf("%w: HTTP 409 Conflict ObjectIsBeingDeleted: Key Vault has not finished purging the name; write again shortly", providers.ErrConflict))
		e.RetryAfter = purgeRetryAfter
		return e
	}
	return sleep(ctx, op, name, delay)
}

// recoverDeleted recovers kvn when it is deleted-but-recoverable, after
// checking ownership, and waits until it is readable. It reports whether
// there was a deleted secret.
func (p *Provider) recoverDeleted(ctx context.Context, op, name, kvn string, o providers.Owner, adopt bool) (bool, error) {
	d, err := p.client.GetDeletedSecret(ctx, kvn)
	if statusOf(err) == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, classify(op, name, err, nil)
	}
	if !adopt && !providers.IsOwnedBy(tagMap(d.Tags), o) {
		return false, errNotOwned(op, name)
	}
	deadline := time.Now().Add(p.cfg.RecoverTimeout)
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		_, err = p.client.RecoverDeletedSecret(ctx, kvn)
		if err == nil || statusOf(err) == http.StatusNotFound {
			// 404: someone else recovered (or purged) it meanwhile.
			break
		}
		if statusOf(err) != http.StatusConflict || time.Now().After(deadline) {
			return false, classify(op, name, err, nil)
		}
		if err := sleep(ctx, op, name, delay); err != nil {
			return false, err
		}
	}
	p.log.Info("recovered soft-deleted secret", zap.String("provider", Name), zap.String("secret", kvn))
	return true, p.waitReadable(ctx, op, name, kvn)
}

// waitReadable polls until kvn can be read (Key Vault recovers
// asynchronously) or it is not deleted any more.
func (p *Provider) waitReadable(ctx context.Context, op, name, kvn string) error {
	deadline := time.Now().Add(p.cfg.RecoverTimeout)
	for delay := 25 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		_, err := p.client.GetSecret(ctx, kvn, "")
		if err == nil || isDisabled(err) {
			return nil
		}
		if statusOf(err) != http.StatusNotFound {
			return classify(op, name, err, nil)
		}
		if time.Now().After(deadline) {
			return newErr(op, name, providers.Retryable, fmt.Errorf("%w: recovery of the soft-deleted secret still in progress after %v", providers.ErrConflict, p.cfg.RecoverTimeout))
		}
		if err := sleep(ctx, op, name, delay); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, op, name string, d time.Duration) error {
	if err := ctxtime.Sleep(ctx, d); err != nil {
		return ctxErr(op, name, err)
	}
	return nil
}

// Get reads the current version, or version when not empty. A disabled
// version other than the current one (a retired version) is ErrNotFound,
// with ErrSecretDisabled; a disabled current version is ErrSecretDisabled,
// with ErrAccessDenied.
func (p *Provider) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	const op = "get"
	ctx, cancel, kvn, err := p.begin(ctx, op, name)
	if err != nil {
		return nil, err
	}
	defer cancel()
	if version != "" && !versionOK(version) {
		return nil, errInvalid(op, name, "malformed version id")
	}
	res, err := p.client.GetSecret(ctx, kvn, version)
	if err != nil {
		if version != "" && isDisabled(err) {
			return nil, p.disabledVersionErr(ctx, op, name, kvn, version, err)
		}
		return nil, classify(op, name, err, nil)
	}
	s := &providers.Secret{Name: name, Tags: tagMap(res.Tags)}
	if res.Value != nil {
		s.Value = []byte(*res.Value)
	} else {
		s.Value = []byte{}
	}
	if res.ID != nil {
		s.Version = res.ID.Version()
	}
	if a := res.Attributes; a != nil && a.Updated != nil {
		s.UpdatedAt = *a.Updated
	}
	return s, nil
}

// Delete soft-deletes the secret; with req.Force it then purges it,
// unless Config.NoPurgeOnForce.
func (p *Provider) Delete(ctx context.Context, req providers.DeleteRequest) error {
	const op = "delete"
	ctx, cancel, kvn, err := p.begin(ctx, op, req.Name)
	if err != nil {
		return err
	}
	defer cancel()
	unlock, err := p.lock(ctx, op, req.Name, kvn)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := p.currentOf(ctx, kvn)
	if err != nil {
		return classify(op, req.Name, err, nil)
	}
	if !req.Adopt && !cur.ownedBy(req.Owner) {
		return errNotOwned(op, req.Name)
	}
	if _, err := p.client.DeleteSecret(ctx, kvn); err != nil {
		return classify(op, req.Name, err, nil)
	}
	if !req.Force || p.cfg.NoPurgeOnForce {
		return nil
	}
	// The deleted secret may take a moment to become purgeable (404 or
	// 409 "currently being deleted").
	deadline := time.Now().Add(p.cfg.RecoverTimeout)
	for delay := 25 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		_, err := p.client.PurgeDeletedSecret(ctx, kvn)
		if err == nil {
			return nil
		}
		st := statusOf(err)
		if (st != http.StatusConflict && st != http.StatusNotFound) || time.Now().After(deadline) {
			return classify(op, req.Name, err, nil)
		}
		if err := sleep(ctx, op, req.Name, delay); err != nil {
			return err
		}
	}
}

// Versions lists the secret's versions, oldest first.
func (p *Provider) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	const op = "versions"
	ctx, cancel, kvn, err := p.begin(ctx, op, name)
	if err != nil {
		return nil, err
	}
	defer cancel()
	cur, err := p.currentOf(ctx, kvn)
	if err != nil {
		return nil, classify(op, name, err, nil)
	}
	props, err := p.client.ListVersions(ctx, kvn)
	if err != nil {
		return nil, classify(op, name, err, nil)
	}
	out := make([]providers.VersionInfo, 0, len(props))
	for _, sp := range props {
		vi := providers.VersionInfo{Version: sp.ID.Version(), IdempotencyKey: tagOf(sp.Tags, EventTag)}
		vi.Current = vi.Version == cur.version
		if a := sp.Attributes; a != nil && a.Created != nil {
			vi.CreatedAt = *a.Created
		}
		out = append(out, vi)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// UpdateTags replaces the extra tags and description of the current
// version without writing a new one; the ownership tags name req.Owner and
// the event id is kept.
func (p *Provider) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	const op = "update_tags"
	ctx, cancel, kvn, err := p.begin(ctx, op, req.Name)
	if err != nil {
		return err
	}
	defer cancel()
	unlock, err := p.lock(ctx, op, req.Name, kvn)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := p.currentOf(ctx, kvn)
	if err != nil {
		return classify(op, req.Name, err, nil)
	}
	if !req.Adopt && !cur.ownedBy(req.Owner) {
		return errNotOwned(op, req.Name)
	}
	old := tagMap(cur.tags)
	// A partial owner keeps the recorded team and key.
	owner := providers.KeptOwner(old, req.Owner, req.Adopt)
	tags, err := buildTags(op, req.Name, owner, req.Tags, req.Description, old[EventTag])
	if err != nil {
		return err
	}
	if _, err := p.client.UpdateSecretProperties(ctx, kvn, cur.version, azsecrets.UpdateSecretPropertiesParameters{Tags: tags}); err != nil {
		return classify(op, req.Name, err, nil)
	}
	return nil
}
