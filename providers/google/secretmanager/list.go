package secretmanager

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/iterator"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Lister = (*Provider)(nil)

// hashedID matches the secret ids SecretID makes for names it cannot keep.
var hashedID = regexp.MustCompile(`--[0-9a-f]{32}$`)

// List implements providers.Lister with ListSecrets on the project,
// Config.ListPageSize secrets a page (0: the server's default), following
// next_page_token. The filter keeps secrets labelled managed-by=keyrelay
// (and keyrelay-team=<team>, mapped by LabelValue, when req.TeamID is
// set); each secret is then checked against its exact tags (the
// keyrelay-tags annotation) and its keyrelay name (the keyrelay-name
// annotation, AnnotationName), since labels are lossy and secret ids
// cannot hold every name. Secrets keyrelay wrote before it recorded
// AnnotationName are listed under their secret id when the id is a name
// SecretID keeps as it is, and skipped otherwise, until their next Put
// records it. Secret Manager has no soft delete: a deleted secret is gone.
// With req.Every the label filter is left out, and a secret without the
// annotation whose id has SecretID's hashed form ends the listing with
// providers.ErrUnnamed (its keyrelay name cannot be told).
// Each page is one request against the project's read quota, and takes a
// token of the read limiter (Config.ReadsPerMinute) and of
// providers.Config.Quotas before it is sent; the caller's ctx bounds the
// listing (a page whose token it cannot wait for fails it as Throttled),
// and each page call has the client library's default deadline.
func (p *Provider) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	const op = "list"
	if p.closed.Load() {
		return newErr(op, "", providers.Permanent, ErrClosed, "")
	}
	if err := ctx.Err(); err != nil {
		return ctxErr(op, "", err)
	}
	filter := "labels." + LabelKey(providers.ManagedByTag) + "=" + LabelValue(providers.ManagedByValue)
	if req.Every {
		filter = "" // whoever owns them
	} else if req.TeamID != "" {
		filter += " AND labels." + LabelKey(providers.TeamTag) + "=" + LabelValue(req.TeamID)
	}
	it := p.client.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: p.parent, PageSize: int32(p.cfg.ListPageSize), Filter: filter})
	for {
		sec, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return classify(ctx, op, "", "ListSecrets", err)
		}
		ann := sec.GetAnnotations()
		name, ok := ann[AnnotationName]
		if !ok {
			id := sec.GetName()[strings.LastIndexByte(sec.GetName(), '/')+1:]
			if req.Every && hashedID.MatchString(id) && mayBeUnder(id, req.Prefix) {
				return newErr(op, "", providers.Permanent, providers.ErrUnnamed, "secret id %q is a mapped name without the %s annotation", id, AnnotationName)
			}
			if !secretIDOK(id) {
				continue
			}
			name = id
		}
		if SecretID(name) != sec.GetName()[strings.LastIndexByte(sec.GetName(), '/')+1:] {
			continue // an annotation naming another secret
		}
		tags := tagsOf(ann)
		if !providers.ListOwned(req, name, tags) {
			continue
		}
		if err := fn(providers.ListedFromTags(name, tags)); err != nil {
			return err
		}
	}
}

// mayBeUnder reports whether the hashed secret id may be SecretID of a name
// starting with prefix: whether it starts with prefix mapped as SecretID
// maps names (cut to the length SecretID keeps), as every such id does.
func mayBeUnder(id, prefix string) bool {
	b := []byte(prefix)
	for i, c := range b {
		if !idByte(c) {
			b[i] = '_'
		}
	}
	if keep := MaxSecretIDLength - 2 - nameHashLen; len(b) > keep {
		b = b[:keep]
	}
	return strings.HasPrefix(id, string(b))
}
