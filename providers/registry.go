package providers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"

	"go.uber.org/zap"
)

// Config is what a factory receives to build one provider instance.
type Config struct {
	// Options are the merged global and per-team provider options.
	Options map[string]string
	// Getenv reads environment variables (LiteLLM's HCP_VAULT_ADDR and so
	// on). Defaults to os.Getenv.
	Getenv func(string) string
	Logger *zap.Logger
	// Quotas, when set, shares the backend's request quotas with the
	// other keyrelay processes (see Quotas). Registry.Open fills it from
	// SetQuotas when nil; nil means per-process limits only.
	Quotas Quotas
}

// Factory builds a provider.
type Factory func(ctx context.Context, cfg Config) (Provider, error)

// Registry maps key_management_system names to factories and caches one
// instance per name and option set. It is safe for concurrent use.
type Registry struct {
	mu        sync.Mutex
	factories map[string]Factory
	teamOpts  map[string]map[string]bool
	instances map[string]Provider
	wrap      func(name string, p Provider) Provider
	quotas    Quotas
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{factories: map[string]Factory{}, teamOpts: map[string]map[string]bool{}, instances: map[string]Provider{}}
}

// Register adds a factory under name, replacing any previous one.
func (r *Registry) Register(name string, f Factory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.factories[name] = f
}

// AllowTeamOptions declares which options of provider name a team's
// settings may set. Every other team option is ignored, so a team can never
// point the operator's credentials at a server of its choosing (an "addr"
// or "endpoint" of its own) or at another part of the file system. By
// default a team may set none.
func (r *Registry) AllowTeamOptions(name string, keys ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.teamOpts[name]
	if m == nil {
		m = map[string]bool{}
		r.teamOpts[name] = m
	}
	for _, k := range keys {
		m[k] = true
	}
}

// TeamOptionAllowed reports whether a team may set option key of provider
// name.
func (r *Registry) TeamOptionAllowed(name, key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.teamOpts[name][key]
}

// Wrap installs a decorator applied to every instance the registry builds
// (metrics, fault injection in tests). Set it before the first Open.
func (r *Registry) Wrap(w func(name string, p Provider) Provider) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.wrap = w
}

// SetQuotas installs the cluster-wide quotas every instance the registry
// builds from now on uses (Config.Quotas, unless the caller set its own).
func (r *Registry) SetQuotas(q Quotas) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.quotas = q
}

// Names lists the registered names, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.factories))
	for n := range r.factories {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ErrUnknownProvider is returned by Open for a name nobody registered.
var ErrUnknownProvider = fmt.Errorf("unknown key_management_system")

// Open returns the provider for name and cfg.Options, building it on first
// use. Instances are shared by every caller with the same options.
func (r *Registry) Open(ctx context.Context, name string, cfg Config) (Provider, error) {
	id := name + "#" + OptionsDigest(cfg.Options)
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.instances[id]; ok {
		return p, nil
	}
	f, ok := r.factories[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (registered: %v)", ErrUnknownProvider, name, r.namesLocked())
	}
	if cfg.Quotas == nil {
		cfg.Quotas = r.quotas
	}
	p, err := f(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w", name, err)
	}
	if r.wrap != nil {
		p = r.wrap(name, p)
	}
	r.instances[id] = p
	return p, nil
}

func (r *Registry) namesLocked() []string {
	out := make([]string, 0, len(r.factories))
	for n := range r.factories {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Close closes every instance that holds resources.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var first error
	for id, p := range r.instances {
		if c, ok := p.(Closer); ok {
			if err := c.Close(); err != nil && first == nil {
				first = err
			}
		}
		delete(r.instances, id)
	}
	return first
}

// OptionsDigest identifies a set of provider options (the registry keys
// its instances by name and digest): a truncated SHA-256 over the sorted,
// length-prefixed pairs, so options that may hold credentials are never
// kept themselves.
func OptionsDigest(opts map[string]string) string {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(opts[k]), opts[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}
