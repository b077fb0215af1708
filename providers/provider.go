package providers

import (
	"context"
	"time"
)

// Provider is one secret-manager backend.
type Provider interface {
	// Put writes value as the new current version of the secret, creating it
	// (or restoring a soft-deleted one) when needed.
	Put(ctx context.Context, req PutRequest) (PutResult, error)
	// Get reads a secret; version "" means the current version.
	Get(ctx context.Context, name, version string) (*Secret, error)
	// Delete removes the secret: soft-deleted where the backend supports it,
	// unless req.Force. Deleting a missing secret returns ErrNotFound.
	Delete(ctx context.Context, req DeleteRequest) error
	// Capabilities says what the backend supports.
	Capabilities() Capabilities
}

// Versioner is implemented by providers that can list a secret's versions.
type Versioner interface {
	Versions(ctx context.Context, name string) ([]VersionInfo, error)
}

// TagUpdater is implemented by providers that can change a secret's tags
// without writing a new version (alias renames, metadata updates).
type TagUpdater interface {
	UpdateTags(ctx context.Context, req TagRequest) error
}

// Lister is implemented by providers that can enumerate the secrets
// keyrelay owns; drift reports use it to find orphans (owned secrets with
// no ledger entry). Listing costs the backend's read quota: implementations
// page through the backend's list API and honour ctx.
type Lister interface {
	// List calls fn for every live (not soft-deleted) secret whose tags
	// mark it managed by keyrelay and, when req.TeamID is set, owned by that
	// team, and whose name starts with req.Prefix (provider-neutral). An
	// error from fn stops the listing and is returned.
	List(ctx context.Context, req ListRequest, fn func(Listed) error) error
}

// ListRequest narrows a listing.
type ListRequest struct {
	// Prefix is a provider-neutral name prefix ("" for all).
	Prefix string
	// TeamID keeps only the secrets owned by this team ("" for all).
	TeamID string
	// Every lists every secret under Prefix whoever owns it (TeamID and the
	// managed-by tag are ignored): what a caller needs to learn which names
	// are taken, such as a drift scan telling missing secrets without
	// reading each one. Owner is filled only where the listing shows tags
	// for free, and a backend whose listing cannot tell a soft-deleted
	// secret from a live one without reading it (Vault KV v2) may include
	// soft-deleted names: a name not listed does not exist, a name listed
	// may still read as not found.
	Every bool
}

// Listed is one secret found by List.
type Listed struct {
	// Name is the provider-neutral name keyrelay wrote it under (the
	// PutRequest.Name), as Get and Delete take it.
	Name string
	// Owner is read from the secret's ownership tags.
	Owner Owner
}

// Closer is implemented by providers holding resources (connections,
// file handles, token renewers).
type Closer interface {
	Close() error
}

// Owner identifies the virtual key a secret belongs to. Providers store it
// as tags next to ManagedByTag.
type Owner struct {
	TeamID string
	KeyID  string
}

// Tag names keyrelay writes on every secret.
const (
	ManagedByTag   = "managed-by"
	ManagedByValue = "keyrelay"
	TeamTag        = "keyrelay-team"
	KeyTag         = "keyrelay-key"
	EventTag       = "keyrelay-event"
)

// PutRequest is one write.
type PutRequest struct {
	// Name is the provider-neutral secret name (prefix applied); providers
	// map it to their own naming rules deterministically.
	Name string
	// Value is the plaintext secret. Providers must not log or echo it.
	Value []byte
	// IdempotencyKey (the event id) makes retries and redeliveries safe:
	// if the current version was written with the same key, Put returns it.
	IdempotencyKey string
	// Owner is recorded as tags and checked before overwrites.
	Owner Owner
	// Description is stored where the backend supports it.
	Description string
	// Tags are extra non-secret tags.
	Tags map[string]string
	// Adopt allows overwriting a secret keyrelay does not own.
	Adopt bool
	// ExpectedVersion is the provider version the caller last wrote to this
	// very secret (the worker's ledger), "" when it knows none. It is a
	// hint: providers that can check-and-set may trust it and skip their
	// read; a mismatch must fall back to the full checks (ownership,
	// idempotency, check-and-set), never fail the write. It must name a
	// version written under another IdempotencyKey (the worker never calls
	// Put for the event its ledger entry records): a provider may write on
	// top of a matching version without looking at who wrote it.
	ExpectedVersion string
	// Replaces is the id of the event whose value this write replaces in
	// this very secret (the caller's ledger: same backend, same name),
	// "" when none. A secret with no owner recorded whose first version
	// was written by that event is the caller's key's own earlier write,
	// stopped between its value and its owner (a restore killed
	// partway): a provider that records the owner in a second request may
	// take such a secret as the caller's and write on top of it, instead
	// of waiting for that write's redelivery, which may never come.
	Replaces string
}

// PutResult describes a completed write.
type PutResult struct {
	// Version is the provider's id for the version now current.
	Version string
	// Created is true when the secret did not exist before (or was
	// restored from soft delete).
	Created bool
	// Duplicate is true when the IdempotencyKey matched the current version
	// and nothing was written. A provider that keeps which event wrote each
	// retained version (Conjur) also reports a Duplicate when the key
	// matches an older version that newer writes followed: Version is then
	// the event's own version, not the current one, and nothing newer is
	// overwritten.
	Duplicate bool
	// Stamp, when not "", tells Version apart from any later version the
	// backend may give the same id: Google Secret Manager numbers the
	// versions of a deleted and re-created secret from 1 again. A
	// retirement of the version this write replaced carries it as
	// RetireRequest.ReplacedBy. Opaque; providers whose version ids are
	// never reused leave it "".
	Stamp string
}

// DeleteRequest is one delete.
type DeleteRequest struct {
	Name  string
	Owner Owner
	// Force skips the recovery window / soft delete where the backend has one.
	Force bool
	// Adopt allows deleting a secret keyrelay does not own.
	Adopt bool
}

// TagRequest replaces the non-ownership tags of a secret.
type TagRequest struct {
	Name        string
	Owner       Owner
	Description string
	Tags        map[string]string
	Adopt       bool
}

// Secret is a value read back.
type Secret struct {
	Name      string
	Version   string
	Value     []byte
	Tags      map[string]string
	UpdatedAt time.Time
}

// VersionInfo describes one version of a secret.
type VersionInfo struct {
	Version        string
	IdempotencyKey string
	CreatedAt      time.Time
	// Current is true for the version Get returns by default.
	Current bool
	// Destroyed is true once the version's value is gone.
	Destroyed bool
}

// Capabilities declares what a backend supports; the conformance suite skips
// what a backend does not declare.
type Capabilities struct {
	// Versions: old versions stay readable by Get(name, version).
	Versions bool
	// SoftDelete: Delete is recoverable and Put restores a deleted secret.
	SoftDelete bool
	// Tags: ownership tags are stored and returned by Get.
	Tags bool
}

// IsOwnedBy reports whether tags mark the secret as keyrelay's and, when o is
// not zero, as belonging to o.
func IsOwnedBy(tags map[string]string, o Owner) bool {
	if tags[ManagedByTag] != ManagedByValue {
		return false
	}
	if o.TeamID != "" && tags[TeamTag] != o.TeamID {
		return false
	}
	if o.KeyID != "" && tags[KeyTag] != o.KeyID {
		return false
	}
	return true
}

// KeptOwner returns the owner a write for o records on a secret whose
// tags are old: o, except that without adopt a field o leaves empty keeps
// old's value when keyrelay manages the secret (a request by "any
// keyrelay owner" does not erase the recorded team or key).
func KeptOwner(old map[string]string, o Owner, adopt bool) Owner {
	if !adopt && IsOwnedBy(old, Owner{}) {
		if o.TeamID == "" {
			o.TeamID = old[TeamTag]
		}
		if o.KeyID == "" {
			o.KeyID = old[KeyTag]
		}
	}
	return o
}

// OwnerTags returns the tags keyrelay writes for o merged over extra.
func OwnerTags(o Owner, extra map[string]string) map[string]string {
	t := make(map[string]string, len(extra)+3)
	for k, v := range extra {
		t[k] = v
	}
	SetOwnerTags(t, o)
	return t
}

// SetOwnerTags sets the tags keyrelay writes for o in t: ManagedByTag
// always, TeamTag and KeyTag when o names them.
func SetOwnerTags(t map[string]string, o Owner) {
	t[ManagedByTag] = ManagedByValue
	if o.TeamID != "" {
		t[TeamTag] = o.TeamID
	}
	if o.KeyID != "" {
		t[KeyTag] = o.KeyID
	}
}
