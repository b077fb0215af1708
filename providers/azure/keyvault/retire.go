package keyvault

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/keyrelay/keyrelay/providers"
)

var _ providers.Retirer = (*Provider)(nil)

// Retire implements providers.Retirer: it disables version req.Version
// (UpdateSecretProperties on that version with enabled=false; its value
// and tags stay). Key Vault then refuses to read it (403 Forbidden,
// SecretDisabled), and Get(name, req.Version) reports ErrNotFound (see
// Get). Disabling a disabled version again changes nothing; a version Key
// Vault does not know (404) is gone already: both succeed.
//
// The current version is read from Key Vault on every call (as Put reads
// it, a disabled current version from the list of versions): retiring it
// is refused with a permanent ErrConflict. Key Vault makes every new
// version current, so a write racing with Retire cannot turn the version
// being retired into the current one. Ownership is checked on the current
// version's tags, as for Put (ErrNotOwned unless req.Adopt); a missing or
// soft-deleted secret is ErrNotFound.
func (p *Provider) Retire(ctx context.Context, req providers.RetireRequest) error {
	const op = "retire"
	ctx, cancel, kvn, err := p.begin(ctx, op, req.Name)
	if err != nil {
		return err
	}
	defer cancel()
	if !versionOK(req.Version) {
		return errInvalid(op, req.Name, "malformed version id")
	}
	unlock, err := p.lock(ctx, op, req.Name, kvn)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := p.currentOf(ctx, kvn)
	if err != nil {
		return classify(op, req.Name, err, nil)
	}
	if !req.Adopt && !cur.ownedBy(req.Owner) {
		return errNotOwned(op, req.Name)
	}
	if strings.EqualFold(cur.version, req.Version) {
		return newErr(op, req.Name, providers.Permanent, fmt.Errorf("%w: version %s is the current version", providers.ErrConflict, req.Version))
	}
	enabled := false
	_, err = p.client.UpdateSecretProperties(ctx, kvn, req.Version, azsecrets.UpdateSecretPropertiesParameters{
		SecretAttributes: &azsecrets.SecretAttributes{Enabled: &enabled},
	})
	if err == nil || statusOf(err) == http.StatusNotFound {
		return nil
	}
	return classify(op, req.Name, err, nil)
}

// disabledVersionErr classifies Key Vault's refusal (403 SecretDisabled)
// to read version of kvn. A version other than the current one was retired
// (Retire disables it), or disabled by an operator, which keyrelay cannot
// tell apart: ErrNotFound, with ErrSecretDisabled. The current version,
// disabled by an operator, stays ErrSecretDisabled with ErrAccessDenied.
func (p *Provider) disabledVersionErr(ctx context.Context, op, name, kvn, version string, err error) error {
	if cur, cerr := p.currentOf(ctx, kvn); cerr == nil && !strings.EqualFold(cur.version, version) {
		return newErr(op, name, providers.Permanent, fmt.Errorf("%w: %w: version %s is disabled (retired)", providers.ErrNotFound, ErrSecretDisabled, version))
	}
	return classify(op, name, err, nil)
}
