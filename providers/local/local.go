package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/providers"
)

// Name is the key_management_system name the provider registers under.
const Name = "local"

// Register adds the local provider to r under Name.
func Register(r *providers.Registry) { r.Register(Name, Factory) }

// Factory builds a local provider from cfg.Options (see ConfigFromOptions).
func Factory(_ context.Context, cfg providers.Config) (providers.Provider, error) {
	c, err := ConfigFromOptions(cfg.Options)
	if err != nil {
		return nil, newErr("open", "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	p, err := New(c)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Provider is the local provider. It is safe for concurrent use, and
// several processes may share one directory.
type Provider struct {
	cfg    Config
	store  store
	seal   *sealer
	closed atomic.Bool
}

var (
	_ providers.Provider   = (*Provider)(nil)
	_ providers.Versioner  = (*Provider)(nil)
	_ providers.TagUpdater = (*Provider)(nil)
	_ providers.Closer     = (*Provider)(nil)
	_ providers.Lister     = (*Provider)(nil)
	_ providers.Retirer    = (*Provider)(nil)
)

// New opens (creating when needed) the store cfg describes. Errors are
// *providers.Error values: a bad config or key file is permanent, a failing
// file system retryable.
func New(cfg Config) (*Provider, error) {
	const op = "open"
	if err := cfg.Validate(); err != nil {
		return nil, newErr(op, "", providers.Permanent, fmt.Errorf("%w: %w", providers.ErrInvalid, err))
	}
	p := &Provider{cfg: cfg}
	if cfg.InMemory() {
		p.store = newMemStore()
	} else {
		fstore, err := newFileStore(cfg.Path, !cfg.NoFsync)
		if err != nil {
			return nil, errIO(op, "", fmt.Errorf("Config.Path: %w", err))
		}
		p.store = fstore
	}
	var key []byte
	if path, create := cfg.keyFile(); path != "" {
		k, err := loadKey(path, create)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, errBadKey):
			return nil, newErr(op, "", providers.Permanent, fmt.Errorf("%w: Config.KeyFile: %w", providers.ErrInvalid, err))
		case err != nil:
			return nil, errIO(op, "", fmt.Errorf("Config.KeyFile: %w", err))
		}
		key = k
	} else {
		enc, err := GenerateKey()
		if err != nil {
			return nil, newErr(op, "", providers.Permanent, err)
		}
		if key, err = parseKey("(random)", enc); err != nil {
			return nil, newErr(op, "", providers.Permanent, err)
		}
	}
	s, err := newSealer(key)
	if err != nil {
		return nil, newErr(op, "", providers.Permanent, err)
	}
	p.seal = s
	return p, nil
}

// Config returns the configuration the provider was opened with.
func (p *Provider) Config() Config { return p.cfg }

// KeyID identifies the encryption key (a truncated hash of it, safe to
// log). Every secret file records the key id it was written with.
func (p *Provider) KeyID() string { return p.seal.keyID }

// Capabilities implements providers.Provider: versions, soft delete and
// tags are all supported.
func (p *Provider) Capabilities() providers.Capabilities {
	return providers.Capabilities{Versions: true, SoftDelete: true, Tags: true}
}

// begin checks what every call checks first.
func (p *Provider) begin(ctx context.Context, op, name string) error {
	if p.closed.Load() {
		return newErr(op, name, providers.Permanent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return errCtx(op, name, err)
	}
	switch {
	case name == "":
		return errInvalid(op, name, "empty name")
	case len(name) > MaxNameLength:
		return errInvalid(op, name[:64]+"...", "name is %d bytes, at most %d allowed", len(name), MaxNameLength)
	case !utf8.ValidString(name):
		return errInvalid(op, "", "name is not valid UTF-8")
	}
	return nil
}

func checkStrings(op, name, desc string, tags map[string]string) error {
	if !utf8.ValidString(desc) {
		return errInvalid(op, name, "description is not valid UTF-8")
	}
	for k, v := range tags {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return errInvalid(op, name, "tag names must be non-empty and tags valid UTF-8")
		}
	}
	return nil
}

// load reads the record for name (checked when read from a file); nil
// when there is none.
func (p *Provider) load(op, name string) (*record, error) {
	rec, err := p.store.load(name)
	if err != nil {
		return nil, p.storeErr(op, name, err)
	}
	return rec, nil
}

func (p *Provider) storeErr(op, name string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return newErr(op, name, providers.Permanent, err)
	}
	return errIO(op, name, err)
}

func (p *Provider) checkKey(op, name string, rec *record) error {
	if rec.KeyID != p.seal.keyID {
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w (file has key id %s, key_file has %s)", ErrWrongKey, rec.KeyID, p.seal.keyID))
	}
	return nil
}

// lock takes the per-secret lock and re-checks the context.
func (p *Provider) lock(ctx context.Context, op, name string) (func(), error) {
	unlock, err := p.store.lock(ctx, name)
	if err != nil {
		return nil, errIO(op, name, err)
	}
	if err := ctx.Err(); err != nil {
		unlock()
		return nil, errCtx(op, name, err)
	}
	return unlock, nil
}

// Put implements providers.Provider. It writes version "1" for a new
// secret and the next number otherwise; a soft-deleted secret is restored
// with a new version on top of its old ones (Created is true). A Put
// carrying the current version's IdempotencyKey returns that version as a
// Duplicate without writing. A Put with nil Tags keeps the secret's extra
// tags; non-nil Tags replace them. A non-empty Description replaces the
// stored one.
func (p *Provider) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	const op = "put"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return providers.PutResult{}, err
	}
	if len(req.Value) > MaxValueSize {
		return providers.PutResult{}, errInvalid(op, name, "value is %d bytes, at most %d allowed", len(req.Value), MaxValueSize)
	}
	if !utf8.ValidString(req.IdempotencyKey) {
		return providers.PutResult{}, errInvalid(op, name, "idempotency key is not valid UTF-8")
	}
	if err := checkStrings(op, name, req.Description, req.Tags); err != nil {
		return providers.PutResult{}, err
	}
	unlock, err := p.lock(ctx, op, name)
	if err != nil {
		return providers.PutResult{}, err
	}
	defer unlock()
	rec, err := p.load(op, name)
	if err != nil {
		return providers.PutResult{}, err
	}
	now := time.Now().UTC()
	created := rec == nil
	if rec != nil {
		if err := p.checkKey(op, name, rec); err != nil {
			return providers.PutResult{}, err
		}
		if !req.Adopt && !providers.IsOwnedBy(rec.Tags, req.Owner) {
			return providers.PutResult{}, errNotOwned(op, name)
		}
		if cur := rec.current(); !rec.Deleted && req.IdempotencyKey != "" && cur.IdempotencyKey == req.IdempotencyKey {
			return providers.PutResult{Version: cur.Version, Duplicate: true}, nil
		}
	} else {
		rec = &record{Format: recordFormat, Name: name, KeyID: p.seal.keyID, CreatedAt: now}
	}
	if rec.Deleted {
		created = true
		rec.Deleted, rec.DeletedAt = false, nil
	}
	ver := strconv.Itoa(len(rec.Versions) + 1)
	nonce, ct, err := p.seal.seal(name, ver, req.Value)
	if err != nil {
		return providers.PutResult{}, newErr(op, name, providers.Retryable, fmt.Errorf("%w: random nonce: %w", providers.ErrUnavailable, err))
	}
	rec.Versions = append(rec.Versions, version{Version: ver, IdempotencyKey: req.IdempotencyKey, CreatedAt: now, Nonce: nonce, Ciphertext: ct})
	rec.Tags = mergeTags(rec.Tags, req.Owner, req.Tags, req.Tags == nil && !created, req.Adopt)
	if req.Description != "" {
		rec.Description = req.Description
	}
	rec.UpdatedAt = now
	if err := p.store.save(rec); err != nil {
		return providers.PutResult{}, errIO(op, name, err)
	}
	return providers.PutResult{Version: ver, Created: created}, nil
}

// Get implements providers.Provider. A soft-deleted secret is not found,
// whatever the version asked for, and neither is a retired version.
func (p *Provider) Get(ctx context.Context, name, ver string) (*providers.Secret, error) {
	const op = "get"
	if err := p.begin(ctx, op, name); err != nil {
		return nil, err
	}
	rec, err := p.load(op, name)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Deleted {
		return nil, errNotFound(op, name)
	}
	if err := p.checkKey(op, name, rec); err != nil {
		return nil, err
	}
	v := rec.current()
	if ver != "" {
		if v = rec.find(ver); v == nil {
			return nil, newErr(op, name, providers.Permanent, fmt.Errorf("%w: no version %q", providers.ErrNotFound, ver))
		}
		if v.retired() {
			return nil, newErr(op, name, providers.Permanent, fmt.Errorf("%w: version %s was retired", providers.ErrNotFound, ver))
		}
	}
	value, err := p.seal.open(name, v)
	if err != nil {
		return nil, newErr(op, name, providers.Permanent, err)
	}
	return &providers.Secret{Name: name, Version: v.Version, Value: value, Tags: maps.Clone(rec.Tags), UpdatedAt: v.CreatedAt}, nil
}

// Delete implements providers.Provider. Without Force the secret is marked
// deleted and keeps its versions (a later Put restores it); with Force, or
// on a secret already soft-deleted, its file is removed. Deleting a missing
// (or, without Force, an already soft-deleted) secret is ErrNotFound.
func (p *Provider) Delete(ctx context.Context, req providers.DeleteRequest) error {
	const op = "delete"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return err
	}
	unlock, err := p.lock(ctx, op, name)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := p.load(op, name)
	if err != nil {
		return err
	}
	if rec == nil || (rec.Deleted && !req.Force) {
		return errNotFound(op, name)
	}
	if !req.Adopt && !providers.IsOwnedBy(rec.Tags, req.Owner) {
		return errNotOwned(op, name)
	}
	if req.Force {
		if err := p.store.remove(name); err != nil {
			return errIO(op, name, err)
		}
		return nil
	}
	now := time.Now().UTC()
	rec.Deleted, rec.DeletedAt, rec.UpdatedAt = true, &now, now
	if err := p.store.save(rec); err != nil {
		return errIO(op, name, err)
	}
	return nil
}

// Versions implements providers.Versioner: every version, oldest first,
// the last one current. A soft-deleted secret is not found.
func (p *Provider) Versions(ctx context.Context, name string) ([]providers.VersionInfo, error) {
	const op = "versions"
	if err := p.begin(ctx, op, name); err != nil {
		return nil, err
	}
	rec, err := p.load(op, name)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.Deleted {
		return nil, errNotFound(op, name)
	}
	return rec.versionInfos(), nil
}

// UpdateTags implements providers.TagUpdater: it replaces the extra tags
// (and the description, when not empty) without a new version. With Adopt
// the ownership tags move to req.Owner.
func (p *Provider) UpdateTags(ctx context.Context, req providers.TagRequest) error {
	const op = "update_tags"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return err
	}
	if err := checkStrings(op, name, req.Description, req.Tags); err != nil {
		return err
	}
	unlock, err := p.lock(ctx, op, name)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := p.load(op, name)
	if err != nil {
		return err
	}
	if rec == nil || rec.Deleted {
		return errNotFound(op, name)
	}
	if !req.Adopt && !providers.IsOwnedBy(rec.Tags, req.Owner) {
		return errNotOwned(op, name)
	}
	rec.Tags = mergeTags(rec.Tags, req.Owner, req.Tags, false, req.Adopt)
	if req.Description != "" {
		rec.Description = req.Description
	}
	rec.UpdatedAt = time.Now().UTC()
	if err := p.store.save(rec); err != nil {
		return errIO(op, name, err)
	}
	return nil
}

// Names lists the secrets that exist (not soft-deleted), sorted. In file
// mode it reads every file in the directory, so it sees other processes'
// writes; it fails with ErrCorrupt on a file it cannot parse.
func (p *Provider) Names(ctx context.Context) ([]string, error) {
	const op = "list"
	if p.closed.Load() {
		return nil, newErr(op, "", providers.Permanent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, errCtx(op, "", err)
	}
	recs, err := p.store.list()
	if err != nil {
		return nil, p.storeErr(op, "", err)
	}
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		if !r.Deleted {
			out = append(out, r.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// List implements providers.Lister: the live secrets whose tags mark them
// keyrelay's (and req.TeamID's, when set) with names starting with
// req.Prefix, in name order. It reads every record (in file mode, every file
// in the directory, so it sees other processes' writes) before calling fn;
// there is no paging and no quota. A file it cannot parse fails the listing
// with ErrCorrupt. An error from fn stops the listing and is returned as is.
func (p *Provider) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	const op = "list"
	if p.closed.Load() {
		return newErr(op, "", providers.Permanent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return errCtx(op, "", err)
	}
	recs, err := p.store.list()
	if err != nil {
		return p.storeErr(op, "", err)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	for _, r := range recs {
		if r.Deleted || !providers.ListOwned(req, r.Name, r.Tags) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errCtx(op, "", err)
		}
		if err := fn(providers.ListedFromTags(r.Name, r.Tags)); err != nil {
			return err
		}
	}
	return nil
}

// Close implements providers.Closer. Later calls fail with ErrClosed; the
// in-memory mode's secrets are dropped. Close is idempotent.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if m, ok := p.store.(*memStore); ok {
		m.clear()
	}
	return nil
}
