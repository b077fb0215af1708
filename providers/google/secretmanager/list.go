package secretmanager

import (
	"context"
	"errors"
	"strings"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/iterator"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Lister = (*Provider)(nil)

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
// Each page is one request against the project's read quota (keyrelay does
// not limit reads client-side); the caller's ctx bounds the listing, and
// each page call has the client library's default deadline.
func (p *Provider) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	const op = "list"
	if p.closed.Load() {
		return newErr(op, "", providers.Permanent, ErrClosed, "")
	}
	if err := ctx.Err(); err != nil {
		return ctxErr(op, "", err)
	}
	filter := "labels." + LabelKey(providers.ManagedByTag) + "=" + LabelValue(providers.ManagedByValue)
	if req.TeamID != "" {
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
