package vault

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/keyrelay/keyrelay/providers"
)

// Name is the key_management_system name the provider registers under
// (LiteLLM's).
const Name = "hashicorp_vault"

// Register adds the Vault provider to r under Name.
func Register(r *providers.Registry) {
	r.Register(Name, Factory)
	r.AllowTeamOptions(Name, TeamOptions...)
}

// Factory builds a Vault provider from cfg.Options and LiteLLM's environment
// variables read through cfg.Getenv (os.Getenv when nil; see
// ConfigFromOptions). It does not contact Vault: the first call logs in.
func Factory(ctx context.Context, cfg providers.Config) (providers.Provider, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	c, err := ConfigFromOptions(cfg.Options, getenv)
	if err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	return New(ctx, c, cfg.Logger)
}

// Provider writes keyrelay's secrets to a HashiCorp Vault KV v2 mount. It is
// safe for concurrent use.
type Provider struct {
	cfg     Config
	client  *api.Client
	kv      kvAPI
	auth    *tokenSource
	limiter *rate.Limiter
	log     *zap.Logger
	closed  atomic.Bool
	cancel  context.CancelFunc

	mountMu      sync.Mutex
	mountChecked bool
	mountErr     error
}

var (
	_ providers.Provider   = (*Provider)(nil)
	_ providers.Versioner  = (*Provider)(nil)
	_ providers.TagUpdater = (*Provider)(nil)
	_ providers.Closer     = (*Provider)(nil)
)

// New builds a provider for cfg: zero fields get their defaults, then cfg
// is validated (ConfigFromOptions does both and applies LiteLLM's
// environment). It reads the CA bundle and client certificate files but
// does not contact Vault. log may be nil.
func New(_ context.Context, cfg Config, log *zap.Logger) (*Provider, error) {
	const op = "open"
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, newErr(op, "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	client, err := newAPIClient(cfg)
	if err != nil {
		return nil, newErr(op, "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	tokens, err := newTokenClient(client, cfg.LoginNamespace)
	if err != nil {
		return nil, newErr(op, "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	if log == nil {
		log = zap.NewNop()
	}
	lifetime, cancel := context.WithCancel(context.Background())
	p := &Provider{cfg: cfg, client: client, kv: client.Logical(), log: log.With(zap.String("provider", Name)), cancel: cancel}
	if cfg.RateLimit > 0 {
		p.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.RateBurst)
	}
	ts := &tokenSource{
		client:   client,
		tokens:   tokens,
		lifetime: lifetime,
		timeout:  cfg.Timeout,
		now:      time.Now,
		classify: func(ctx context.Context, op string, err error) *providers.Error {
			return p.classify(ctx, op, "", err, nil)
		},
	}
	switch cfg.Method() {
	case AuthToken:
		ts.static = cfg.Token
		ts.setToken(cfg.Token)
	case AuthAppRole:
		ts.login = p.loginFunc("auth/"+cfg.AppRoleMountPath+"/login", map[string]any{"role_id": cfg.AppRoleRoleID, "secret_id": cfg.AppRoleSecretID})
	case AuthCert:
		body := map[string]any{}
		if cfg.CertRole != "" {
			body["name"] = cfg.CertRole
		}
		ts.login = p.loginFunc("auth/"+cfg.CertMountPath+"/login", body)
	}
	p.auth = ts
	return p, nil
}

// loginFunc logs in at path with body, sending the login namespace as the
// X-Vault-Namespace header and no token.
func (p *Provider) loginFunc(path string, body map[string]any) loginFunc {
	return func(ctx context.Context) (*api.SecretAuth, error) {
		lc, err := p.client.Clone()
		if err != nil {
			return nil, newErr("login", "", providers.Permanent, fmt.Errorf("%w: %w", ErrLogin, err))
		}
		lc.ClearToken()
		lc.SetHeaders(p.client.Headers())
		lc.ClearNamespace()
		if p.cfg.LoginNamespace != "" {
			lc.SetNamespace(p.cfg.LoginNamespace)
		}
		cctx, ci := withCallInfo(ctx)
		sec, err := lc.Logical().WriteWithContext(cctx, path, body)
		if err != nil || sec == nil || sec.Auth == nil {
			if err == nil {
				err = fmt.Errorf("HTTP %d: no auth in the login response", ci.status)
			}
			pe := p.classify(ctx, "login", "", err, ci)
			var re *api.ResponseError
			if errors.As(err, &re) && (re.StatusCode == 400 || re.StatusCode == 401 || re.StatusCode == 403) {
				// A rejected role id, secret id or certificate.
				pe = newErr("login", "", providers.Permanent, fmt.Errorf("%w: %s", providers.ErrAccessDenied, p.scrub(fmt.Sprintf("HTTP %d: %s", re.StatusCode, strings.Join(re.Errors, "; ")))))
			}
			pe.Err = fmt.Errorf("%w: %w", ErrLogin, pe.Err)
			return nil, pe
		}
		return sec.Auth, nil
	}
}

// Config returns the provider's configuration.
func (p *Provider) Config() Config { return p.cfg }

// AuthStats returns how often the provider logged in and renewed its token.
func (p *Provider) AuthStats() AuthStats { return p.auth.stats() }

// SecretPath returns the API path (relative to /v1/) of name's data:
// [namespace/]mount/data/[path_prefix/]name, the location LiteLLM reads.
func (p *Provider) SecretPath(name string) (string, error) {
	if err := checkPath(name); err != nil {
		return "", errInvalid("path", name, "secret name: %v", err)
	}
	return p.cfg.pathsFor(name).data(), nil
}

// Capabilities implements providers.Provider: versions and tags are
// supported, and soft delete with the default delete_mode "soft" (with
// "destroy" or "metadata" a deleted secret's data is gone).
func (p *Provider) Capabilities() providers.Capabilities {
	return providers.Capabilities{Versions: true, SoftDelete: p.cfg.DeleteMode == DeleteSoft, Tags: true}
}

// begin checks what every call checks first and returns the secret's paths.
func (p *Provider) begin(ctx context.Context, op, name string) (paths, error) {
	if p.closed.Load() {
		return paths{}, newErr(op, name, providers.Permanent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return paths{}, newErr(op, name, providers.Retryable, err)
	}
	if err := checkPath(name); err != nil {
		shown := name
		if len(shown) > 64 || !utf8.ValidString(shown) {
			shown = ""
		}
		return paths{}, errInvalid(op, shown, "secret name: %v", err)
	}
	return p.cfg.pathsFor(name), nil
}

// checkMount makes sure, once per provider, that the mount is a KV version
// 2 engine before the first write: on a KV version 1 mount the provider's
// writes to <mount>/metadata/... and <mount>/data/... would create secrets
// named "metadata/..." and "data/...". It asks
// sys/internal/ui/mounts/<mount> (as the vault CLI does); when the token may
// not ask (403), the check is skipped. Other failures are returned and the
// check is tried again on the next Put.
func (p *Provider) checkMount(ctx context.Context, op, name string) error {
	p.mountMu.Lock()
	defer p.mountMu.Unlock()
	if p.mountChecked {
		if p.mountErr != nil {
			return reOp(p.mountErr, op, name)
		}
		return nil
	}
	path := "sys/internal/ui/mounts/" + p.cfg.Mount
	if p.cfg.Namespace != "" {
		path = p.cfg.Namespace + "/" + path
	}
	sec, status, err := p.read(ctx, op, name, path, nil)
	switch {
	case errors.Is(err, providers.ErrAccessDenied) || status == 404:
		p.mountChecked = true
		return nil
	case err != nil:
		return err
	}
	p.mountChecked = true
	var typ, version string
	if sec != nil {
		typ, _ = sec.Data["type"].(string)
		if o, ok := sec.Data["options"].(map[string]any); ok {
			version, _ = o["version"].(string)
		}
	}
	if typ != "kv" || version != "2" {
		p.mountErr = newErr(op, name, providers.Permanent, fmt.Errorf("%w: mount %q is %s version %q, not a KV version 2 engine (option %q, %s)",
			providers.ErrInvalid, p.cfg.Mount, typ, version, OptionMount, EnvMountName))
		return p.mountErr
	}
	return nil
}

// Get implements providers.Provider: the current version (version "") or
// the given version number. A deleted or destroyed version is not found.
// Tags are the ownership and extra tags from custom_metadata, with
// providers.EventTag set to the event id that wrote the version, when
// recorded. The value is the data field Config.DataKey ("key"); a secret
// without it fails with ErrNoValue.
func (p *Provider) Get(ctx context.Context, name, version string) (*providers.Secret, error) {
	const op = "get"
	ps, err := p.begin(ctx, op, name)
	if err != nil {
		return nil, err
	}
	var query url.Values
	if version != "" {
		n, err := strconv.ParseUint(version, 10, 64)
		if err != nil || n == 0 {
			return nil, errInvalid(op, name, "version %q is not a positive integer", clip(version))
		}
		query = url.Values{"version": []string{version}}
	}
	sec, status, err := p.read(ctx, op, name, ps.data(), query)
	if err != nil {
		return nil, err
	}
	if status == 404 {
		if version != "" {
			return nil, newErr(op, name, providers.Permanent, fmt.Errorf("%w: no readable version %s", providers.ErrNotFound, version))
		}
		return nil, errNotFound(op, name)
	}
	d, err := parseData(sec)
	if err != nil {
		return nil, p.dataErr(op, name, err)
	}
	if d.data == nil || d.meta.gone() {
		return nil, errNotFound(op, name)
	}
	s, ok := d.data[p.cfg.DataKey].(string)
	if !ok {
		return nil, newErr(op, name, providers.Permanent, fmt.Errorf("%w %q", ErrNoValue, p.cfg.DataKey))
	}
	return &providers.Secret{
		Name:      name,
		Version:   strconv.FormatUint(d.version, 10),
		Value:     []byte(s),
		Tags:      tagsView(d.custom, d.data, d.version),
		UpdatedAt: d.meta.created,
	}, nil
}

// readMetadata reads name's metadata; nil when there is none.
func (p *Provider) readMetadata(ctx context.Context, op, name string, ps paths) (*metadata, error) {
	sec, status, err := p.read(ctx, op, name, ps.metadata(), nil)
	if err != nil {
		return nil, err
	}
	if status == 404 {
		return nil, nil
	}
	m, err := parseMetadata(sec)
	if err != nil {
		return nil, p.dataErr(op, name, err)
	}
	return m, nil
}

// Delete implements providers.Provider. Without Force it follows
// Config.DeleteMode: "soft" marks the current version deleted (a later Put
// restores the secret), "destroy" destroys every version's data and keeps
// the metadata, "metadata" removes everything. Force always removes the
// metadata and every version. A secret whose current version is already
// deleted (or, in destroy mode, with nothing left to destroy) is
// ErrNotFound, unless Force.
func (p *Provider) Delete(ctx context.Context, req providers.DeleteRequest) error {
	const op = "delete"
	name := req.Name
	ps, err := p.begin(ctx, op, name)
	if err != nil {
		return err
	}
	m, err := p.readMetadata(ctx, op, name, ps)
	if err != nil {
		return err
	}
	if m == nil || m.current == 0 || len(m.versions) == 0 {
		return errNotFound(op, name)
	}
	if !req.Adopt && !providers.IsOwnedBy(m.custom, req.Owner) {
		return errNotOwned(op, name)
	}
	mode := p.cfg.DeleteMode
	if req.Force {
		mode = DeleteMetadata
	}
	var status int
	switch mode {
	case DeleteSoft:
		if m.latestGone() {
			return errNotFound(op, name)
		}
		status, err = p.remove(ctx, op, name, ps.data())
	case DeleteDestroy:
		var live []uint64
		for _, v := range sortedVersions(m.versions) {
			if !m.versions[v].destroyed {
				live = append(live, v)
			}
		}
		if len(live) == 0 {
			return errNotFound(op, name)
		}
		_, status, err = p.write(ctx, op, name, ps.destroy(), map[string]any{"versions": live})
	case DeleteMetadata:
		status, err = p.remove(ctx, op, name, ps.metadata())
	}
	if err != nil {
		return err
	}
	if status == 404 {
		return errNotFound(op, name)
	}
	return nil
}

// Versions implements providers.Versioner: the versions Vault keeps, oldest
// first, with the event id that wrote each of the newest
// Config.EventHistory live versions. Versions deleted by a soft delete are
// listed (their data is recoverable); destroyed ones are marked Destroyed.
// A secret whose current version is deleted or destroyed is not found.
//
// It costs one metadata read plus, since the event id travels in each
// version's data (DataEventKey), one read per version reported with its
// event id; versions written before that have it in custom_metadata.
func (p *Provider) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	const op = "versions"
	ps, err := p.begin(ctx, op, name)
	if err != nil {
		return nil, err
	}
	m, err := p.readMetadata(ctx, op, name, ps)
	if err != nil {
		return nil, err
	}
	if m == nil || m.latestGone() {
		return nil, errNotFound(op, name)
	}
	var out []providers.VersionInfo
	for _, v := range sortedVersions(m.versions) {
		vm := m.versions[v]
		id, err := p.eventOfVersion(ctx, op, name, ps, m, v)
		if err != nil {
			return nil, err
		}
		out = append(out, providers.VersionInfo{
			Version:        strconv.FormatUint(v, 10),
			IdempotencyKey: id,
			CreatedAt:      vm.created,
			Current:        v == m.current,
			Destroyed:      vm.destroyed,
		})
	}
	return out, nil
}

// eventOfVersion returns the event id that wrote version v: recorded in
// custom_metadata (older versions), else read from the version's data when
// v is live and among the newest Config.EventHistory versions; "" when
// unknown.
func (p *Provider) eventOfVersion(ctx context.Context, op, name string, ps paths, m *metadata, v uint64) (string, error) {
	if id, ok := eventOf(m.custom, v); ok {
		return id, nil
	}
	if m.versions[v].gone() || v+uint64(p.cfg.EventHistory) <= m.current {
		return "", nil
	}
	sec, status, err := p.read(ctx, op, name, ps.data(), url.Values{"version": []string{strconv.FormatUint(v, 10)}})
	if err != nil || status == 404 {
		return "", err
	}
	d, err := parseData(sec)
	if err != nil {
		return "", p.dataErr(op, name, err)
	}
	if _, copied := d.data[DataFirstCopyKey]; copied {
		// Written back by undoForeignWrite, not by the event whose id
		// it carries: that event wrote version 1.
		return "", nil
	}
	id, _ := versionEvent(d.data, nil, v)
	return id, nil
}

// UpdateTags implements providers.TagUpdater: it replaces the extra tags
// (and the description, when not empty) in custom_metadata without a new
// version. With Adopt the ownership moves to req.Owner.
func (p *Provider) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	const op = "update_tags"
	name := req.Name
	ps, err := p.begin(ctx, op, name)
	if err != nil {
		return err
	}
	m, err := p.readMetadata(ctx, op, name, ps)
	if err != nil {
		return err
	}
	if m == nil || m.latestGone() {
		return errNotFound(op, name)
	}
	if !req.Adopt && !providers.IsOwnedBy(m.custom, req.Owner) {
		return errNotOwned(op, name)
	}
	want, err := p.cfg.desiredTags(m.custom, tagUpdate{owner: req.Owner, extra: req.Tags, adopt: req.Adopt, description: req.Description})
	if err != nil {
		return errInvalid(op, name, "%v", err)
	}
	patch := p.cfg.metadataPatch(m.custom, want, 0, "")
	if len(patch) == 0 {
		return nil
	}
	status, err := p.patch(ctx, op, name, ps.metadata(), map[string]any{"custom_metadata": patch})
	if err != nil {
		return err
	}
	if status == 404 {
		return errNotFound(op, name)
	}
	return nil
}

// Close implements providers.Closer: later calls fail with ErrClosed, a
// background token refresh is stopped, and a token obtained by logging in
// is revoked (best effort, at most 2 s). Close is idempotent.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	p.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	p.auth.close(ctx)
	return nil
}
