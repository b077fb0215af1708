package vault

import (
	"context"
	"fmt"
	"strconv"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Retirer = (*Provider)(nil)

// Retire implements providers.Retirer: it destroys version req.Version
// (PUT <mount>/destroy/<path> with {"versions": [n]}): Vault drops its data
// for good and keeps its metadata, so Versions lists it Destroyed and Get
// of it is ErrNotFound. A version already destroyed, or one Vault no
// longer has (beyond max_versions, or never written), needs nothing:
// Retire succeeds without a write.
//
// The current version is read from the secret's metadata on every call:
// retiring it is refused with a permanent ErrConflict. New versions only
// ever get higher numbers, so a write racing with Retire cannot make the
// version being retired current. Ownership is checked on custom_metadata
// as for Put (ErrNotOwned unless req.Adopt). A missing secret, or one
// whose current version is deleted or destroyed (a deleted secret), is
// ErrNotFound. The token needs "update" on <mount>/destroy/<prefix>/*.
func (p *Provider) Retire(ctx context.Context, req providers.RetireRequest) error {
	const op = "retire"
	name := req.Name
	ps, err := p.begin(ctx, op, name)
	if err != nil {
		return err
	}
	n, perr := strconv.ParseUint(req.Version, 10, 64)
	if perr != nil || n == 0 {
		return errInvalid(op, name, "version %q is not a positive integer", clip(req.Version))
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
	if n == m.current {
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: version %d is the current version", providers.ErrConflict, n))
	}
	if v, ok := m.versions[n]; !ok || v.destroyed {
		return nil
	}
	_, status, err := p.write(ctx, op, name, ps.destroy(), map[string]any{"versions": []uint64{n}})
	if err != nil {
		return err
	}
	if status == 404 {
		return errNotFound(op, name)
	}
	return nil
}
