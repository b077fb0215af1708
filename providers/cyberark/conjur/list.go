package conjur

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Lister = (*Provider)(nil)

// List implements providers.Lister with Conjur's resources API
// (GET /resources/{account}?kind=variable&search=keyrelay&limit=&offset=,
// built by the SDK's ResourcesRequest), Config.ListPageSize variables a
// request. Each page is one request against the appliance; ctx bounds the
// listing and, when it has no deadline, Config.Timeout bounds each page.
//
// A variable is listed when:
//   - its id is "<branch>/<name>" ("<name>" on the root policy) and it was
//     declared by the provider's policy branch, so that name is the one Put
//     took and Get and Delete accept. Variables of sub-branches that other
//     keyrelay instances use (policy_branch "keyrelay/team-a") belong to
//     those instances and are left to them;
//   - name passes ValidateName and starts with req.Prefix;
//   - its annotations mark it managed by keyrelay (and owned by req.TeamID
//     when set), unless req.Every;
//   - it has a value: a variable declared but never given one (a Put that
//     failed half-way) is what Get reports as not found.
//
// The search term is ManagedByValue only. Conjur's search is a full-text
// query (PostgreSQL's english configuration, with '.', '/' and '-' in the
// term turned into spaces) over ids and annotation values; every variable
// keyrelay owns carries the annotation value "keyrelay" as one whole word,
// so the term narrows the listing without losing any; a listing with
// req.Every has no search term (see List's body). Team ids and
// prefixes are filtered here instead: the server tokenizes annotation
// values and partial words differently from the term, so searching for
// them could drop matches.
//
// Conjur pages by offset. So that a variable written or deleted while the
// listing runs does not make it skip another one, consecutive pages overlap
// by one resource: when a page does not start with a resource already
// seen, resources before it were deleted and the listing steps back a page.
// Resources seen twice are reported once. Variables that the role cannot
// see are absent from Conjur's answer, not an error.
func (p *Provider) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	const op = "list"
	if err := ctx.Err(); err != nil {
		return classify(ctx, op, "", err)
	}
	idPrefix := p.cfg.Account + ":variable:"
	if p.cfg.PolicyBranch != "root" {
		idPrefix += p.cfg.PolicyBranch + "/"
	}
	policy := p.cfg.Account + ":policy:" + p.cfg.PolicyBranch
	limit := p.cfg.ListPageSize
	// Conjur's full-text search for "keyrelay" finds the variables whose
	// id or annotations hold the word: all that keyrelay declared (their
	// managed-by annotation), but not a variable another tool declared in
	// a branch not named keyrelay. Every must list those too, so it pages
	// through every variable the role can see.
	search := providers.ManagedByValue
	if req.Every {
		search = ""
	}
	seen := map[string]bool{}
	offset := 0
	for {
		page, err := p.listPage(ctx, search, limit, offset)
		if err != nil {
			return err
		}
		if offset > 0 && (len(page) == 0 || !seen[page[0].ID]) {
			// The page should start with the last resource of the one
			// before; it does not, so resources before it were deleted
			// (or one was added right there): step back.
			offset -= limit - 1
			if offset < 0 {
				offset = 0
			}
			continue
		}
		for i := range page {
			r := &page[i]
			if seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			name, ok := strings.CutPrefix(r.ID, idPrefix)
			if !ok || (r.Policy != "" && r.Policy != policy) || ValidateName(name) != nil || r.latest() == 0 {
				continue
			}
			tags := r.annotations()
			if !providers.ListOwned(req, name, tags) {
				continue
			}
			if err := fn(providers.ListedFromTags(name, tags)); err != nil {
				return err
			}
		}
		if len(page) < limit {
			return nil
		}
		offset += len(page) - 1
	}
}

// listPage reads one page, bounded by Config.Timeout when ctx has no
// deadline.
func (p *Provider) listPage(ctx context.Context, search string, limit, offset int) ([]resource, error) {
	const op = "list"
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	page, err := p.c.resources(ctx, search, limit, offset)
	if err == nil {
		return page, nil
	}
	var ae *apiError
	if ctx.Err() == nil && errors.As(err, &ae) && ae.Status == http.StatusUnprocessableEntity {
		// Conjur's answer to a limit above api_resource_list_limit_max.
		return nil, fromStatus(op, "", ae.Status, ae.Code, "the appliance rejected the page size (is list_page_size above its api_resource_list_limit_max?)")
	}
	return nil, classify(ctx, op, "", err)
}
