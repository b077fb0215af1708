package providertest

import (
	"context"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// Defaults applied by Run to zero Options fields.
const (
	// DefaultPrefix is the name prefix when Options.Prefix is empty.
	DefaultPrefix = "keyrelay-conformance/"
	// DefaultTimeout bounds each subtest's context.
	DefaultTimeout = 60 * time.Second
	// DefaultMaxNameLength is the name length the long-names test uses when
	// Features.MaxNameLength is zero.
	DefaultMaxNameLength = 256
	// DefaultConcurrency is the number of concurrent writers when
	// Features.Concurrency is zero.
	DefaultConcurrency = 16
	// DefaultListPageSize is Features.ListPageSize when zero.
	DefaultListPageSize = 2
)

// Options configures Run.
type Options struct {
	// Prefix is prepended to every name the suite writes. Run adds a random
	// per-run component after it. Default: DefaultPrefix.
	Prefix string
	// Features declares what the backend supports beyond
	// providers.Capabilities.
	Features Features
	// Timeout bounds the context of each top-level subtest. Default:
	// DefaultTimeout (60s).
	Timeout time.Duration
	// Parallel runs the top-level subtests in parallel; newProvider must
	// then be safe for concurrent use, and Run returns before the subtests
	// run, so the caller must release shared resources with t.Cleanup, not
	// defer. Default: sequential.
	Parallel bool
	// CreateUnmanaged, when set, writes a secret directly to the backend
	// without keyrelay's ownership tags (as another tool would). It enables
	// the tests that keyrelay refuses to overwrite or delete such a secret
	// unless the request sets Adopt.
	CreateUnmanaged func(ctx context.Context, p providers.Provider, name string, value []byte) error
	// Retired, when set, reports whether version of name is retired as the
	// backend shows it, read directly from the backend (for AWS Secrets
	// Manager: the version no longer carries AWSPREVIOUS). The Retire test
	// checks it besides reading the version, and instead of reading it
	// with Features.RetireKeepsValue, which requires it.
	Retired func(ctx context.Context, p providers.Provider, name, version string) (bool, error)
}

// Features declares backend properties that providers.Capabilities does not
// carry. The zero value is the strictest common subset: text values only,
// names up to DefaultMaxNameLength, unbounded version history, and
// concurrent writers that may see retryable ErrConflict errors.
type Features struct {
	// BinaryValues: arbitrary bytes (NUL, invalid UTF-8) round trip. Backends
	// that store text only (Azure Key Vault, Conjur) leave it false; the
	// suite then uses valid UTF-8 values only.
	BinaryValues bool
	// EmptyValues: a 0-byte value round trips as a 0-byte value. When false,
	// Put of an empty value must either round trip it anyway or fail with
	// ErrInvalid (permanent) and write nothing; it must never store
	// something else. keyrelay never writes empty virtual keys, so
	// rejecting them is conformant.
	EmptyValues bool
	// MaxNameLength is the longest name (prefix included, in bytes) the
	// backend accepts; the provider maps longer-than-native names itself.
	// Default: DefaultMaxNameLength (256).
	MaxNameLength int
	// MaxVersions is how many versions the backend keeps per secret (Vault
	// KV v2 max_versions, for example); 0 means unbounded. Version checks
	// only look at the newest MaxVersions versions.
	MaxVersions int
	// Concurrency is the number of concurrent writers in the concurrency
	// tests. Default: DefaultConcurrency (16).
	Concurrency int
	// SerializedWrites: the backend serializes concurrent writes to one
	// name itself, so concurrent Puts never fail, not even with a retryable
	// ErrConflict.
	SerializedWrites bool
	// ListPageSize is the page size the provider under test lists with (set
	// it small in the provider's configuration); the List test writes more
	// than two pages of one team's secrets so that paging is exercised.
	// Default: DefaultListPageSize.
	ListPageSize int
	// RetireKeepsValue: a version retired with providers.Retirer may stay
	// readable by Get(name, version) (AWS Secrets Manager, where Retire
	// only takes the AWSPREVIOUS label off the version and AWS deletes the
	// unlabelled version itself later). The Retire test then tells a
	// retired version with Options.Retired instead of expecting
	// ErrNotFound from Get. When false, Get of a retired version must fail
	// with ErrNotFound.
	RetireKeepsValue bool
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Features.MaxNameLength <= 0 {
		o.Features.MaxNameLength = DefaultMaxNameLength
	}
	if o.Features.Concurrency <= 0 {
		o.Features.Concurrency = DefaultConcurrency
	}
	if o.Features.ListPageSize <= 0 {
		o.Features.ListPageSize = DefaultListPageSize
	}
	return o
}
