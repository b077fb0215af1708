package secretmanager

import (
	"context"
	"strconv"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Retirer = (*Provider)(nil)

// Retire implements providers.Retirer: it disables version req.Version,
// then destroys it (DisableSecretVersion, DestroySecretVersion), each
// under the version's etag. A version already disabled is destroyed; one
// already destroyed, or one Secret Manager does not have, is done already.
// On a secret with delayed destruction (version_destroy_ttl), Google keeps
// the version disabled until the delay passes and destroys it then.
//
// The current version is the latest one (the "latest" alias), read from
// Secret Manager on every call: retiring it is refused with a permanent
// ErrConflict. A version that is not the latest can never become it
// again, so a write racing with Retire cannot make it retire the current
// version. Ownership is checked as for Put (ErrNotOwned unless
// req.Adopt); a missing secret is ErrNotFound. A state change losing an
// etag race re-reads the version and tries again.
//
// Version numbers start again at 1 when a secret is deleted and created
// anew, so a number alone may name another secret's version: a
// retirement scheduled before the re-creation would destroy a value
// written after it. With req.ReplacedBy (the Stamp of the write that
// replaced the version: its create_time) Retire acts only on a version
// created before that write, which is the one the write replaced; a
// version created later belongs to a re-created secret, and Retire does
// nothing and reports the scheduled one gone (nil), even when it is the
// latest. A ReplacedBy that is not such a stamp is a permanent
// ErrInvalid.
func (p *Provider) Retire(ctx context.Context, req providers.RetireRequest) error {
	const op = "retire"
	ctx, cancel, err := p.begin(ctx, op, req.Name)
	defer cancel()
	if err != nil {
		return err
	}
	n, perr := strconv.ParseInt(req.Version, 10, 64)
	if perr != nil || n <= 0 {
		return newErr(op, req.Name, providers.Permanent, providers.ErrInvalid, "version must be a positive integer")
	}
	// newer reports whether v was created after the write that replaced
	// the version to retire (or cannot show it was not): not that version.
	newer := func(*secretmanagerpb.SecretVersion) bool { return false }
	if req.ReplacedBy != "" {
		replaced, terr := time.Parse(time.RFC3339Nano, req.ReplacedBy)
		if terr != nil {
			return newErr(op, req.Name, providers.Permanent, providers.ErrInvalid, "ReplacedBy is not a version stamp of this provider")
		}
		newer = func(v *secretmanagerpb.SecretVersion) bool {
			return v.GetCreateTime() == nil || v.GetCreateTime().AsTime().After(replaced)
		}
	}
	full := p.SecretName(req.Name)
	sec, err := p.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: full})
	if err != nil {
		return classify(ctx, op, req.Name, "GetSecret", err)
	}
	if !req.Adopt && !providers.IsOwnedBy(tagsOf(sec.GetAnnotations()), req.Owner) {
		return newErr(op, req.Name, providers.Permanent, providers.ErrNotOwned, "secret is not owned by this key")
	}
	latest, err := p.client.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: full + "/versions/latest"})
	switch {
	case codeOf(err) == codes.NotFound && ctx.Err() == nil:
		return nil // no version at all: nothing to retire
	case err != nil:
		return classify(ctx, op, req.Name, "GetSecretVersion", err)
	}
	ln, _ := versionNumber(latest.GetName())
	switch {
	case n == ln && newer(latest):
		p.notScheduled(req.Name, n)
		return nil
	case n == ln:
		return newErr(op, req.Name, providers.Permanent, providers.ErrConflict, "version %d is the latest (current) version", n)
	case n > ln:
		return nil // never written
	}
	name := full + "/versions/" + strconv.FormatInt(n, 10)
	v, err := p.client.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: name})
	for attempt := 0; ; attempt++ {
		if codeOf(err) == codes.NotFound && ctx.Err() == nil {
			return nil
		}
		if err != nil {
			return classify(ctx, op, req.Name, "GetSecretVersion", err)
		}
		if newer(v) {
			p.notScheduled(req.Name, n)
			return nil
		}
		rpc := ""
		switch v.GetState() {
		case secretmanagerpb.SecretVersion_DESTROYED:
			return nil
		case secretmanagerpb.SecretVersion_DISABLED:
			rpc = "DestroySecretVersion"
			if err = p.wait(ctx, op, req.Name, p.lim.project); err != nil {
				return err
			}
			_, err = p.client.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: name, Etag: v.GetEtag()})
			if err == nil {
				return nil
			}
		default:
			rpc = "DisableSecretVersion"
			if err = p.wait(ctx, op, req.Name, p.lim.project); err != nil {
				return err
			}
			var disabled *secretmanagerpb.SecretVersion
			disabled, err = p.client.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: name, Etag: v.GetEtag()})
			if err == nil && disabled.GetState() == secretmanagerpb.SecretVersion_DISABLED && disabled.GetEtag() != "" {
				v = disabled
				continue
			}
		}
		switch {
		case err == nil:
			// An answer without the version: read it.
		case codeOf(err) == codes.NotFound && ctx.Err() == nil:
			return nil
		case codeOf(err) != codes.FailedPrecondition || ctx.Err() != nil || attempt >= maxMetaRetries:
			return classify(ctx, op, req.Name, rpc, err)
		}
		// An etag race, or a state changed meanwhile (destroyed by
		// someone else): look at the version again.
		v, err = p.client.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: name})
	}
}

// notScheduled logs a retirement that found version n of name created
// after the write that replaced the version it was scheduled for.
func (p *Provider) notScheduled(name string, n int64) {
	p.log.Info("retire: the version is newer than the retirement (the secret was deleted and created again); the version it was scheduled for is gone",
		zap.String("provider", Name), zap.String("secret", name), zap.Int64("version", n))
}
