package settings

import (
	"os"
	"time"

	"github.com/keyrelay/keyrelay/events"
)

// Config is everything keyrelay reads from a LiteLLM config.yaml: LiteLLM's
// own general_settings (unchanged, so a LiteLLM user changes nothing) plus
// keyrelay's section. Build one with Load, Parse or Default; a Config built
// by hand gets no defaults and should be checked with Validate.
type Config struct {
	// KeyManagementSystem is general_settings.key_management_system, a
	// LiteLLM name such as "hashicorp_vault". Default: "local" (keyrelay's
	// embedded encrypted store).
	KeyManagementSystem string
	// KeyManagement is general_settings.key_management_settings.
	KeyManagement KeyManagementSettings
	// Keyrelay is the top-level "keyrelay:" section.
	Keyrelay KeyrelayConfig
	// Getenv reads environment variables. Providers use it for LiteLLM's
	// variables (HCP_VAULT_ADDR, AZURE_KEY_VAULT_URI, ...; see LiteLLMEnv)
	// exactly as LiteLLM does, so nothing has to move into the file. It is
	// the getenv given to Load or Parse (os.Getenv when that was nil); a nil
	// Getenv reads the process environment. Use Env to call it.
	Getenv func(string) string
}

// Env returns the environment variable name as Config.Getenv sees it.
func (c *Config) Env(name string) string {
	if c == nil || c.Getenv == nil {
		return os.Getenv(name)
	}
	return c.Getenv(name)
}

// KeyManagementSettings mirrors LiteLLM's key_management_settings. Every
// field LiteLLM defines is accepted; the ones keyrelay does not use are kept
// so that a LiteLLM file parses without warnings.
type KeyManagementSettings struct {
	// StoreVirtualKeys: write virtual keys to the secret manager.
	// LiteLLM's default is false; keyrelay exists to store them (a relay
	// that stores nothing has no purpose), so an absent value means true.
	// An explicit false is honoured: key events are confirmed as skipped.
	StoreVirtualKeys bool `yaml:"store_virtual_keys"`
	// PrefixForStoredVirtualKeys is the {prefix} of the naming template.
	// As in LiteLLM, a prefix not ending with "/" is followed by one where
	// a placeholder follows {prefix} ("myorg" names alias a "myorg/a"
	// under {prefix}{alias}); fixed text after {prefix} in the template
	// is kept as written ("{prefix}-{key_id}"). Default: "litellm/"
	// (LiteLLM's). An explicit "" means no prefix.
	PrefixForStoredVirtualKeys string `yaml:"prefix_for_stored_virtual_keys"`
	// AccessMode is read_only, write_only or read_and_write. keyrelay
	// enforces it on writes as well as reads: read_only rejects every write
	// (the confirmation says so), write_only disables lookups. Default when
	// unset: read_and_write. Note that LiteLLM's own default is read_only,
	// which in LiteLLM only gates reads; keyrelay cannot use that default
	// without refusing every write, and Parse warns when a file sets
	// read_only explicitly together with store_virtual_keys.
	AccessMode string `yaml:"access_mode"`
	// HostedKeys lists the names read from the secret manager (lookups).
	HostedKeys []string `yaml:"hosted_keys"`
	// PrimarySecretName is one JSON secret holding many keys (lookups).
	PrimarySecretName string `yaml:"primary_secret_name"`
	// Description is written with every stored secret.
	Description string `yaml:"description"`
	// Tags are written with every stored secret.
	Tags map[string]string `yaml:"tags"`

	// CustomSecretManager is LiteLLM's Python class path for
	// key_management_system "custom". keyrelay cannot load Python classes;
	// the field is accepted so the file parses, and is otherwise unused.
	CustomSecretManager string `yaml:"custom_secret_manager"`

	// AWS Secrets Manager settings, as LiteLLM names them. Resolve passes
	// the non-empty ones to the aws_secret_manager provider as Options under
	// the same names (aws_region_name, aws_role_name, ...; replica_regions
	// comma-separated), below keyrelay.providers and team options.
	AWSRegionName       string   `yaml:"aws_region_name"`
	AWSRoleName         string   `yaml:"aws_role_name"`
	AWSSessionName      string   `yaml:"aws_session_name"`
	AWSExternalID       string   `yaml:"aws_external_id"`
	AWSProfileName      string   `yaml:"aws_profile_name"`
	AWSWebIdentityToken string   `yaml:"aws_web_identity_token"`
	AWSSTSEndpoint      string   `yaml:"aws_sts_endpoint"`
	ReplicaRegions      []string `yaml:"replica_regions"`
}

// KeyrelayConfig is keyrelay's own section. Every field has a default,
// documented on the field and exported as a Default* constant.
type KeyrelayConfig struct {
	NATS    NATSConfig    `yaml:"nats"`
	Streams StreamsConfig `yaml:"streams"`
	Worker  WorkerConfig  `yaml:"worker"`
	Sealing SealingConfig `yaml:"sealing"`
	HTTP    HTTPConfig    `yaml:"http"`
	Naming  NamingConfig  `yaml:"naming"`
	Log     LogConfig     `yaml:"log"`
	// Lookup is the read-through cache and lookup API.
	Lookup LookupConfig `yaml:"lookup"`
	// Migration moves a team's keys when its backend changes.
	Migration MigrationConfig `yaml:"migration"`
	// Rotation says what happens to previous versions after rotations.
	Rotation RotationConfig `yaml:"rotation"`
	// Quotas shares providers' request quotas across keyrelay processes.
	Quotas QuotasConfig `yaml:"quotas"`
	// Providers holds global options per backend name, e.g.
	// providers: {local: {path: ./data/secrets}, hashicorp_vault: {mount: secret}}.
	// Team settings override them key by key. Default: none (each provider
	// has its own defaults and reads LiteLLM's environment variables).
	Providers map[string]map[string]string `yaml:"providers"`
}

// NATSConfig says where JetStream is. At most one authentication method
// (creds_file, nkey_file, user/password, token) may be set.
type NATSConfig struct {
	// URL of an external NATS server or cluster (comma-separated). Empty
	// means run the embedded server. Default: "" (embedded).
	URL string `yaml:"url"`
	// CredsFile is a NATS .creds file (JWT + nkey seed).
	CredsFile string `yaml:"creds_file"`
	// NKeyFile is an nkey seed file.
	NKeyFile string `yaml:"nkey_file"`
	// User and Password for user/password auth; Token for token auth.
	// On the embedded server (URL empty) Token is the token the server
	// requires from every client (at least 16 bytes); unset, serve
	// generates one on first start in <embedded.store_dir>/client.token
	// (mode 0600) and the other commands read it from there.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Token    string `yaml:"token"`
	// TLS: CA bundle, client certificate and key (cert and key together).
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Embedded configures the in-process server used when URL is empty.
	Embedded EmbeddedConfig `yaml:"embedded"`
}

// IsEmbedded reports whether keyrelay uses its embedded server (URL is
// empty).
func (n NATSConfig) IsEmbedded() bool { return n.URL == "" }

// MinEmbeddedTokenLen is the shortest nats.token accepted as the embedded
// server's token, in bytes.
const MinEmbeddedTokenLen = 16

// EmbeddedConfig configures the in-process nats-server.
type EmbeddedConfig struct {
	// Host to listen on: a loopback address (127.0.0.1, ::1, localhost),
	// since the embedded server has no TLS and its token and lookup
	// replies would cross the network in clear. Default: 127.0.0.1.
	Host string `yaml:"host"`
	// Port to listen on, 1..65535. Default: 14222 (never 4222, which a
	// system NATS may already hold).
	Port int `yaml:"port"`
	// StoreDir for JetStream files and the generated client token
	// (client.token). Default: ./data/nats.
	StoreDir string `yaml:"store_dir"`
}

// StreamsConfig shapes the JetStream streams keyrelay creates.
type StreamsConfig struct {
	// Replicas for every stream and bucket, 1..5: 1 on one server, 3 in a
	// cluster. Default: 1.
	Replicas int `yaml:"replicas"`
	// DuplicateWindow is the events stream's dedupe window. Default: 10m.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// EventsMaxAge bounds event retention in the events streams (the
	// replay horizon). Events older than this are removed whether or not
	// they were handled, so it must be longer than worker.retry_for
	// (Validate); 0 keeps events until the workers trim them (see
	// EventsMaxBytes). Default: 720h (30 days).
	EventsMaxAge time.Duration `yaml:"events_max_age"`
	// EventsMaxBytes is a hard cap on each events stream (KEYRELAY_EVENTS,
	// KEYRELAY_BULK); -1 means no size limit. A full stream refuses new
	// publishes (client.ErrStreamFull; the outbox relay keeps its rows and
	// retries) instead of dropping events not yet handled. The workers
	// trim handled events from the head above 90% of it, down to 80%.
	// Default: 1073741824 (1 GiB).
	EventsMaxBytes int64 `yaml:"events_max_bytes"`
	// ConfirmationsMaxAge bounds confirmation retention; 0 keeps them.
	// Default: 720h.
	ConfirmationsMaxAge time.Duration `yaml:"confirmations_max_age"`
	// ConfirmationsMaxBytes and ConfirmationsMaxMsgs bound the
	// confirmations stream; when full, the oldest confirmations are
	// discarded (counted in keyrelay_stream_discarded_messages). -1: no
	// limit. Defaults: 1073741824 (1 GiB) and 10000000.
	ConfirmationsMaxBytes int64 `yaml:"confirmations_max_bytes"`
	ConfirmationsMaxMsgs  int64 `yaml:"confirmations_max_msgs"`
	// DLQMaxAge bounds dead-letter retention; 0 keeps them (up to the size
	// limits below). Default: 0.
	DLQMaxAge time.Duration `yaml:"dlq_max_age"`
	// DLQMaxBytes and DLQMaxMsgs bound the DLQ; when full, the oldest dead
	// letters are discarded and counted. -1: no limit. Defaults: 268435456
	// (256 MiB) and 100000.
	DLQMaxBytes int64 `yaml:"dlq_max_bytes"`
	DLQMaxMsgs  int64 `yaml:"dlq_max_msgs"`
}

// WorkerConfig tunes consumption and retries.
type WorkerConfig struct {
	// Enabled runs workers in `keyrelay serve`. Default: true. Read it with
	// IsEnabled.
	Enabled *bool `yaml:"enabled"`
	// Concurrency is how many provider calls one process makes at once for
	// the gateway's events (the interactive lane); it handles a quarter
	// more events at once (events in their NATS steps). Default: 32.
	Concurrency int `yaml:"concurrency"`
	// AckWait is how long JetStream waits for an ack before redelivering;
	// heartbeats (InProgress) extend it during slow calls. Default: 60s.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxDeliver is a safety net against failure loops: an event whose
	// deliveries failed this many times (provider or KMS failures, handler
	// panics) is dead-lettered even inside RetryFor. Deliveries handed back
	// to wait (NATS trouble, a key claimed by another worker, busy backend
	// slots) never count. Default: 10000.
	MaxDeliver int `yaml:"max_deliver"`
	// RetryFor is how long an event's provider failures are retried,
	// counted from its first provider failure, before it is dead-lettered
	// as failed. Provider incidents last minutes to hours. Default: 6h.
	RetryFor time.Duration `yaml:"retry_for"`
	// InfraWait is how long one delivery waits in place for NATS (the
	// ledger, team settings, the confirmation or DLQ publish) to answer
	// before handing the event back; this never spends the retry budget.
	// Default: 30s.
	InfraWait time.Duration `yaml:"infra_wait"`
	// MaxAckPending bounds unacknowledged events across all workers:
	// those being handled and those waiting out a retry delay shorter than
	// park_after; at least Concurrency. Default: 65536.
	MaxAckPending int `yaml:"max_ack_pending"`
	// ParkAfter: a key event handed back for this long or longer (its
	// provider failing, its backend's breaker open for this long) is
	// parked: it waits as a message schedule in KEYRELAY_PARKED, out of
	// its lane consumer's max_ack_pending, which every team shares, so a
	// backend that is down for hours holds no slot other teams' events
	// need. Shorter waits stay in the consumer. At least 1s (schedules
	// name whole seconds); 0: never park. Default: 10s.
	ParkAfter time.Duration `yaml:"park_after"`
	// CallTimeout bounds one provider call. Default: 15s.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// RetryInitial, RetryMax and RetryMultiplier shape the exponential
	// backoff (with jitter) between attempts, in process and across
	// deliveries. Defaults: 100ms, 30s, 2. RetryMax must be at least
	// RetryInitial and RetryMultiplier at least 1.
	RetryInitial    time.Duration `yaml:"retry_initial"`
	RetryMax        time.Duration `yaml:"retry_max"`
	RetryMultiplier float64       `yaml:"retry_multiplier"`
	// InProcessAttempts is how many times one delivery tries the provider
	// before handing the event back with NakWithDelay. Default: 3.
	InProcessAttempts int `yaml:"in_process_attempts"`
	// ClaimLease is how long a worker holds a key while writing it; it must
	// be shorter than AckWait. A claim also ends with the worker's claims
	// request, whose TTL is the longer of claim_lease and lease_ttl: 0.65
	// to 0.9 of that after the claim was taken while the request's
	// renewals succeed, whichever comes first. At most MaxClaimLease.
	// Default: 30s.
	ClaimLease time.Duration `yaml:"claim_lease"`
	// ShutdownGrace is how long shutdown waits for in-flight events before
	// handing them back unacknowledged. Default: 20s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// AdoptUnowned lets writes overwrite secrets keyrelay did not create.
	// Default: false.
	AdoptUnowned bool `yaml:"adopt_unowned"`
	// BackendSlots bounds the events one process writes to one backend at
	// once (its share), so a slow or failing backend cannot take the slots
	// of the others; 0: half of Concurrency. Default: 0.
	BackendSlots int `yaml:"backend_slots"`
	// BackendBorrowBelow: a backend whose calls average under this, with
	// none in flight longer, borrows the lane's other call slots on top of
	// its share (a quarter more events than call slots are handled, so a
	// backend that hangs holding them all still leaves slots to the
	// others); 0: never borrow.
	// Default: 250ms.
	BackendBorrowBelow time.Duration `yaml:"backend_borrow_below"`
	// BulkConcurrency is how many bulk-lane events (bulk jobs such as
	// `keyrelay rotate`) one process handles at once, in worker and
	// backend slots of their own, so a job never delays the gateway's
	// events; 0: as many as Concurrency; -1: this process leaves the bulk
	// lane to others. Default: 0.
	BulkConcurrency int `yaml:"bulk_concurrency"`
	// Ownership is how writers of a key exclude each other. "claims": a
	// claim in the key's ledger entry per event; any number of processes
	// consume at once. "exclusive": one process at a time (the holder of
	// a writer lease) consumes the event lanes and writes without claims,
	// with one group-committed intent per event instead; the others stand
	// by and take over within lease_ttl when it stops or dies
	// (docs/architecture.md, "Writer leases"). Default: claims.
	Ownership string `yaml:"ownership"`
	// LeaseTTL is the writer lease's TTL in exclusive mode: how long a
	// dead holder's lease stands before a standby takes over. Each write
	// under the lease ends by the lease's deadline, about 0.65 to 0.9 of
	// it after the write began while renewals succeed, so keep it well
	// above the slowest provider calls (an exclusive worker warns at start
	// when 0.65 of it is under call_timeout; the defaults, 15s and 15s,
	// leave a call 9.75s). In claims mode the worker's claims
	// request (which keeps an exclusive holder claiming keys too while
	// claims-mode workers run) has the longer of lease_ttl and
	// claim_lease as its TTL. Default: 15s.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// QuotasConfig shares each backend's request quotas (AWS Secrets
// Manager's 50 writes/s per account and region, Google Secret Manager's
// 600 writes/min per project, Azure Key Vault's creates per 10 s per
// vault) between every `keyrelay serve` process using the same account,
// project or vault, through a JetStream KV bucket (package quota): N
// processes together stay under the rate each provider is configured
// with, instead of N times it.
type QuotasConfig struct {
	// Shared turns the cluster-wide sharing on; off, each process keeps
	// to the configured rates on its own. Default: true.
	Shared *bool `yaml:"shared"`
	// Margin is the fraction of each configured rate the processes share
	// (0.97: a 50/s quota is shared as 48.5/s), room for clock drift. The
	// providers' default rates already keep inside each service's own
	// window (providers.WindowRate), and the members' bursts add up to at
	// most the shared rate, so the margin need not be wide. In (0, 1].
	// Default: 0.97.
	Margin float64 `yaml:"margin"`
}

// IsShared reports whether quotas are shared (nil Shared: the default, true).
func (q QuotasConfig) IsShared() bool { return q.Shared == nil || *q.Shared }

// RotationConfig says what becomes of a key's previous version after a
// rotation.
//
// A key.rotated event with grace_period_seconds (LiteLLM's grace_period,
// `keyrelay rotate --grace`) keeps the previous version readable (lookup
// API and backend) for that long, then retires it the way its backend
// allows (providers.Retirer). A rotation without a grace period follows
// RetirePreviousAfter, which a team's settings may override.
type RotationConfig struct {
	// RetirePreviousAfter: "keep" leaves previous versions to the
	// backend's own retention (Vault max_versions, AWS's deprecation of
	// unlabelled versions, Google's superseded_grace, Azure's history); a
	// duration retires them that long after the rotation ("0s": at once).
	// Default: "keep": the previous version is the rollback when a rotated
	// value turns out wrong, and a gateway rotating without a grace period
	// already refuses the old key itself, so keeping its copy in the
	// secret manager grants nothing. Teams that must destroy old values
	// (after an incident) set a duration, or rotate with a grace period.
	RetirePreviousAfter string `yaml:"retire_previous_after"`
}

// MigrationConfig says how a team's keys move when its settings move it to
// another backend (`keyrelay migrate`, docs/recovery.md).
type MigrationConfig struct {
	// Grace is how long the copies left on the old backend stay after a
	// move, for rollback and for readers that still look there; then
	// `keyrelay serve` deletes them. Default: 24h.
	Grace time.Duration `yaml:"grace"`
	// OnSettingsChange starts the move by itself when a team-settings event
	// changes a team's backend, or its team options on it (a Vault
	// namespace or mount, a Google project): `keyrelay serve` copies every
	// key to the new place, verifies it there and points the ledger at it,
	// and deletes the old copies after the grace period. Default:
	// false, because a move writes every key of the team once more; an
	// operator usually picks the moment with `keyrelay migrate`.
	OnSettingsChange bool `yaml:"on_settings_change"`
	// SweepEvery is how often `keyrelay serve` looks for requested moves
	// and for copies whose grace period is over. Default: 1m.
	SweepEvery time.Duration `yaml:"sweep_every"`
	// Concurrency bounds the keys moved at once by one process. Default: 8.
	Concurrency int `yaml:"concurrency"`
}

// IsEnabled reports whether workers run (nil Enabled means the default, true).
func (w WorkerConfig) IsEnabled() bool { return w.Enabled == nil || *w.Enabled }

// SealingConfig says how event values are sealed and opened.
type SealingConfig struct {
	// KeyringFile is the local AES-256 keyring. Default: ./data/keyring.json
	// (created on first start with the embedded default).
	KeyringFile string `yaml:"keyring_file"`
	// AllowPlaintext accepts unsealed values. Development only. Default: false.
	AllowPlaintext bool `yaml:"allow_plaintext_values"`
	// KMS configures AWS KMS-wrapped data keys (alg A256GCM-KMS), used
	// alongside the keyring: values sealed either way open. Keys: key_id
	// (a key ARN or alias; publishers seal with it when set), allowed_key_arns,
	// data_key_ttl, data_key_max_uses, seal_cache_size, open_cache_ttl,
	// open_cache_size, call_timeout, and the AWS connection keys
	// (aws_region_name, endpoint, ca_bundle, aws_* credentials and roles);
	// see providers/aws/kms. Default: none (keyring only).
	KMS map[string]string `yaml:"kms"`
	// GCPKMS configures Google Cloud KMS-wrapped data keys (alg
	// A256GCM-GCPKMS), like KMS for AWS. Keys: key_name (a CryptoKey or
	// CryptoKeyVersion resource; publishers seal with it when set),
	// allowed_key_names, data_key_ttl, data_key_max_uses, seal_cache_size,
	// open_cache_ttl, open_cache_size, call_timeout, endpoint, insecure,
	// ca_bundle, credentials_file; see providers/google/kms. Default: none.
	GCPKMS map[string]string `yaml:"gcp_kms"`
	// VaultTransit configures data keys wrapped by a HashiCorp Vault
	// Transit key (alg A256GCM-VAULT). Keys: key_name (the Transit key;
	// publishers seal with it when set), mount (default transit),
	// allowed_key_names, address, token, namespace (defaults: LiteLLM's
	// HCP_VAULT_ADDR, HCP_VAULT_TOKEN, HCP_VAULT_NAMESPACE), ca_bundle, and
	// the sealer's keys (data_key_ttl, data_key_max_uses, seal_cache_size,
	// open_cache_ttl, open_cache_size, call_timeout, max_attempts,
	// retry_base); see providers/vault/transit and package seal.
	// Default: none.
	VaultTransit map[string]string `yaml:"vault_transit"`
	// AzureKeys configures data keys wrapped by an Azure Key Vault RSA key
	// (wrapKey/unwrapKey, RSA-OAEP-256; alg A256GCM-AZKV). Keys: key_name
	// (publishers seal with it when set), allowed_key_names, vault_url
	// (default AZURE_KEY_VAULT_URI), tenant_id, client_id, client_secret,
	// authority_host, disable_instance_discovery, ca_bundle, and the
	// sealer's keys; see
	// providers/azure/keyvault/keys. Default: none.
	//
	// At most one of kms.key_id, gcp_kms.key_name, vault_transit.key_name
	// and azure_keys.key_name may be set: that wrapper seals new values;
	// every configured one opens.
	AzureKeys map[string]string `yaml:"azure_keys"`
}

// HTTPConfig is the operations listener (/metrics, /healthz, /readyz).
type HTTPConfig struct {
	// Addr (host:port) to listen on; "" or "off" disables it.
	// Default: 127.0.0.1:9464.
	Addr string `yaml:"addr"`
}

// Enabled reports whether the operations listener runs.
func (h HTTPConfig) Enabled() bool { return h.Addr != "" && h.Addr != HTTPOff }

// NamingConfig builds secret names.
type NamingConfig struct {
	// Template for secret names. Placeholders: {prefix}, {team_id},
	// {key_id}, {alias}; it must contain {key_id} or {alias}. Default:
	// "{prefix}{team_id}/{key_id}", stable under renames. LiteLLM's naming
	// is "{prefix}{alias}" (LiteLLMNameTemplate); with it, alias-less keys
	// fall back to their key id instead of being skipped as in LiteLLM.
	Template string `yaml:"template"`
}

// LogConfig configures zap.
type LogConfig struct {
	// Level: debug, info, warn, error. Default: info.
	Level string `yaml:"level"`
	// Format: json or console. Default: json.
	Format string `yaml:"format"`
}

// MaxReplicas is the largest streams.replicas JetStream accepts.
const MaxReplicas = 5

// HTTPOff as keyrelay.http.addr disables the operations listener.
const HTTPOff = "off"

// LiteLLMNameTemplate names secrets the way LiteLLM does: by alias.
const LiteLLMNameTemplate = "{prefix}{alias}"

// Defaults. Each is the value of the field named in its comment when the
// file does not set it.
const (
	// general_settings
	DefaultKeyManagementSystem = "local"                   // key_management_system
	DefaultStoreVirtualKeys    = true                      // key_management_settings.store_virtual_keys
	DefaultPrefix              = "litellm/"                // key_management_settings.prefix_for_stored_virtual_keys
	DefaultAccessMode          = events.AccessReadAndWrite // key_management_settings.access_mode

	// keyrelay.nats
	DefaultNATSURL          = ""            // nats.url: embedded server
	DefaultEmbeddedHost     = "127.0.0.1"   // nats.embedded.host
	DefaultEmbeddedPort     = 14222         // nats.embedded.port
	DefaultEmbeddedStoreDir = "./data/nats" // nats.embedded.store_dir

	// keyrelay.streams
	DefaultReplicas              = 1                // streams.replicas
	DefaultDuplicateWindow       = 10 * time.Minute // streams.duplicate_window
	DefaultEventsMaxAge          = 720 * time.Hour  // streams.events_max_age
	DefaultEventsMaxBytes        = int64(1 << 30)   // streams.events_max_bytes
	DefaultConfirmationsMaxAge   = 720 * time.Hour  // streams.confirmations_max_age
	DefaultDLQMaxAge             = time.Duration(0) // streams.dlq_max_age: keep
	DefaultConfirmationsMaxBytes = int64(1 << 30)   // streams.confirmations_max_bytes
	DefaultConfirmationsMaxMsgs  = int64(10000000)  // streams.confirmations_max_msgs
	DefaultDLQMaxBytes           = int64(256 << 20) // streams.dlq_max_bytes
	DefaultDLQMaxMsgs            = int64(100000)    // streams.dlq_max_msgs

	// keyrelay.worker
	DefaultWorkerEnabled      = true                   // worker.enabled
	DefaultConcurrency        = 32                     // worker.concurrency
	DefaultAckWait            = 60 * time.Second       // worker.ack_wait
	DefaultMaxDeliver         = 10000                  // worker.max_deliver
	DefaultRetryFor           = 6 * time.Hour          // worker.retry_for
	DefaultInfraWait          = 30 * time.Second       // worker.infra_wait
	DefaultMaxAckPending      = 65536                  // worker.max_ack_pending
	DefaultCallTimeout        = 15 * time.Second       // worker.call_timeout
	DefaultRetryInitial       = 100 * time.Millisecond // worker.retry_initial
	DefaultRetryMax           = 30 * time.Second       // worker.retry_max
	DefaultParkAfter          = 10 * time.Second       // worker.park_after
	DefaultRetryMultiplier    = 2.0                    // worker.retry_multiplier
	DefaultInProcessAttempts  = 3                      // worker.in_process_attempts
	DefaultBackendBorrowBelow = 250 * time.Millisecond // worker.backend_borrow_below
	DefaultClaimLease         = 30 * time.Second       // worker.claim_lease
	DefaultOwnership          = "claims"               // worker.ownership
	DefaultLeaseTTL           = 15 * time.Second       // worker.lease_ttl
	DefaultShutdownGrace      = 20 * time.Second       // worker.shutdown_grace
	DefaultAdoptUnowned       = false                  // worker.adopt_unowned

	// keyrelay.migration
	DefaultMigrationGrace       = 24 * time.Hour // migration.grace
	DefaultMigrateOnSettings    = false          // migration.on_settings_change
	DefaultMigrationSweepEvery  = time.Minute    // migration.sweep_every
	DefaultMigrationConcurrency = 8              // migration.concurrency

	// keyrelay.sealing
	DefaultKeyringFile    = "./data/keyring.json" // sealing.keyring_file
	DefaultAllowPlaintext = false                 // sealing.allow_plaintext_values

	// keyrelay.http, keyrelay.naming, keyrelay.log
	DefaultHTTPAddr     = "127.0.0.1:9464"             // http.addr
	DefaultNameTemplate = "{prefix}{team_id}/{key_id}" // naming.template
	DefaultLogLevel     = "info"                       // log.level
	DefaultLogFormat    = "json"                       // log.format
)

// MaxClaimLease bounds worker.claim_lease, and with it every claim a
// process takes on a key (the recovery commands' included). Every reader
// of a claim counts it as ending at the latest MaxClaimLease after it was
// stored, whatever its recorded times say, so that a corrupt or forged
// ledger entry cannot hold its key for ever. A claim covers one provider
// call (worker.call_timeout) and its commit: an hour is far more than any
// needs.
const MaxClaimLease = time.Hour

// Default returns the built-in configuration used when no file is given
// (`make run`): the local provider, an embedded NATS server, every default
// above, and the process environment. It always passes Validate.
func Default() *Config {
	c := &Config{Getenv: os.Getenv}
	c.setDefaults()
	return c
}

// setDefaults sets every field to its default. Parse calls it before
// decoding the file over the result, so a key the file sets, even to a zero
// value, keeps what the file says (and is then validated), while an absent
// key keeps its default; that is how an absent store_virtual_keys differs
// from an explicit false.
func (c *Config) setDefaults() {
	c.KeyManagementSystem = DefaultKeyManagementSystem
	c.KeyManagement = KeyManagementSettings{
		StoreVirtualKeys:           DefaultStoreVirtualKeys,
		PrefixForStoredVirtualKeys: DefaultPrefix,
		AccessMode:                 DefaultAccessMode,
	}
	enabled, shared := DefaultWorkerEnabled, true
	c.Keyrelay = KeyrelayConfig{
		NATS: NATSConfig{
			URL: DefaultNATSURL,
			Embedded: EmbeddedConfig{
				Host:     DefaultEmbeddedHost,
				Port:     DefaultEmbeddedPort,
				StoreDir: DefaultEmbeddedStoreDir,
			},
		},
		Streams: StreamsConfig{
			Replicas:              DefaultReplicas,
			DuplicateWindow:       DefaultDuplicateWindow,
			EventsMaxAge:          DefaultEventsMaxAge,
			EventsMaxBytes:        DefaultEventsMaxBytes,
			ConfirmationsMaxAge:   DefaultConfirmationsMaxAge,
			DLQMaxAge:             DefaultDLQMaxAge,
			ConfirmationsMaxBytes: DefaultConfirmationsMaxBytes,
			ConfirmationsMaxMsgs:  DefaultConfirmationsMaxMsgs,
			DLQMaxBytes:           DefaultDLQMaxBytes,
			DLQMaxMsgs:            DefaultDLQMaxMsgs,
		},
		Worker: WorkerConfig{
			Enabled:            &enabled,
			Concurrency:        DefaultConcurrency,
			AckWait:            DefaultAckWait,
			MaxDeliver:         DefaultMaxDeliver,
			RetryFor:           DefaultRetryFor,
			InfraWait:          DefaultInfraWait,
			MaxAckPending:      DefaultMaxAckPending,
			CallTimeout:        DefaultCallTimeout,
			RetryInitial:       DefaultRetryInitial,
			RetryMax:           DefaultRetryMax,
			ParkAfter:          DefaultParkAfter,
			RetryMultiplier:    DefaultRetryMultiplier,
			InProcessAttempts:  DefaultInProcessAttempts,
			BackendBorrowBelow: DefaultBackendBorrowBelow,
			ClaimLease:         DefaultClaimLease,
			Ownership:          DefaultOwnership,
			LeaseTTL:           DefaultLeaseTTL,
			ShutdownGrace:      DefaultShutdownGrace,
			AdoptUnowned:       DefaultAdoptUnowned,
		},
		Sealing: SealingConfig{
			KeyringFile:    DefaultKeyringFile,
			AllowPlaintext: DefaultAllowPlaintext,
		},
		HTTP:     HTTPConfig{Addr: DefaultHTTPAddr},
		Naming:   NamingConfig{Template: DefaultNameTemplate},
		Log:      LogConfig{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Lookup:   defaultLookup(),
		Rotation: RotationConfig{RetirePreviousAfter: events.RetireKeep},
		Quotas:   QuotasConfig{Shared: &shared, Margin: 0.97},
		Migration: MigrationConfig{
			Grace:            DefaultMigrationGrace,
			OnSettingsChange: DefaultMigrateOnSettings,
			SweepEvery:       DefaultMigrationSweepEvery,
			Concurrency:      DefaultMigrationConcurrency,
		},
	}
}
