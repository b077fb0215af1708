package settings

import (
	"encoding/hex"
	"net"
	"path"
	"strconv"
	"time"
)

// LookupConfig is the read-through cache and lookup API (keyrelay.lookup):
// HTTP GET /v1/secrets/{name} on its own listener and the NATS service
// "keyrelay-lookup". See docs/lookup.md.
type LookupConfig struct {
	// Addr (host:port) of the lookup HTTP listener; "off" disables HTTP.
	// Default: 127.0.0.1:9470.
	Addr string `yaml:"addr"`
	// NATS serves the same lookups over NATS request-reply (subjects
	// keyrelay.lookup.v1.team.<team> and keyrelay.lookup.v1.global).
	// Default (unset): on with an external NATS (keyrelay.nats.url set),
	// off on the embedded server. The embedded server has one token for
	// every client and no subject permissions, so any client holding it can
	// subscribe to every lookup's request and reply (lookup tokens and
	// values alike): true turns NATS lookups on there anyway, and serve
	// warns. Keeping teams apart over NATS needs an external NATS with
	// subject permissions.
	NATS *bool `yaml:"nats"`
	// NATSAuth is the access control of NATS lookups:
	//   - "token" (the default): every request carries an Authorization
	//     header ("Bearer <token>") with the token of a keyrelay.lookup.clients
	//     entry whose scope is the subject's, checked as over HTTP. With no
	//     clients configured every request is refused.
	//   - "permissions": a request without a token is answered in the scope
	//     of its subject, so NATS subject permissions are the only access
	//     control (serve warns about it at start-up). A token, when sent, is
	//     still checked. Refused on the embedded server (keyrelay.nats.url
	//     empty), which has no subject permissions.
	// Default: "token".
	NATSAuth string `yaml:"nats_auth"`
	// NATSRequireToken is deprecated: tokens are required unless NATSAuth
	// is "permissions". true is accepted (it is the default behaviour, and
	// contradicts nats_auth: permissions); false no longer turns tokens off
	// (serve warns: set nats_auth: permissions for that). Default: unset.
	NATSRequireToken *bool `yaml:"nats_require_token"`
	// TTL is how long a value is served from memory without asking the
	// backend; each entry gets TTL ± TTLJitter (a fraction) so entries
	// loaded together do not expire together. Defaults: 5m and 0.1.
	TTL       time.Duration `yaml:"ttl"`
	TTLJitter float64       `yaml:"ttl_jitter"`
	// NegativeTTL is how long "not found" is remembered. Default: 5s.
	NegativeTTL time.Duration `yaml:"negative_ttl"`
	// StaleIfError is how long past its TTL a value may still be served,
	// marked stale, while the backend fails. 0 disables. Default: 5m.
	StaleIfError time.Duration `yaml:"stale_if_error"`
	// MaxEntries and MaxBytes bound the cache; both hold at once.
	// Defaults: 100000 and 67108864 (64 MiB).
	MaxEntries int `yaml:"max_entries"`
	MaxBytes   int `yaml:"max_bytes"`
	// BackendTimeout bounds one load's reads from one backend on a miss or
	// refresh, and its wait for a read slot. Default: 5s.
	BackendTimeout time.Duration `yaml:"backend_timeout"`
	// MaxConcurrentLoads bounds the backend reads in flight in all (misses
	// of distinct names, refreshes); further misses wait for a slot, up to
	// backend_timeout or their request's deadline, then answer 503.
	// Default: 64.
	MaxConcurrentLoads int `yaml:"max_concurrent_loads"`
	// MaxLoadsPerBackend bounds the reads in flight on one backend (a
	// provider with one set of options, the ledger, a KMS), so a backend
	// that hangs holds at most this many of the max_concurrent_loads slots
	// and lookups of every other backend go on. A miss waiting for its
	// backend's share holds no slot; it answers 503 when backend_timeout or
	// its deadline passes first. At most max_concurrent_loads; raise it up
	// to max_concurrent_loads when every team shares one backend. Default
	// (0): 16, or half of max_concurrent_loads when that is lower (so one
	// hung backend never takes the whole pool).
	MaxLoadsPerBackend int `yaml:"max_loads_per_backend"`
	// Environment lists the names (path.Match patterns) the global scope
	// may read from keyrelay's environment: LiteLLM reads names that are
	// not in hosted_keys from os.environ (and, under google_kms, every
	// name's ciphertext), but serving keyrelay's own environment over the
	// network needs an explicit list. Default: none.
	Environment []string `yaml:"environment"`
	// Clients maps a client name to its credentials. Each has a bearer
	// token (Token, usually os.environ/NAME, or TokenSHA256, the hex
	// SHA-256 of the token) and a scope: one team (Team) or the gateway's
	// global scope (Global). Default: none: every HTTP lookup is refused,
	// and so is every NATS lookup unless NATSAuth is "permissions".
	Clients map[string]LookupClient `yaml:"clients"`
}

// LookupClient is one lookup credential.
type LookupClient struct {
	// Team is the only team whose secrets the token reads.
	Team string `yaml:"team"`
	// Global: the token reads the global (gateway) scope instead.
	Global bool `yaml:"global"`
	// Token is the bearer token; TokenSHA256 its hex SHA-256. Set one.
	Token       string `yaml:"token"`
	TokenSHA256 string `yaml:"token_sha256"`
}

// Lookup defaults.
const (
	DefaultLookupAddr           = "127.0.0.1:9470" // lookup.addr
	DefaultLookupNATS           = true             // lookup.nats, with an external NATS
	DefaultLookupNATSEmbedded   = false            // lookup.nats, on the embedded server
	DefaultLookupTTL            = 5 * time.Minute  // lookup.ttl
	DefaultLookupTTLJitter      = 0.1              // lookup.ttl_jitter
	DefaultLookupNegativeTTL    = 5 * time.Second  // lookup.negative_ttl
	DefaultLookupStaleIfError   = 5 * time.Minute  // lookup.stale_if_error
	DefaultLookupMaxEntries     = 100_000          // lookup.max_entries
	DefaultLookupMaxBytes       = 64 << 20         // lookup.max_bytes
	DefaultLookupBackendTimeout = 5 * time.Second  // lookup.backend_timeout
	DefaultLookupMaxLoads       = 64               // lookup.max_concurrent_loads
	// DefaultLookupMaxLoadsPerBackend is lookup.max_loads_per_backend,
	// capped at half of lookup.max_concurrent_loads.
	DefaultLookupMaxLoadsPerBackend = 16
	LookupOff                       = HTTPOff // lookup.addr value that disables HTTP
	DefaultLookupNATSAuth           = LookupNATSAuthToken
)

// Values of lookup.nats_auth.
const (
	// LookupNATSAuthToken: NATS lookups need a client token, as HTTP ones do.
	LookupNATSAuthToken = "token"
	// LookupNATSAuthPermissions: NATS subject permissions are the only
	// access control of NATS lookups.
	LookupNATSAuthPermissions = "permissions"
)

// NATSPermissionsOnly reports whether NATS lookups without a token are
// answered (nats_auth: permissions).
func (l LookupConfig) NATSPermissionsOnly() bool { return l.NATSAuth == LookupNATSAuthPermissions }

// NATSRequireTokenWarning is what serve says at start-up about the
// deprecated nats_require_token, or "" when it is not set.
func (l LookupConfig) NATSRequireTokenWarning() string {
	switch {
	case l.NATSRequireToken == nil:
		return ""
	case *l.NATSRequireToken:
		return "keyrelay.lookup.nats_require_token is deprecated: NATS lookups need a token by default (nats_auth: token); drop the setting"
	case l.NATSPermissionsOnly():
		return "keyrelay.lookup.nats_require_token is deprecated and ignored: nats_auth: permissions decides; drop the setting"
	default:
		return "keyrelay.lookup.nats_require_token: false is deprecated and no longer turns tokens off: NATS lookups still need a token; " +
			"to make NATS subject permissions the only access control (on an external NATS), set keyrelay.lookup.nats_auth: permissions"
	}
}

// LoadsPerBackend is the effective max_loads_per_backend: the setting, or
// when it is 0 DefaultLookupMaxLoadsPerBackend capped at half of
// max_concurrent_loads (at least 1).
func (l LookupConfig) LoadsPerBackend() int {
	if l.MaxLoadsPerBackend > 0 {
		return l.MaxLoadsPerBackend
	}
	return min(DefaultLookupMaxLoadsPerBackend, max(l.MaxConcurrentLoads/2, 1))
}

// HTTPEnabled reports whether the lookup HTTP listener runs.
func (l LookupConfig) HTTPEnabled() bool { return l.Addr != "" && l.Addr != LookupOff }

// NATSEnabled reports whether the NATS lookup service runs; embedded is
// whether keyrelay runs on its embedded server (NATSConfig.IsEmbedded).
// Unset, it runs only on an external NATS.
func (l LookupConfig) NATSEnabled(embedded bool) bool {
	if l.NATS == nil {
		if embedded {
			return DefaultLookupNATSEmbedded
		}
		return DefaultLookupNATS
	}
	return *l.NATS
}

func defaultLookup() LookupConfig {
	return LookupConfig{
		Addr:               DefaultLookupAddr,
		NATSAuth:           DefaultLookupNATSAuth,
		TTL:                DefaultLookupTTL,
		TTLJitter:          DefaultLookupTTLJitter,
		NegativeTTL:        DefaultLookupNegativeTTL,
		StaleIfError:       DefaultLookupStaleIfError,
		MaxEntries:         DefaultLookupMaxEntries,
		MaxBytes:           DefaultLookupMaxBytes,
		BackendTimeout:     DefaultLookupBackendTimeout,
		MaxConcurrentLoads: DefaultLookupMaxLoads,
	}
}

func (v *validator) lookup(l *LookupConfig, embedded bool) {
	p := kr + "lookup."
	if l.HTTPEnabled() {
		_, port, err := net.SplitHostPort(l.Addr)
		if err != nil {
			v.add(p+"addr", "%q is not host:port (or %q to disable)", clip(l.Addr), LookupOff)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			v.add(p+"addr", "port %q is not 0 to 65535", clip(port))
		}
	}
	switch l.NATSAuth {
	case LookupNATSAuthToken:
	case LookupNATSAuthPermissions:
		if embedded {
			v.add(p+"nats_auth", "%s needs an external NATS (keyrelay.nats.url): the embedded server has no subject permissions, "+
				"so NATS lookups without a token would be answered to any client holding its token; use %s", LookupNATSAuthPermissions,
				LookupNATSAuthToken)
		}
	default:
		v.add(p+"nats_auth", "%q is not %q or %q", clip(l.NATSAuth), LookupNATSAuthToken, LookupNATSAuthPermissions)
	}
	if l.NATSRequireToken != nil && *l.NATSRequireToken && l.NATSPermissionsOnly() {
		v.add(p+"nats_require_token", "true contradicts nats_auth: %s (nats_require_token is deprecated; drop it)", LookupNATSAuthPermissions)
	}
	if l.TTL <= 0 {
		v.add(p+"ttl", "must be positive")
	}
	if l.TTLJitter < 0 || l.TTLJitter >= 1 {
		v.add(p+"ttl_jitter", "must be at least 0 and below 1")
	}
	if l.NegativeTTL < 0 {
		v.add(p+"negative_ttl", "must not be negative")
	}
	if l.StaleIfError < 0 {
		v.add(p+"stale_if_error", "must not be negative")
	}
	if l.MaxEntries < 1 {
		v.add(p+"max_entries", "must be at least 1")
	}
	if l.MaxBytes < 1024 {
		v.add(p+"max_bytes", "must be at least 1024")
	}
	if l.BackendTimeout <= 0 {
		v.add(p+"backend_timeout", "must be positive")
	}
	if l.MaxConcurrentLoads < 1 {
		v.add(p+"max_concurrent_loads", "must be at least 1")
	}
	switch {
	case l.MaxLoadsPerBackend < 0:
		v.add(p+"max_loads_per_backend", "must not be negative (0: the default, %d)", DefaultLookupMaxLoadsPerBackend)
	case l.MaxConcurrentLoads >= 1 && l.MaxLoadsPerBackend > l.MaxConcurrentLoads:
		v.add(p+"max_loads_per_backend", "%d is more than max_concurrent_loads (%d), which bounds every backend's reads together",
			l.MaxLoadsPerBackend, l.MaxConcurrentLoads)
	}
	for i, pat := range l.Environment {
		if _, err := path.Match(pat, ""); err != nil || pat == "" {
			v.add(p+"environment["+strconv.Itoa(i)+"]", "is not a valid name pattern")
		}
	}
	for name, cl := range l.Clients {
		cp := join(p+"clients", name)
		if err := checkName(name); err != "" {
			v.add(cp, "client name %s", err)
		}
		switch {
		case cl.Global && cl.Team != "":
			v.add(cp, "set team or global, not both")
		case !cl.Global && cl.Team == "":
			v.add(cp, "needs a team or global: true")
		case cl.Team != "":
			if err := checkID("team", cl.Team); err != nil {
				v.add(cp+".team", "%s", err)
			}
		}
		switch {
		case cl.Token != "" && cl.TokenSHA256 != "":
			v.add(cp, "set token or token_sha256, not both")
		case cl.Token == "" && cl.TokenSHA256 == "":
			v.add(cp, "needs token or token_sha256")
		case cl.Token != "" && len(cl.Token) < 16:
			v.add(cp+".token", "is shorter than 16 bytes")
		case cl.TokenSHA256 != "":
			if b, err := hex.DecodeString(cl.TokenSHA256); err != nil || len(b) != 32 {
				v.add(cp+".token_sha256", "is not 64 hex digits")
			}
		}
	}
}
