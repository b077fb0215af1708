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
// hygiene), "project_writes_per_minute" and "secret_writes_per_second"
// (client-side limiters), "timeout". A team may set only TeamOptions.
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
// it, at once; Get of it is then ErrNotFound.
//
// # Errors and limits
//
// gRPC codes map to providers errors: UNAVAILABLE, DEADLINE_EXCEEDED,
// INTERNAL, UNKNOWN and ABORTED are retryable; RESOURCE_EXHAUSTED is
// Throttled with the google.rpc.RetryInfo delay as RetryAfter; NOT_FOUND is
// ErrNotFound; PERMISSION_DENIED and UNAUTHENTICATED are ErrAccessDenied;
// FAILED_PRECONDITION on an etag is a retryable ErrConflict; INVALID_ARGUMENT
// is ErrInvalid. Messages are sanitized (quoted text removed) and never
// hold values. Writes pass a per-project limiter (600 a minute) and a
// per-secret one (2 a second); the client's own retries are switched off
// so that keyrelay's retry policy sees throttling.
//
// Tests run against smfake, an in-process gRPC fake of the v1 API: no
// Secret Manager emulator is available offline.
package secretmanager
