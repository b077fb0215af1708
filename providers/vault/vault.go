package vault

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
		client.SetToken(cfg.Token)
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

// current is what Put needs to know about a secret before writing.
type current struct {
	exists  bool   // metadata exists
	version uint64 // current version, 0 when none was ever written
	live    bool   // the current version is readable
	meta    versionMeta
	custom  map[string]string
	value   string
	hasVal  bool
}

// readCurrent reads the current version (one GET of data/; a second one of
// metadata/ only when there is no current version at all).
func (p *Provider) readCurrent(ctx context.Context, op, name string, ps paths) (*current, error) {
	sec, status, err := p.read(ctx, op, name, ps.data(), nil)
	if err != nil {
		return nil, err
	}
	if status == 404 && sec == nil {
		sec, status, err = p.read(ctx, op, name, ps.metadata(), nil)
		if err != nil {
			return nil, err
		}
		if status == 404 {
			return &current{}, nil
		}
		m, err := parseMetadata(sec)
		if err != nil {
			return nil, newErr(op, name, providers.Retryable, fmt.Errorf("%w: %w", providers.ErrUnavailable, err))
		}
		// A version may have been written between the two reads: then it
		// is current (its value unknown here).
		c := &current{exists: true, version: m.current, custom: m.custom, live: !m.latestGone()}
		c.meta = m.versions[m.current]
		return c, nil
	}
	d, err := parseData(sec)
	if err != nil {
		return nil, p.dataErr(op, name, err)
	}
	c := &current{exists: true, version: d.version, meta: d.meta, custom: d.custom, live: status != 404 && !d.meta.gone()}
	if c.live {
		s, ok := d.data[p.cfg.DataKey].(string)
		c.value, c.hasVal = s, ok
	}
	return c, nil
}

func (p *Provider) dataErr(op, name string, err error) error {
	if errors.Is(err, errMalformed) {
		// A KV v1 mount, or something else answering: not going to change.
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	return err
}

// owned applies the ownership guard to an existing secret.
func owned(c *current, o providers.Owner, adopt bool) bool {
	if adopt || providers.IsOwnedBy(c.custom, o) {
		return true
	}
	// Metadata with no version ever written and no owner: pre-provisioned
	// by an operator (max_versions, custom_metadata), not a secret.
	return c.version == 0 && c.custom[providers.ManagedByTag] == ""
}

// Put implements providers.Provider.
//
// It reads the current version, refuses a secret it does not own (unless
// Adopt), and returns the current version as a Duplicate when its recorded
// event id equals req.IdempotencyKey. Otherwise it writes the value as
// {"<data>": value} with cas = the current version (0 to create), so a
// concurrent writer makes it fail with a retryable ErrConflict, and then
// records the owner, tags, description and the new version's event id in
// custom_metadata. A new secret's metadata (with the owner) is written
// before its first version, so a crash in between leaves it owned. A Put
// on a deleted or destroyed secret restores it: a new version on top,
// Created set, and the version the soft delete hid is undeleted.
//
// Values must be valid UTF-8 (KV data is JSON). Nil Tags keep the stored
// extra tags; an empty Description keeps the stored one.
func (p *Provider) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	const op = "put"
	name := req.Name
	ps, err := p.begin(ctx, op, name)
	if err != nil {
		return providers.PutResult{}, err
	}
	if !utf8.Valid(req.Value) {
		return providers.PutResult{}, errInvalid(op, name, "value is not valid UTF-8 (Vault KV stores JSON strings)")
	}
	if !printable(req.IdempotencyKey) || len(req.IdempotencyKey) > maxMetadataValueLen {
		return providers.PutResult{}, errInvalid(op, name, "idempotency key must be printable and at most %d bytes", maxMetadataValueLen)
	}
	if err := p.checkMount(ctx, op, name); err != nil {
		return providers.PutResult{}, err
	}
	cur, err := p.readCurrent(ctx, op, name, ps)
	if err != nil {
		return providers.PutResult{}, err
	}
	if cur.exists && !owned(cur, req.Owner, req.Adopt) {
		return providers.PutResult{}, errNotOwned(op, name)
	}
	upd := tagUpdate{owner: req.Owner, extra: req.Tags, keepExtra: req.Tags == nil && cur.exists, adopt: req.Adopt, description: req.Description}
	want, err := p.cfg.desiredTags(cur.custom, upd)
	if err != nil {
		return providers.PutResult{}, errInvalid(op, name, "%v", err)
	}
	if cur.live && req.IdempotencyKey != "" {
		id, recorded := eventOf(cur.custom, cur.version)
		switch {
		case recorded && id == req.IdempotencyKey:
			return providers.PutResult{Version: strconv.FormatUint(cur.version, 10), Duplicate: true}, nil
		case !recorded && cur.hasVal && cur.value == string(req.Value) && providers.IsOwnedBy(cur.custom, req.Owner):
			// Written by this event (same owner, same value), which then
			// failed before recording its event id: record it now.
			if err := p.patchMetadata(ctx, op, name, ps, cur.custom, want, cur.version, req.IdempotencyKey); err != nil {
				return providers.PutResult{}, err
			}
			return providers.PutResult{Version: strconv.FormatUint(cur.version, 10), Duplicate: true}, nil
		}
	}
	switch {
	case !cur.exists:
		body := map[string]any{"custom_metadata": want}
		if p.cfg.MaxVersions > 0 {
			body["max_versions"] = p.cfg.MaxVersions
		}
		if _, _, err := p.write(ctx, op, name, ps.metadata(), body); err != nil {
			return providers.PutResult{}, err
		}
	case !ownerIs(cur.custom, want):
		// Adopting, or an operator's pre-provisioned metadata: take
		// ownership before writing, so a crash leaves the secret owned.
		if err := p.takeOwnership(ctx, op, name, ps, cur.custom, want); err != nil {
			return providers.PutResult{}, err
		}
		cur.custom = mergeOwnership(cur.custom, want)
	}
	sec, status, err := p.write(ctx, op, name, ps.data(), map[string]any{
		"options": map[string]any{"cas": cur.version},
		"data":    map[string]any{p.cfg.DataKey: string(req.Value)},
	})
	if err != nil {
		return providers.PutResult{}, err
	}
	if status == 404 {
		return providers.PutResult{}, newErr(op, name, providers.Permanent, fmt.Errorf("%w: HTTP 404 writing %s (is %q a KV v2 mount?)", providers.ErrNotFound, "data", p.cfg.Mount))
	}
	ver, err := writtenVersion(sec)
	if err != nil {
		// Not KV v2's answer: a misconfigured mount will not heal.
		return providers.PutResult{}, newErr(op, name, providers.Permanent, fmt.Errorf("%w: %w (is %q a KV v2 mount?)", providers.ErrInvalid, err, p.cfg.Mount))
	}
	if err := p.patchMetadata(ctx, op, name, ps, cur.custom, want, ver, req.IdempotencyKey); err != nil {
		return providers.PutResult{}, err
	}
	if cur.exists && cur.version > 0 && cur.meta.deleted && !cur.meta.destroyed {
		// Restore the version the soft delete hid, so it reads again.
		if _, _, err := p.write(ctx, op, name, ps.undelete(), map[string]any{"versions": []uint64{cur.version}}); err != nil {
			p.log.Warn("restored secret, but undeleting its previous version failed", zap.String("name", name), zap.Uint64("version", cur.version), zap.Error(err))
		}
	}
	return providers.PutResult{Version: strconv.FormatUint(ver, 10), Created: !cur.live}, nil
}

func ownership(want map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range ownerTagNames {
		if v, ok := want[k]; ok {
			out[k] = v
		}
	}
	return out
}

// ownerTagNames are the custom_metadata keys that say who owns a secret.
var ownerTagNames = []string{providers.ManagedByTag, providers.TeamTag, providers.KeyTag}

// ownerIs reports whether custom already carries want's ownership tags.
func ownerIs(custom, want map[string]string) bool {
	for _, k := range ownerTagNames {
		if custom[k] != want[k] {
			return false
		}
	}
	return true
}

func mergeOwnership(custom, want map[string]string) map[string]string {
	out := maps.Clone(custom)
	if out == nil {
		out = map[string]string{}
	}
	delete(out, providers.TeamTag)
	delete(out, providers.KeyTag)
	maps.Copy(out, ownership(want))
	return out
}

// takeOwnership sets the ownership tags of want on an existing secret,
// leaving its other custom_metadata alone.
func (p *Provider) takeOwnership(ctx context.Context, op, name string, ps paths, old, want map[string]string) error {
	patch := map[string]any{}
	for _, k := range ownerTagNames {
		if v, ok := want[k]; ok {
			patch[k] = v
		} else if _, had := old[k]; had {
			patch[k] = nil
		}
	}
	return p.sendPatch(ctx, op, name, ps, patch)
}

// patchMetadata changes custom_metadata from old to want and records
// eventID as the event of version.
func (p *Provider) patchMetadata(ctx context.Context, op, name string, ps paths, old, want map[string]string, version uint64, eventID string) error {
	return p.sendPatch(ctx, op, name, ps, p.cfg.metadataPatch(old, want, version, eventID))
}

func (p *Provider) sendPatch(ctx context.Context, op, name string, ps paths, patch map[string]any) error {
	if len(patch) == 0 {
		return nil
	}
	status, err := p.patch(ctx, op, name, ps.metadata(), map[string]any{"custom_metadata": patch})
	if err != nil {
		return err
	}
	if status == 404 {
		// Deleted (metadata and all) between our write and this patch.
		return newErr(op, name, providers.Retryable, fmt.Errorf("%w: the secret was deleted concurrently", providers.ErrConflict))
	}
	return nil
}

func writtenVersion(sec *api.Secret) (uint64, error) {
	if sec == nil || sec.Data == nil {
		return 0, fmt.Errorf("%w: no version in the write response", errMalformed)
	}
	v, err := toUint(sec.Data["version"])
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: version in the write response", errMalformed)
	}
	return v, nil
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
		Tags:      tagsView(d.custom, d.version),
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
// first, with the event id recorded for each (for the newest
// Config.EventHistory versions). Versions deleted by a soft delete are
// listed (their data is recoverable); destroyed ones are marked Destroyed.
// A secret whose current version is deleted or destroyed is not found.
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
		id, _ := eventOf(m.custom, v)
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
