package keyvault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Lister = (*Provider)(nil)

// List implements providers.Lister with Get Secrets (GET /secrets),
// following nextLink page by page; Key Vault chooses the page size (25 by
// default; the SDK does not send maxresults). Each page is one request
// against the vault's read quota (keyrelay does not limit reads
// client-side); Config.Timeout bounds each page when ctx has no deadline.
// The list carries each secret's current tags, so ownership is checked
// without reading the secrets. Deleted secrets are not listed (they move to
// /deletedsecrets).
//
// Key Vault names cannot be mapped back to keyrelay names (see KVName):
// List returns the name Put recorded in the keyrelay-name tag (NameTag),
// and for a secret without it the Key Vault name when KVName keeps that
// name as it is. Secrets written under names longer than 256 bytes (no
// NameTag) with a mapped Key Vault name are skipped; with req.Every such a
// secret ends the listing with providers.ErrUnnamed.
func (p *Provider) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	const op = "list"
	if err := ctx.Err(); err != nil {
		return ctxErr(op, "", err)
	}
	seen := map[string]bool{}
	for attempt := 0; ; attempt++ {
		c, gen := p.client.current()
		err := p.listWith(ctx, op, c, req, seen, fn)
		if attempt == 0 && statusOf(err) == http.StatusUnauthorized && ctx.Err() == nil && p.client.refresh(gen) {
			continue // once more with a new token, skipping what was listed
		}
		var cb callbackErr
		switch {
		case err == nil:
			return nil
		case errors.As(err, &cb):
			return cb.err
		}
		return classify(op, "", err, nil)
	}
}

// callbackErr marks an error returned by List's fn, returned as it is.
type callbackErr struct{ err error }

func (e callbackErr) Error() string { return e.err.Error() }
func (e callbackErr) Unwrap() error { return e.err }

func (p *Provider) listWith(ctx context.Context, op string, c *azsecrets.Client, req providers.ListRequest, seen map[string]bool, fn func(providers.Listed) error) error {
	pager := c.NewListSecretPropertiesPager(nil)
	for pager.More() {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); !ok {
			pctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		}
		page, err := pager.NextPage(pctx)
		cancel()
		if err != nil {
			return err
		}
		for _, sp := range page.Value {
			if sp == nil || sp.ID == nil {
				continue
			}
			kvn := sp.ID.Name()
			tags := tagMap(sp.Tags)
			name, ok := tags[NameTag]
			if !ok {
				if req.Every && strings.Contains(kvn, "--") && mayBeUnder(kvn, req.Prefix) {
					return callbackErr{newErr(op, "", providers.Permanent, fmt.Errorf("%w: %q is a mapped Key Vault name without the %s tag", providers.ErrUnnamed, kvn, NameTag))}
				}
				name = kvn
			}
			if KVName(name) != kvn || seen[name] || !providers.ListOwned(req, name, tags) {
				continue
			}
			seen[name] = true
			if err := fn(providers.ListedFromTags(name, tags)); err != nil {
				return callbackErr{err}
			}
		}
	}
	return nil
}

// mayBeUnder reports whether the mapped Key Vault name kvn may be KVName of
// a name starting with prefix: whether kvn's mapped part starts with the
// mapping of prefix (trailing dashes dropped, cut to the length KVName
// keeps), which every such name's does.
func mayBeUnder(kvn, prefix string) bool {
	p := strings.TrimLeft(mapChars(prefix), "-")
	if keep := MaxKVNameLength - 2 - nameHashLen; len(p) > keep {
		p = p[:keep]
	}
	return strings.HasPrefix(kvn, strings.TrimRight(p, "-"))
}
