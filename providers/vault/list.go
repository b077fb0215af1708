package vault

import (
	"context"
	"sort"
	"strings"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Lister = (*Provider)(nil)

// List implements providers.Lister. KV v2 has no server-side filter or
// paging: List walks the folder tree with LIST <mount>/metadata/<path>
// (one request per folder, each answering the whole folder), starting at
// the deepest folder req.Prefix names and descending only into folders that
// can hold names with that prefix, and reads each candidate's metadata (one
// GET per secret) to check its custom_metadata ownership tags and whether
// its current version is live. Every request goes through the provider's
// rate limit (Config.RateLimit), so a listing costs about one read per
// secret under the prefix plus one per folder. Names are relative to
// Config.PathPrefix, as Put takes them. Secrets whose current version is
// soft-deleted or destroyed are not listed. The LIST needs the "list"
// capability on <mount>/metadata/*. Names are visited in Vault's order
// (sorted within each folder); a secret deleted during the walk is
// skipped, one created during it may or may not be listed.
//
// With req.Every, List reads no metadata: it answers every name the
// folder LISTs return (one request per folder, owners left empty),
// including secrets whose current version is soft-deleted.
func (p *Provider) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	const op = "list"
	if p.closed.Load() {
		return newErr(op, "", providers.Permanent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return newErr(op, "", providers.Retryable, err)
	}
	dir := req.Prefix[:strings.LastIndexByte(req.Prefix, '/')+1]
	return p.listDir(ctx, op, dir, req, fn)
}

// listDir lists the neutral folder dir ("" or ending in '/').
func (p *Provider) listDir(ctx context.Context, op, dir string, req providers.ListRequest, fn func(providers.Listed) error) error {
	ps := p.cfg.pathsFor("x")
	path := ps.base + "metadata/" + p.cfg.PathPrefix
	if p.cfg.PathPrefix != "" && dir != "" {
		path += "/"
	}
	path += strings.TrimSuffix(dir, "/")
	keys, err := p.list(ctx, op, path)
	if err != nil {
		return err
	}
	sort.Strings(keys)
	for _, k := range keys {
		name := dir + k
		if folder := strings.HasSuffix(k, "/"); folder {
			if strings.HasPrefix(name, req.Prefix) || strings.HasPrefix(req.Prefix, name) {
				if err := p.listDir(ctx, op, name, req, fn); err != nil {
					return err
				}
			}
			continue
		}
		if !strings.HasPrefix(name, req.Prefix) || checkPath(name) != nil {
			continue
		}
		if req.Every {
			if err := fn(providers.Listed{Name: name}); err != nil {
				return err
			}
			continue
		}
		m, err := p.readMetadata(ctx, op, name, p.cfg.pathsFor(name))
		if err != nil {
			return err
		}
		if m == nil || m.latestGone() || !providers.ListOwned(req, name, m.custom) {
			continue
		}
		if err := fn(providers.ListedFromTags(name, m.custom)); err != nil {
			return err
		}
	}
	return nil
}
