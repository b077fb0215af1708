// Package keyvault is keyrelay's Azure Key Vault provider, registered as
// "azure_key_vault" (LiteLLM's key_management_system name). It writes
// LiteLLM virtual keys as Key Vault secrets through the official azsecrets
// client.
//
// # Configuration
//
// Options (see Config and ConfigFromOptions): vault_url (else LiteLLM's
// $AZURE_KEY_VAULT_URI), tenant_id, client_id, client_secret (else
// $AZURE_TENANT_ID, $AZURE_CLIENT_ID, $AZURE_CLIENT_SECRET), authority_host
// for sovereign clouds (with disable_instance_discovery for authorities
// Microsoft's discovery does not know), ca_bundle for private endpoints and proxies,
// disable_challenge_resource_verification for a vault behind a custom
// domain, content_type, purge_on_force, creates_per_10s, max_retries,
// timeout and recover_timeout. With a client secret the provider uses
// azidentity's client-secret credential; otherwise azidentity's default
// chain (environment, workload identity, managed identity, Azure CLI).
//
// A team may set only content_type (TeamOptions): the vault URL, authority
// host and CA bundle decide where the operator's bearer token goes, so a
// team can never choose them.
//
// # Names
//
// Key Vault names are 1..127 characters of [0-9a-zA-Z-], compared
// case-insensitively. KVName maps keyrelay names onto them without
// collisions: lower-case names that already fit (and hold no "--") are
// kept; all others are sanitized, cut, and suffixed with "--" and 64 bits
// of SHA-256 of the original name. Values are stored as the raw secret
// string, as LiteLLM reads them; they must be non-empty valid UTF-8 of at
// most 25 KiB.
//
// # Writes
//
// Put reads the current version first: a secret keyrelay does not own for
// req.Owner is refused with providers.ErrNotOwned unless Adopt; a current
// version whose keyrelay-event tag equals the IdempotencyKey makes the Put
// a Duplicate (nothing written). A name that is deleted but recoverable
// (Key Vault answers 409 Conflict to a write) is recovered after the same
// ownership check, the provider polls until it is readable, and then
// writes. A name whose delete or purge has not finished is no recovery
// yet: Key Vault deletes and purges asynchronously, and for a few seconds
// both the secret and the deleted secret read 404 while a write gets 409
// Conflict with inner error ObjectIsBeingDeleted. Put then writes again
// with backoff (50 ms doubling to 1 s) for up to recover_timeout (once
// the delete is done, the write's 409 ObjectIsDeletedButRecoverable leads
// to the recovery above), and after that returns a retryable ErrConflict
// with a RetryAfter of one second. Every write carries the tags managed-by, keyrelay-team,
// keyrelay-key, keyrelay-event, keyrelay-description and keyrelay-name
// (when the name fits 256 characters), and the configured content type;
// the Key Vault version id is the provider version. Writers of one name in
// one process are serialized; across processes Key Vault has no
// compare-and-swap, so two writers with different events both write.
//
// Delete soft-deletes; with Force it then purges (retrying while Key
// Vault still finishes the delete), unless purge_on_force=false. The purge
// itself finishes after Delete returns (see above).
//
// # Disabled versions
//
// Key Vault refuses to read a disabled version (403 Forbidden, inner error
// SecretDisabled); Get reports it as ErrSecretDisabled (with
// providers.ErrAccessDenied, permanent). Put, Delete, UpdateTags and
// Versions read a disabled current version's tags from the list of
// versions instead (the current version is the newest one) and check
// ownership there: a rotation writes its new, enabled version, a delete
// deletes, a tag update patches the disabled version's tags. A replay of
// the event that wrote the disabled version stays a Duplicate and does not
// re-enable it.
//
// Retire (providers.Retirer) disables an earlier version. Get of a disabled
// version that is not the current one reports it retired: ErrNotFound,
// with ErrSecretDisabled (an operator's disabling of an old version reads
// the same way).
//
// # Tokens
//
// The SDK's bearer policy answers a 401 by asking its credential again,
// but azidentity's credentials answer from their own cache, so a token the
// vault stopped accepting (revoked, or expired by the vault's clock) would
// be sent until it expires locally. On a 401 the provider therefore builds
// a new client with a new credential (an empty token cache) and retries
// the call once; only a 401 after that is classified. Calls failing at the
// same time share one refresh; refreshes are limited to 5 at once and one
// per 5 seconds after that, so a vault that rejects every fresh token does
// not turn each event into a token request.
//
// # Errors and throttling
//
// Errors are *providers.Error: 401 (after one token refresh), 403 and
// rejected client credentials are permanent ErrAccessDenied, 404
// ErrNotFound, 409 retryable ErrConflict, 429 Throttled ErrThrottled with
// Retry-After, 5xx and network errors retryable ErrUnavailable. A token
// endpoint that cannot be reached (no HTTP response) or answers 5xx, 408,
// 429 or a transient Entra ID error code (AADSTS90033 and the like) is
// retryable ErrUnavailable: a blip at Entra ID does not dead-letter
// events. Other refusals of the credential (401 invalid_client,
// AADSTS7000215 invalid client secret, an unknown application or tenant)
// are permanent ErrAccessDenied, naming the AADSTS code: they last until
// an operator fixes the configuration. DefaultAzureCredential with no
// source available (every credential in the chain "unavailable") is
// retryable ErrUnavailable: at boot the managed identity endpoint (IMDS,
// a pod identity agent) may refuse or not answer yet, and azidentity does
// not tell that from a source missing for good. The keys sealer
// classifies credential errors the same way (internal/credential).
// Messages hold the status and Key Vault's error code only, never the
// SDK's text (request URL, body), a token or a value.
// SDK retries are off by default (max_retries) so keyrelay's own retry
// policy sees the hint.
//
// A client-side limiter allows creates_per_10s (default 300, Key Vault's
// limit) secret writes in any 10 seconds per vault, shared in the
// process: it refills at providers.WindowRate of the limit (27.2 a second
// with a burst of 28 for 300), so that its burst never comes on top of a
// full window of refill. With cluster-wide quotas (providers.Config.Quotas,
// shared by every keyrelay process writing to the vault; WithQuotas) each
// write also takes a token of "azure_key_vault/VAULT/create" at the same
// rate. A write whose deadline comes before its token fails at once as
// Throttled, with the wait as RetryAfter. Reads and other transactions are
// not limited client-side (Key Vault allows 4,000 per 10 seconds).
//
// # Tests
//
// No Key Vault emulator exists offline: the provider is tested against
// kvfake, an HTTPS fake of the REST API with the bearer challenge and a
// minimal Entra ID token endpoint, through the official azsecrets client
// and, for client-secret credentials, azidentity. kvfake's opt-in EnforceQuotas
// throttles transactions over Key Vault's limits (429 with Retry-After);
// the tests check that the limiter keeps a burst under them. Its
// DeleteDelay, RecoverDelay and PurgeDelay make deletes, recoveries and
// purges asynchronous as Key Vault's are, and are on by default (a few
// hundred milliseconds; kvfake.Server.Instant opts out), so every test,
// the conformance suite included, runs against asynchronous deletes
// (TestConformanceAsyncDeletes runs it with shorter ones,
// TestSoftDeleteRecovery and TestPutAfterPurge check the waits).
package keyvault
