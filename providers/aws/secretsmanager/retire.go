package secretsmanager

import (
	"context"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Retirer = (*Provider)(nil)

// Retire implements providers.Retirer. Secrets Manager cannot delete one
// version: Retire moves the AWSPREVIOUS staging label off req.Version
// (UpdateSecretVersionStage with RemoveFromVersionId) when that version
// holds it. The version is then unlabelled, which AWS calls deprecated: it
// deletes such versions itself (beyond 100 versions, never younger than a
// day), and until then Get(name, req.Version) may still read it, while
// AWSPREVIOUS lookups (LiteLLM's, an operator's) no longer find it.
//
// The staging labels are read from DescribeSecret on every call, never
// from a cache. A version holding AWSCURRENT is refused with a permanent
// ErrConflict. A version without AWSPREVIOUS (retired already, deprecated
// by a later rotation, or unknown to AWS) needs nothing: Retire succeeds
// without a write. Ownership is checked as for Put (ErrNotOwned unless
// req.Adopt). A missing secret, or one scheduled for deletion, is
// ErrNotFound. When a rotation moves AWSPREVIOUS between the read and the
// write, AWS refuses the write (InvalidParameterException) and Retire reads
// the labels again, up to three rounds.
func (p *Provider) Retire(ctx context.Context, req providers.RetireRequest) error {
	const op = "retire"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return err
	}
	if req.Version == "" {
		return errInvalid(op, name, "empty version")
	}
	ctx, cancel := p.withTimeout(ctx)
	defer cancel()
	id := SecretID(name)
	for attempt := 1; ; attempt++ {
		d, err := p.describe(ctx, op, name, id)
		if err != nil {
			return err
		}
		if d == nil {
			return errNotFound(op, name, "")
		}
		if d.DeletedDate != nil {
			return errNotFound(op, name, "scheduled for deletion")
		}
		if !req.Adopt && !providers.IsOwnedBy(tagMap(d.Tags), req.Owner) {
			return errNotOwned(op, name)
		}
		stages := d.VersionIdsToStages[req.Version]
		switch {
		case slices.Contains(stages, StageCurrent):
			return newErr(op, name, providers.Permanent, fmt.Errorf("%w: version %s is AWSCURRENT", providers.ErrConflict, clip(req.Version, 64)))
		case !slices.Contains(stages, StagePrevious):
			return nil
		}
		_, err = call(p, ctx, op, name, bucketWrite, "UpdateSecretVersionStage", nil, func(ctx context.Context) (*sm.UpdateSecretVersionStageOutput, error) {
			return p.api.UpdateSecretVersionStage(ctx, &sm.UpdateSecretVersionStageInput{SecretId: aws.String(id),
				VersionStage: aws.String(StagePrevious), RemoveFromVersionId: aws.String(req.Version)})
		})
		if err == nil {
			return nil
		}
		if awsCode(err) != "InvalidParameterException" || attempt >= maxPutAttempts {
			return raced(op, name, err)
		}
		// The label moved meanwhile (a rotation): look again.
	}
}
