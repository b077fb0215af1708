package lookup

import (
	"context"
	"errors"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/kms"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	gcpkms "github.com/keyrelay/keyrelay/providers/google/kms"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// Ledger is the ledger read the team scope needs (worker.Ledger).
type Ledger interface {
	Get(ctx context.Context, team, key string) (*worker.LedgerEntry, uint64, error)
}

// TeamSettings returns a team's current settings (worker.Teams).
type TeamSettings interface {
	Cached(team string) worker.TeamState
}

// Decrypter decrypts one KMS ciphertext (providers/aws/kms and
// providers/google/kms Decrypters).
type Decrypter interface {
	Decrypt(ctx context.Context, value string) ([]byte, error)
}

// Backend is the Loader over keyrelay's real sources: the ledger and the
// team's provider for team names, LiteLLM's get_secret rules for global
// names.
type Backend struct {
	Config   *settings.Config
	Registry *providers.Registry
	Ledger   Ledger
	Teams    TeamSettings
	Logger   *zap.Logger
	// AWSKMS and GoogleKMS decrypt aws_kms/ values and google_kms
	// environment values. When nil they are built on first use from
	// keyrelay.providers.aws_kms (or keyrelay.sealing.kms) and
	// keyrelay.providers.google_kms (or keyrelay.sealing.gcp_kms).
	AWSKMS    Decrypter
	GoogleKMS Decrypter

	mu sync.Mutex

	// settingsMu guards settingsGen: per team, the settings generation the
	// confirmations stream said was applied (settingsApplied).
	settingsMu  sync.Mutex
	settingsGen map[string]uint64

	// now is this process's clock (nil: time.Now; tests set one that is
	// off).
	now func() time.Time
}

// serverClock is a Ledger that knows the NATS server's time from the
// stored times it has read (worker.Ledger.ServerTime).
type serverClock interface {
	ServerTime() (time.Time, bool)
}

// clock is this process's time (now).
func (b *Backend) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

// serverTime is the server's time as b.Ledger knows it (false: not known,
// or a Ledger that cannot tell).
func (b *Backend) serverTime() (time.Time, bool) {
	if sc, ok := b.Ledger.(serverClock); ok {
		return sc.ServerTime()
	}
	return time.Time{}, false
}

// settingsApplied records that team's settings generation gen was applied
// (its confirmation): Service.Apply calls it before it drops the team's
// entries, so that they are not loaded again under the settings this
// process had before (see teamState).
func (b *Backend) settingsApplied(team string, gen uint64) {
	b.settingsMu.Lock()
	defer b.settingsMu.Unlock()
	if b.settingsGen == nil {
		b.settingsGen = map[string]uint64{}
	}
	if gen > b.settingsGen[team] {
		b.settingsGen[team] = gen
	}
}

// settingsWaitTick is how often teamState looks at the team's settings
// again while this process's copy lags.
const settingsWaitTick = 5 * time.Millisecond

// teamState returns team's settings once this process's copy (Teams, which
// follows the teams bucket) holds the generation the confirmations stream
// (another subscription, in no set order with it) said was applied. It
// waits for the copy for up to backend_timeout; lagging is true when the
// copy is still behind then (the wait is not made again for that
// generation), and the answer must not be kept long.
func (b *Backend) teamState(ctx context.Context, team string) (st worker.TeamState, lagging bool) {
	st = b.Teams.Cached(team)
	b.settingsMu.Lock()
	want := b.settingsGen[team]
	b.settingsMu.Unlock()
	if st.Generation >= want {
		return st, false
	}
	wait := b.Config.Keyrelay.Lookup.BackendTimeout
	if wait <= 0 {
		wait = settings.DefaultLookupBackendTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(settingsWaitTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Given up once: a confirmation naming a generation the
			// bucket never gets (a stray message on the stream) must not
			// make every later load of the team wait.
			b.settingsMu.Lock()
			if b.settingsGen[team] == want {
				delete(b.settingsGen, team)
			}
			b.settingsMu.Unlock()
			if b.Logger != nil {
				b.Logger.Warn("lookup: this process's copy of a team's settings lags its confirmed change; answers are kept briefly",
					zap.String("team", team), zap.Uint64("confirmed_generation", want), zap.Uint64("loaded_generation", st.Generation))
			}
			return st, true
		case <-tick.C:
			if st = b.Teams.Cached(team); st.Generation >= want {
				return st, false
			}
		}
	}
}

// claimsSlots: Backend claims a read slot for each backend it reads from
// (the ledger, the provider, a KMS), so Service bounds each one's reads
// separately (Config.MaxLoadsPerBackend).
func (b *Backend) claimsSlots() {}

// Load implements Loader.
func (b *Backend) Load(ctx context.Context, s Scope, name string) (*Secret, error) {
	if s.Global {
		return b.loadGlobal(ctx, name)
	}
	return b.loadTeam(ctx, s.Team, name)
}

// loadTeam reads key id key of team. The ledger says where the key lives
// and at which generation; the provider is the truth about its value. The
// ledger can lag the confirmation by a moment (the worker commits it while
// publishing the confirmation), so a key the ledger does not know yet, or
// still shows as deleted, is looked for under its configured name, and
// served only when the secret's ownership tags say it is this team's key
// (or, for a backend without tags, when the name itself holds the team).
func (b *Backend) loadTeam(ctx context.Context, team, key string) (*Secret, error) {
	// Waiting for the team's settings holds no read slot: it comes first.
	var ts *events.TeamSettings
	lagging := false
	if b.Teams != nil {
		var st worker.TeamState
		st, lagging = b.teamState(ctx, team)
		ts = st.Settings
	}
	lctx, err := claim(ctx, ledgerBackend)
	if err != nil {
		return nil, err
	}
	le, _, err := b.Ledger.Get(lctx, team, key)
	if err != nil {
		return nil, unavailable(err, "ledger: %v", err)
	}
	var r settings.Resolved
	var ref string
	var gen uint64
	known := le != nil && le.SecretRef != "" && le.Provider != ""
	if known {
		// Where the secret was written: the backend and the team options
		// the ledger recorded with it (a team that changed its namespace
		// or mount since has its older keys in the old one until they
		// are written again).
		r, ref = le.Placement.Resolve(b.Config, ts, le.Provider), le.SecretRef
		if le.Status != events.StatusDeleted {
			gen = le.Generation
		}
	} else {
		r = b.Config.Resolve(ts)
		if ref, err = r.SecretName(team, key, ""); err != nil {
			return nil, notFound("team has no secret %q", key)
		}
	}
	if !r.CanRead() {
		return nil, forbidden("access_mode is %s: lookups are disabled", r.AccessMode)
	}
	ctx, p, err := b.open(ctx, r)
	if err != nil {
		return nil, err
	}
	if !known && !p.Capabilities().Tags && !strings.Contains(r.NameTemplate, settings.PlaceholderTeamID) {
		return nil, notFound("team has no secret %q", key)
	}
	sec, err := p.Get(ctx, ref, "")
	if err != nil {
		if errors.Is(err, providers.ErrNotFound) {
			return nil, notFound("team has no secret %q", key)
		}
		return nil, providerErr(err, key)
	}
	if p.Capabilities().Tags && !providers.IsOwnedBy(sec.Tags, providers.Owner{TeamID: team, KeyID: key}) {
		clear(sec.Value)
		// Answered as a key nobody has: saying that a secret is under its
		// name would tell the caller that another team has this key id.
		if b.Logger != nil {
			b.Logger.Debug("lookup: the secret under a key's name is not that key's", zap.String("team", team), zap.String("key", key))
		}
		return nil, notFound("team has no secret %q", key)
	}
	out := &Secret{Name: key, Value: sec.Value, Version: sec.Version, Source: r.Backend, Generation: gen, UpdatedAt: sec.UpdatedAt}
	if lagging {
		// Read under settings older than the team's confirmed ones: look
		// again soon.
		out.RecheckIn = time.Second
	}
	if known && le.ProviderVersion != sec.Version {
		// The ledger lags the write being committed: whether a grace
		// period applies is known only once it is.
		out.RecheckIn = time.Second
	}
	now := b.clock()
	srv, srvKnown := b.serverTime()
	if pv := inGrace(le, ref, sec.Version, now, srv, srvKnown); pv != nil {
		// A rotation's grace period: the previous value is served too.
		old, err := p.Get(ctx, ref, pv.Version)
		switch {
		case err == nil:
			out.Previous = &PreviousValue{Value: old.Value, Version: old.Version, Until: pv.Until, left: pv.Until.Sub(now), leftSet: true}
			if srvKnown {
				out.Previous.left = min(out.Previous.left, pv.Until.Sub(srv))
			}
			// The answer is cached until Until by this process's clock;
			// one that runs behind the server's would keep the previous
			// value past the grace's end by the server's time (inGrace):
			// look again when that comes.
			if left := pv.Until.Sub(srv); srvKnown && left < pv.Until.Sub(now) && (out.RecheckIn <= 0 || left < out.RecheckIn) {
				out.RecheckIn = max(left, time.Nanosecond)
			}
		case errors.Is(err, providers.ErrNotFound):
			// Already retired.
		default:
			clear(out.Value)
			return nil, providerErr(err, key)
		}
	}
	return out, nil
}

// loadGlobal is LiteLLM's get_secret for the gateway's own names.
func (b *Backend) loadGlobal(ctx context.Context, name string) (*Secret, error) {
	c := b.Config
	r := c.Resolve(nil)
	if !r.CanRead() {
		return nil, forbidden("access_mode is %s: lookups are disabled", r.AccessMode)
	}
	km := c.KeyManagement
	hosted := len(km.HostedKeys) == 0 || slices.Contains(km.HostedKeys, name)
	if !hosted {
		return b.fromEnv(ctx, name, "not in hosted_keys")
	}
	switch r.Backend {
	case kms.Provider: // LiteLLM's aws_kms: the value is in the environment, encrypted
		return b.fromEnv(ctx, name, "")
	case gcpkms.Provider: // LiteLLM's google_kms: the name's variable holds its ciphertext
		if !b.envAllowed(name) {
			return nil, notFound("%s is not in keyrelay.lookup.environment", name)
		}
		v, ok := b.lookupEnv(name)
		if !ok {
			return nil, notFound("%s is not set in the environment", name)
		}
		ctx, err := claim(ctx, backendRef{id: "kms:" + gcpkms.Provider, name: gcpkms.Provider})
		if err != nil {
			return nil, err
		}
		dec, err := b.googleKMS(ctx)
		if err != nil {
			return nil, err
		}
		pt, err := dec.Decrypt(ctx, v)
		if err != nil {
			return nil, providerErr(err, name)
		}
		return &Secret{Name: name, Value: pt, Source: gcpkms.Provider}, nil
	}
	ctx, p, err := b.open(ctx, r)
	if err != nil {
		return nil, err
	}
	var sec *providers.Secret
	if primary := km.PrimarySecretName; primary != "" {
		ps, err := p.Get(ctx, primary, "")
		if err != nil {
			return nil, providerErr(err, primary)
		}
		m, err := secretsmanager.ParsePrimarySecret(ps.Value)
		clear(ps.Value)
		if err != nil {
			return nil, unavailable(err, "primary_secret_name %s: %v", primary, err)
		}
		v, ok := m[name]
		if !ok {
			return nil, notFound("no %q in primary_secret_name %s", name, primary)
		}
		sec = &providers.Secret{Name: name, Value: []byte(v), Version: ps.Version, UpdatedAt: ps.UpdatedAt}
	} else {
		sec, err = p.Get(ctx, name, "")
		if err != nil {
			return nil, providerErr(err, name)
		}
	}
	out := &Secret{Name: name, Value: sec.Value, Version: sec.Version, Source: r.Backend, UpdatedAt: sec.UpdatedAt}
	if km.PrimarySecretName == "" && p.Capabilities().Tags && providers.IsOwnedBy(sec.Tags, providers.Owner{}) {
		// A virtual key's secret: its confirmations drop this entry.
		out.Owner = providers.Owner{TeamID: sec.Tags[providers.TeamTag], KeyID: sec.Tags[providers.KeyTag]}
	}
	if kms.IsKMSValue(string(sec.Value)) {
		if out.Value, err = b.decryptAWS(ctx, string(sec.Value), name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fromEnv reads name from the environment (as Config.Getenv sees it,
// after LiteLLM's KMS decryption of the environment), only for names the
// operator listed in keyrelay.lookup.environment.
func (b *Backend) fromEnv(ctx context.Context, name, why string) (*Secret, error) {
	if !b.envAllowed(name) {
		if why != "" {
			return nil, notFound("%s is %s and not in keyrelay.lookup.environment", name, why)
		}
		return nil, notFound("%s is not in keyrelay.lookup.environment", name)
	}
	v, ok := b.lookupEnv(name)
	if !ok {
		return nil, notFound("%s is not set in the environment", name)
	}
	out := &Secret{Name: name, Value: []byte(v), Source: "environment"}
	if kms.IsKMSValue(v) {
		pt, err := b.decryptAWS(ctx, v, name)
		if err != nil {
			return nil, err
		}
		out.Value, out.Source = pt, kms.Provider
	}
	return out, nil
}

// envAllowed reports whether name matches keyrelay.lookup.environment: the
// only environment variables a lookup may read, whatever the backend.
func (b *Backend) envAllowed(name string) bool {
	for _, pat := range b.Config.Keyrelay.Lookup.Environment {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

func (b *Backend) lookupEnv(name string) (string, bool) {
	if g := b.Config.Getenv; g != nil {
		v := g(name)
		return v, v != ""
	}
	return os.LookupEnv(name)
}

// open claims a read slot for r's backend (the provider and its options,
// as the registry keys its instances) and opens it. The reads go through
// the returned context.
func (b *Backend) open(ctx context.Context, r settings.Resolved) (context.Context, providers.Provider, error) {
	opts, _ := r.ProviderOptions(func(key string) bool { return b.Registry.TeamOptionAllowed(r.Backend, key) })
	ctx, err := claim(ctx, providerBackend(r.Backend, opts))
	if err != nil {
		return ctx, nil, err
	}
	p, err := b.Registry.Open(ctx, r.Backend, providers.Config{Options: opts, Getenv: b.Config.Env, Logger: b.Logger})
	if err != nil {
		return ctx, nil, unavailable(err, "backend %s: %v", r.Backend, err)
	}
	return ctx, p, nil
}

func (b *Backend) decryptAWS(ctx context.Context, v, name string) ([]byte, error) {
	ctx, err := claim(ctx, backendRef{id: "kms:" + kms.Provider, name: kms.Provider})
	if err != nil {
		return nil, err
	}
	dec, err := b.awsKMS(ctx)
	if err != nil {
		return nil, err
	}
	pt, err := dec.Decrypt(ctx, v)
	if err != nil {
		return nil, providerErr(err, name)
	}
	return pt, nil
}

func (b *Backend) awsKMS(ctx context.Context) (Decrypter, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.AWSKMS != nil {
		return b.AWSKMS, nil
	}
	opts := b.Config.Keyrelay.Providers[kms.Provider]
	if opts == nil {
		opts = b.Config.Keyrelay.Sealing.KMS
	}
	client, err := kms.NewClient(ctx, opts, b.Config.Env)
	if err != nil {
		return nil, unavailable(err, "aws_kms: %v", err)
	}
	b.AWSKMS = kms.NewDecrypter(client, "")
	return b.AWSKMS, nil
}

func (b *Backend) googleKMS(ctx context.Context) (Decrypter, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.GoogleKMS != nil {
		return b.GoogleKMS, nil
	}
	opts := b.Config.Keyrelay.Providers[gcpkms.Provider]
	if opts == nil {
		opts = b.Config.Keyrelay.Sealing.GCPKMS
	}
	d, err := gcpkms.NewDecrypterFromOptions(ctx, opts, b.Config.Env)
	if err != nil {
		return nil, unavailable(err, "google_kms: %v", err)
	}
	b.GoogleKMS = d
	return d, nil
}

// providerErr maps a provider error: not found and permission errors are
// answers (cached briefly), everything else a backend failure.
func providerErr(err error, name string) error {
	switch {
	case errors.Is(err, providers.ErrNotFound):
		return notFound("%s was not found in the secret manager", name)
	case errors.Is(err, providers.ErrAccessDenied):
		// keyrelay's own credentials lack access: a backend failure for
		// the caller (stale values may still be served), not its fault.
		return unavailable(err, "the secret manager denied keyrelay access to %s: %v", name, err)
	case errors.Is(err, context.DeadlineExceeded):
		return unavailable(err, "backend did not answer in time")
	}
	return unavailable(err, "%v", err)
}

// inGrace returns the ledger's previous version of the secret at ref while
// its grace period runs, when the version read (current) is the one the
// ledger says replaced it; nil otherwise (no grace, or the ledger lags a
// newer write: then which value came before is not known here).
//
// The grace runs while both now, this process's clock, and srv, the
// server's time (known false: not known, now alone decides), are before
// its Until, which the worker wrote from its own clock: it ends as soon
// as either says it has ended. The grace is a security bound (the old
// value of a rotated key, perhaps leaked, must stop being served at
// Until), so the earlier reading is the one that counts: a lookup process
// whose clock runs behind the server's does not serve the old value past
// the server's Until, and one whose clock runs ahead stops serving it
// early by its skew, which costs only the old value's availability to
// clients that have not picked up the new one yet (the new value is
// served all along). Ending it by the later reading, as claims do, would
// lengthen the exposure by the skew of whichever clock is behind.
func inGrace(le *worker.LedgerEntry, ref, current string, now, srv time.Time, known bool) *worker.PreviousVersion {
	if le == nil || le.Status == events.StatusDeleted || !le.Previous.InGrace(now) || (known && !le.Previous.InGrace(srv)) ||
		le.Previous.SecretRef != ref || le.ProviderVersion != current || le.Previous.Version == current {
		return nil
	}
	return le.Previous
}
