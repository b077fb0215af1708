package secretsmanager

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Lister = (*Provider)(nil)

// mappedName matches the suffix SecretID gives names AWS cannot hold as
// they are.
var mappedName = regexp.MustCompile(`@[0-9a-f]{32}$`)

// List implements providers.Lister with ListSecrets, Config.ListPageSize
// secrets a page (AWS allows at most 100), following NextToken until the
// last page. Each page is one request against the ListSecrets bucket of the
// client-side limiter (Config.ControlTPS). The filters narrow the listing on
// the server: tag-key managed-by, tag-value keyrelay (and the team, when
// req.TeamID is set) and name req.Prefix; AWS matches them by prefix and
// independently of each other, so every secret is checked again against
// its tags here. Secrets scheduled for deletion are not listed
// (IncludePlannedDeletion false).
//
// Names AWS holds as they are (see SecretID) are listed as they are. A name
// keyrelay had to map (characters outside AWS's set, or longer than 512
// bytes) cannot be recovered from its AWS name: such secrets, recognisable
// by SecretID's "@<32 hex digits>" suffix, are skipped, and so is any
// secret actually named so. With req.Every the tag filters are left out
// and such a secret ends the listing with providers.ErrUnnamed.
func (p *Provider) List(ctx context.Context, req providers.ListRequest, fn func(providers.Listed) error) error {
	const op = "list"
	if p.closed.Load() {
		return newErr(op, "", providers.Permanent, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return newErr(op, "", providers.Retryable, err)
	}
	if req.Prefix != "" && !awsNameOK(req.Prefix) {
		return nil // no name AWS holds as it is starts with it
	}
	values := []string{providers.ManagedByValue}
	if req.TeamID != "" {
		if !filterValueOK(req.TeamID) {
			values = values[:1]
		} else {
			values = []string{req.TeamID}
		}
	}
	filters := []types.Filter{
		{Key: types.FilterNameStringTypeTagKey, Values: []string{providers.ManagedByTag}},
		{Key: types.FilterNameStringTypeTagValue, Values: values},
	}
	if req.Every {
		filters = nil // whoever owns them
	}
	if req.Prefix != "" {
		filters = append(filters, types.Filter{Key: types.FilterNameStringTypeName, Values: []string{req.Prefix}})
	}
	in := &sm.ListSecretsInput{Filters: filters, MaxResults: aws.Int32(int32(p.cfg.ListPageSize)), IncludePlannedDeletion: aws.Bool(false)}
	for {
		out, err := p.listPage(ctx, op, in)
		if err != nil {
			return err
		}
		for _, s := range out.SecretList {
			name := aws.ToString(s.Name)
			if req.Every && s.DeletedDate == nil && mappedName.MatchString(name) {
				return newErr(op, "", providers.Permanent, fmt.Errorf("%w: %q is a mapped AWS name", providers.ErrUnnamed, name))
			}
			if s.DeletedDate != nil || mappedName.MatchString(name) {
				continue
			}
			tags := tagMap(s.Tags)
			if !providers.ListOwned(req, name, tags) {
				continue
			}
			if err := fn(providers.ListedFromTags(name, tags)); err != nil {
				return err
			}
		}
		if aws.ToString(out.NextToken) == "" {
			return nil
		}
		in.NextToken = out.NextToken
	}
}

// listPage makes one ListSecrets call under Config.Timeout.
func (p *Provider) listPage(ctx context.Context, op string, in *sm.ListSecretsInput) (*sm.ListSecretsOutput, error) {
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	return call(p, ctx, op, "", bucketList, "ListSecrets", nil, func(ctx context.Context) (*sm.ListSecretsOutput, error) {
		return p.api.ListSecrets(ctx, in)
	})
}

// filterValueOK reports whether v fits ListSecrets' filter value pattern
// (and does not start with '!', which would negate it).
func filterValueOK(v string) bool {
	if v == "" || len(v) > 512 || strings.HasPrefix(v, "!") {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(" :_@/+=.-", c) >= 0) {
			return false
		}
	}
	return true
}
