package local

import (
	"context"
	"fmt"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// Retire implements providers.Retirer: it drops the value of an earlier
// version (its ciphertext and nonce) and keeps the version's metadata, so
// version numbers never repeat and Versions lists it as Destroyed; Get of
// it is ErrNotFound from then on. Retiring a version already retired, or
// one the secret never had, succeeds without writing. The current version
// cannot be retired (permanent ErrConflict); ownership is checked as for
// Put (ErrNotOwned unless req.Adopt); a missing or soft-deleted secret is
// ErrNotFound. The check and the write happen under the secret's lock, on
// the record as stored.
func (p *Provider) Retire(ctx context.Context, req providers.RetireRequest) error {
	const op = "retire"
	name := req.Name
	if err := p.begin(ctx, op, name); err != nil {
		return err
	}
	if req.Version == "" {
		return errInvalid(op, name, "empty version")
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
	v := rec.find(req.Version)
	switch {
	case v == nil || v.retired():
		return nil
	case v == rec.current():
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: version %s is the current version", providers.ErrConflict, v.Version))
	}
	now := time.Now().UTC()
	v = rec.writableVersion(req.Version)
	v.Nonce, v.Ciphertext, v.RetiredAt = nil, nil, &now
	rec.UpdatedAt = now
	if err := p.store.save(rec); err != nil {
		return errIO(op, name, err)
	}
	return nil
}
