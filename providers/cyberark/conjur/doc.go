// Package conjur is keyrelay's CyberArk Conjur provider, registered as
// LiteLLM's key_management_system "cyberark".
//
// # Layout in Conjur
//
// Every secret is a Conjur variable declared in one policy branch (option
// "policy_branch", default DefaultPolicyBranch; a team may set its own). The
// variable's id inside the branch is the keyrelay name (prefix + name, as
// LiteLLM names its variables), so its full id is "<branch>/<name>" and a
// LiteLLM reading it uses that full id. keyrelay never writes the root
// policy (where LiteLLM itself declares the variables it writes) unless
// policy_branch is "root" and the operator also sets allow_root_policy,
// which a team cannot. The branch must exist
// and the configured role needs update privilege on it (to declare and
// delete variables) and update/execute on its variables; the provider does
// not create branches.
//
// # Writes
//
// Put loads a policy (PATCH, "update" mode) that declares the variable with
// annotations carrying keyrelay's ownership tags (managed-by,
// keyrelay-team, keyrelay-key), the extra tags, the description and the
// idempotency key (keyrelay-event) of the version being written
// (keyrelay-event-version), then adds the value. The provider version is
// Conjur's secret version number. The annotation keyrelay-event-history
// keeps which event wrote which version (a JSON array of [version, event
// id] pairs, the newest HistoryLength = 2 x MaxVersions of them), so that
// a redelivered event is recognised wherever its version is in the history
// Conjur retains: a Put whose IdempotencyKey wrote a retained version that
// still holds the event's value is a Duplicate of that version (its
// Version, which is not the current one when another writer, keyrelay or
// not, wrote since) and writes nothing, so it neither adds a version nor
// overwrites a newer value. Writes to one name are serialized inside a
// provider instance; Conjur has no compare-and-set, so two keyrelay
// processes writing the same name at once may interleave.
//
// When the history names a version of the event that Conjur no longer
// retains (MaxVersions newer versions pushed it out), the event's write
// cannot be checked and writing its value again could overwrite a newer
// one: Put writes nothing and fails with a permanent error matching
// ErrSuperseded and providers.ErrConflict. An event the history does not
// name at all (never written, or more than HistoryLength keyrelay writes
// ago) is written.
//
// When another writer's version lands between the declaration and the
// value, a second policy load records the event against the version
// actually written. If that load fails, Put returns a retryable error
// saying that the value was written; the retry (the same IdempotencyKey)
// finds that the version the history names does not hold the event's
// value, finds the later version that does (one no other event claims),
// records the event against it and returns a Duplicate. A declaration
// whose value was never added is no write: the history may name a version
// another writer's value took since, which does not hold the event's
// value, and the redelivery writes. A redelivered event never writes a
// second version. The values compared are read with the provider's role
// (one read on a redelivery, more only after a lost race) and compared in
// constant time.
//
// Delete loads "- !delete record: !variable <id>" into the branch. Conjur
// then drops the variable and all its versions: there is no soft delete.
// Where the policy forbids it (403) the error is a permanent
// ErrAccessDenied saying that the variable was left in place.
//
// # Policy loads
//
// Conjur runs one policy load of a branch at a time: a load that overlaps
// another load of the same branch, by any client, is answered 409
// {"error":{"code":"policy_conflict",...}} with a Retry-After of 1 to 8
// seconds. Every Put, UpdateTags and Delete loads policy into the one
// configured branch, so the provider serializes its policy loads per
// branch within the process (across provider instances on the same
// appliance, account and branch): its own writers of different names never
// conflict. A conflict with another client's load (another keyrelay
// process, an operator) is retried once after the Retry-After when the
// call's deadline leaves room; otherwise it is a retryable ErrConflict
// whose providers.RetryAfter is Conjur's Retry-After.
//
// # Listing
//
// List (providers.Lister) pages through Conjur's resources API
// (GET /resources/{account}?kind=variable&search=keyrelay&limit=&offset=)
// list_page_size variables at a time and reports the variables declared by
// the provider's policy branch that carry keyrelay's ownership annotations,
// under the names Put took. Pages overlap by one variable, so that
// variables deleted or declared during a listing do not make it skip
// another; an appliance that sets api_resource_list_limit_max rejects a
// larger list_page_size (ErrInvalid, permanent).
//
// # Ids
//
// Names are restricted to letters, digits and "/_.-@+=", must not start
// with '-', '/' or '.', and must not contain empty, "." or ".." segments;
// anything else (newlines, ':', '!', '#', quotes, spaces, YAML syntax) is
// rejected with ErrInvalid. Ids and annotations are additionally written as
// quoted YAML scalars, and ids are URL-encoded in request paths.
//
// # Values
//
// Conjur stores text; empty values are rejected with ErrInvalid, as Conjur
// does. Conjur keeps the last 20 versions of a variable. Its API cannot
// remove, disable or hide one version, so the provider does not implement
// providers.Retirer: an old version stays readable until 20 newer ones
// push it out (the conformance suite skips its Retire test).
//
// # Transport
//
// The provider uses the official SDK, github.com/cyberark/conjur-api-go
// (conjurapi.NewClientFromKey with a conjurapi.Config): the SDK builds
// every request (ResourceRequest, ResourcesRequest, LoadPolicyRequest in
// PolicyModePatch,
// AddSecretRequest, RetrieveSecretRequest / RetrieveSecretWithVersionRequest,
// AuthenticateRequest), parses and ages access tokens (authn.NewToken;
// refresh at 85% of their life) and reads every response
// (response.DataResponse and friends). The SDK's *response.ConjurError is
// classified by its HTTP status and Conjur's error code only, with the
// response's Retry-After (which the SDK's error does not keep) as the
// error's providers.RetryAfter; its message, which may echo the response
// body, is never copied into keyrelay's errors.
// sdk.go keeps only what the SDK lacks: the SDK's calls take no context and
// its Client refreshes tokens without a lock, so each SDK-built request is
// sent with the caller's context and an access token held under a mutex;
// a 401 re-authenticates once before it is reported as access denied; and
// TLS (CA bundle added to the system roots, ssl_verify, a client
// certificate with API-key authentication) is set on a clone of the SDK's
// transport, which the SDK's own SSLCert and client-certificate options do
// not express. sdk_compat_test.go (build tag conjursdk) drives the test
// fake with the SDK's high-level calls as well.
//
// # Configuration
//
// CYBERARK_API_BASE, CYBERARK_ACCOUNT, CYBERARK_USERNAME and
// CYBERARK_API_KEY as LiteLLM reads them; CYBERARK_SSL_VERIFY;
// CYBERARK_CLIENT_CERT and CYBERARK_CLIENT_KEY (client certificate files
// for mutual TLS); CYBERARK_CA_BUNDLE or option ca_bundle (PEM CAs). Options
// api_base, account, ssl_verify, timeout, list_page_size and
// allow_root_policy are the operator's; policy_branch is the only team
// option.
package conjur
