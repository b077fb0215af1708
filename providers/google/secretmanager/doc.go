// Package secretmanager is keyrelay's google_secret_manager provider: it
// writes LiteLLM virtual keys to Google Secret Manager through the
// official client (cloud.google.com/go/secretmanager/apiv1, gRPC).
//
// # Configuration
//
// Options (see ConfigFromOptions): "project" (else LiteLLM's
// GOOGLE_SECRET_MANAGER_PROJECT_ID), "endpoint" (private endpoints and
// emulators), "insecure" (plaintext gRPC without authentication, only with
// an explicit endpoint, for a local emulator), "ca_bundle",
// "credentials_file" (a service-account key; Application Default
// Credentials otherwise), "replication" ("automatic" or "user_managed")
// with "locations", "superseded_grace" and "destroy_grace" (version
// hygiene), "project_writes_per_minute", "project_reads_per_minute",
// "project_access_per_minute" and "secret_writes_per_second" (client-side
// limiters), "timeout". A team may set only TeamOptions (none of the
// limiters).
//
// # Mapping
//
// A keyrelay name becomes one secret, named by SecretID (unchanged when
// Secret Manager accepts it, otherwise sanitized with a SHA-256 suffix).
// Each Put adds a version; its number ("1", "2", ...) is the provider
// version, and the value is stored as the raw bytes, as LiteLLM reads it.
// The exact tags (ownership included) live in the secret's annotation
// AnnotationTags as JSON, and a lowercase projection in its labels
// (LabelKey, LabelValue) for filtering; the idempotency key that wrote
// version N lives in the annotation "keyrelay-event-N" (versions carry no
// metadata of their own), kept for the newest MaxEventAnnotations
// versions. A Put whose key matches the latest version's writes nothing
// (Duplicate). Metadata updates use the secret's etag and re-read on
// conflict; DeleteSecret sends the etag too. A Put that changes tags makes
// two UpdateSecret calls (tags before the version, the event id after it);
// the second is built from the secret the first one returned, with its new
// etag, so it neither conflicts with the first on Google nor, on a server
// that does not check etags, undoes its tags.
//
// # Version hygiene
//
// After each write, versions superseded more than SupersededGrace ago are
// disabled and, DestroyGrace later, destroyed, so that frequent rotations
// don't pile up billed versions. SupersededGrace 0 keeps every version.
// Retire (providers.Retirer) disables an earlier version, then destroys
// it, at once; Get of it is then ErrNotFound. A deleted and re-created
// secret numbers its versions from 1 again, so every Put reports the
// written version's create_time as PutResult.Stamp, and a retirement
// carrying the replacing write's stamp (RetireRequest.ReplacedBy) acts
// only on a version created before it: the new secret's version of the
// same number is left alone, and the retirement reports the scheduled
// version gone.
//
// # Errors and limits
//
// gRPC codes map to providers errors: UNAVAILABLE, DEADLINE_EXCEEDED,
// INTERNAL, UNKNOWN and ABORTED are retryable; RESOURCE_EXHAUSTED is
// Throttled with the google.rpc.RetryInfo delay as RetryAfter; NOT_FOUND is
// ErrNotFound; PERMISSION_DENIED is ErrAccessDenied; FAILED_PRECONDITION on
// an etag is a retryable ErrConflict; INVALID_ARGUMENT is ErrInvalid.
// Messages are sanitized (quoted text removed) and never hold values. The
// client's own retries are switched off so that keyrelay's retry policy
// sees throttling.
//
// Google refuses an access token expired by its clock or revoked
// (UNAUTHENTICATED, ErrorInfo reason ACCESS_TOKEN_EXPIRED) while the
// client's token cache still holds it as valid. Such a call is sent once
// more after the credentials are read again, with a new token; only
// UNAUTHENTICATED on the new token is ErrAccessDenied (permanent). Calls
// refused for the same token share one refresh, and refreshes are
// limited when every new token is refused. A token that cannot be fetched
// for a passing reason (token endpoint or metadata server down) is a
// retryable ErrUnavailable.
//
// Every payload read (Get, and the read of an unrecorded latest version
// by Put) is checked against the data_crc32c Google sends with it; a
// mismatch, data corrupted in transit, is a retryable ErrUnavailable, and
// never passes for a value (Put would write it again).
//
// # Quotas
//
// Secret Manager counts every RPC against one of three per-project
// quotas: write (the mutating calls, 600 a minute), access
// (AccessSecretVersion, 90,000 a minute) and read (every other call:
// GetSecret, GetSecretVersion, each page of ListSecrets and
// ListSecretVersions; 600 a minute). A rotation is two or three reads and
// two writes (GetSecret, GetSecretVersion "latest", AddSecretVersion,
// UpdateSecret for the event id, and the hygiene's ListSecretVersions),
// so the read quota runs out no later than the write quota. Each quota
// has a client-side limiter per project, shared by the providers of the
// process: project_writes_per_minute, project_reads_per_minute and
// project_access_per_minute (defaults: the published 600, 600 and 90,000), taken
// before each call of its kind; writes also pass a per-secret limiter
// (secret_writes_per_second, 2). The limiters refill at
// providers.WindowRate of their limit (590/60 a second with a burst of 10
// for 600 a minute), so that none lets more than the limit through in any
// minute, wherever Google's minutes start. With cluster-wide quotas
// (providers.Config.Quotas, shared by every keyrelay process on the
// project) each call also takes a token of
// "google_secret_manager/PROJECT/write", ".../read" or ".../access" at the
// same rate. A token the call's deadline cannot wait for fails the call at
// once as Throttled (ErrThrottled) with the wait as RetryAfter, before
// anything is sent. Version hygiene gives way: it lists and changes
// versions only with tokens free at once, so a bulk rotation defers it to
// a later Put.
//
// Tests run against smfake, an in-process gRPC fake of the v1 API: no
// Secret Manager emulator is available offline. Its opt-in EnforceQuotas
// throttles calls over the three quotas as Google does; the tests check
// that a bulk rotation with the limiters set to the fake's quotas is never
// throttled. Over TLS (StartTLS) it checks every call's access token as
// Google does, with expiry by its own clock and revocation on demand
// (ExpireTokens); the tests check that an expired token costs one refresh
// and that a token refused again is access denied. It sends data_crc32c
// with every payload, and CorruptAccess corrupts payloads in transit.
package secretmanager
