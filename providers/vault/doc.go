// Package vault is keyrelay's HashiCorp Vault provider: it stores virtual
// keys in a KV version 2 secrets engine, where LiteLLM reads them. It
// registers as the key_management_system "hashicorp_vault" (Register) and
// is built with github.com/hashicorp/vault/api.
//
// # Where secrets go
//
// A secret named N (keyrelay's rendered name, prefix included) is stored at
//
//	<addr>/v1/[<namespace>/]<mount>/data/[<path_prefix>/]N
//
// with the data {"key": "<value>", "keyrelay-event": "<event id>"}: the
// value where LiteLLM writes and reads it (the field name is option "data",
// default "key"; LiteLLM reads no other field), and next to it the event id
// that wrote the version (DataEventKey). The namespace is sent
// as path segments, never as a header, as LiteLLM does; logins and the
// token's own requests (lookup-self, renew-self, revoke-self) carry the
// login namespace in X-Vault-Namespace, since a Vault Enterprise or HCP
// Vault token is looked up, renewed and revoked only in the namespace it
// was created in. Values must be valid UTF-8. LiteLLM
// also puts a description into the data; keyrelay keeps it in
// custom_metadata, so the data holds only the value and the event id
// (LiteLLM reads only "key", and keyrelay reads secrets LiteLLM wrote with
// or without a description).
// Before its first write the provider checks once that the mount is KV
// version 2 (sys/internal/ui/mounts), so a KV version 1 mount is refused
// instead of receiving stray "data/..." and "metadata/..." secrets.
//
// # Configuration
//
// Options (keyrelay.providers.hashicorp_vault, overridden per team) fall
// back to LiteLLM's environment variables, then to the defaults:
//
//	addr                HCP_VAULT_ADDR                          http://127.0.0.1:8200
//	token               HCP_VAULT_TOKEN
//	namespace           HCP_VAULT_SECRET_NAMESPACE, HCP_VAULT_NAMESPACE   (secrets; a team's "namespace")
//	login_namespace     HCP_VAULT_LOGIN_NAMESPACE, HCP_VAULT_NAMESPACE    (AppRole/cert login; the token's own requests)
//	mount               HCP_VAULT_MOUNT_NAME                    secret
//	path_prefix         HCP_VAULT_PATH_PREFIX                   none
//	data                (LiteLLM's team option)                 key
//	auth_method         token | approle | cert                  LiteLLM's order: approle, cert, token
//	approle_role_id     HCP_VAULT_APPROLE_ROLE_ID
//	approle_secret_id   HCP_VAULT_APPROLE_SECRET_ID
//	approle_mount_path  HCP_VAULT_APPROLE_MOUNT_PATH            approle
//	client_cert         HCP_VAULT_CLIENT_CERT                   (PEM file)
//	client_key          HCP_VAULT_CLIENT_KEY                    (PEM file)
//	cert_role           HCP_VAULT_CERT_ROLE                     none (Vault picks the matching role)
//	cert_mount_path                                             cert
//	ca_cert             PEM bundle trusted for Vault's certificate   system pool
//	tls_server_name, tls_skip_verify                            none, false
//	delete_mode         soft | destroy | metadata               soft
//	max_versions        max_versions of secrets keyrelay creates    0 (the mount's)
//	event_history       versions Versions reports with their event id (1-32)  10
//	timeout             per HTTP request                        30s
//	max_retries         the Vault client's own retries          0 (the worker retries)
//	rate_limit, rate_burst  requests/s to Vault, burst          0 (no limit), ceil(rate)
//
// Teams should override only namespace, mount, path_prefix and data
// (TeamOptions, LiteLLM's team overrides): options arrive merged, and a
// team-chosen addr would be sent the global credentials.
//
// LiteLLM's settings field names (vault_addr, vault_token, vault_namespace,
// vault_mount_name, vault_path_prefix, vault_cert_role) are accepted as
// aliases. Nothing is taken from VAULT_* variables: VAULT_ADDR, VAULT_TOKEN,
// VAULT_NAMESPACE and VAULT_HEADERS are ignored. Config.Validate names the
// bad field; errors never contain a credential.
//
// # Authentication
//
// Token, AppRole (auth/<approle_mount_path>/login) or TLS certificate
// (auth/<cert_mount_path>/login, over an https address with client_cert and
// client_key presented on every connection). The token is cached for its
// lease: after two thirds of it the provider renews the token in the
// background (auth/token/renew-self) while calls continue, and logs in again
// when renewal fails or the token approaches its max TTL; a call blocks only
// when the token is about to expire. A static token with a TTL is renewed
// the same way (it cannot be re-obtained), on a timer rather than on the
// next call, so that an idle provider's periodic token does not expire;
// the timer starts with the token's first use (its lookup). A 403 on a login-based token that
// Vault no longer accepts (checked with lookup-self) triggers one new login
// and one repeat of the request. Close revokes a token obtained by login.
//
// # Guarantees
//
//   - Writes use check-and-set: cas=0 creates, the current version updates.
//     A concurrent writer makes Put fail with ErrConflict, classified
//     retryable; nothing is overwritten blindly. The KV version written is
//     PutResult.Version ("1", "2", ...).
//   - The fast path: with PutRequest.ExpectedVersion (the worker passes
//     the version its ledger recorded for the key on this backend and
//     name) Put writes at once with cas = that version, one request. The
//     check-and-set succeeding proves that no version was written since
//     the caller's own: nothing newer is lost, and no other event's version
//     is current (the worker never calls Put for the event its ledger
//     records). Vault answers the write with the secret's custom_metadata
//     as it stood under the same lock: if it does not name the caller as
//     owner (moved to another key by an adopting UpdateTags, edited by
//     hand, or a hint from another Vault location under the same backend
//     name), the write is taken back (the previous version's data written
//     on top, the caller's version destroyed) and Put fails with
//     ErrNotOwned; between the two writes (milliseconds) the secret holds
//     the caller's value, the one window in which the ownership guard is
//     enforced after the fact. On a check-and-set conflict, or without a
//     hint, Put takes the checked path below. A soft-deleted current
//     version overwritten by the fast path (a delete behind keyrelay's
//     back) is restored without Created and without undeleting the hidden
//     version.
//   - Idempotency: each version's data carries the event id that wrote it
//     (IdempotencyKey, "-" for none), in the same request as the value, so
//     no version is ever without it. The checked path reads the current
//     version and returns it as a Duplicate, writing nothing, when its
//     event id is the request's: a redelivered event whose first write
//     landed but whose ledger commit did not (its hint one version behind)
//     costs the failed check-and-set and one read. Secrets written before
//     the event id moved into the data recorded it in custom_metadata under
//     "keyrelay-event-<version>"; those records are still read (Get,
//     Versions, the duplicate check), and a version of that format left
//     unrecorded by a crash is recognized as before (owned by the same key,
//     holding the same value: recorded now and returned as a Duplicate).
//   - Ownership: custom_metadata holds managed-by: keyrelay, keyrelay-team
//     and keyrelay-key. Put, Delete and UpdateTags refuse a secret owned by
//     another key or not keyrelay's (ErrNotOwned) unless the request sets
//     Adopt. A new secret's first version is written first (check-and-set
//     0, refused when the secret has any version), then its owner: a
//     create stopped in between leaves a first version with no owner,
//     which only the same event with the same value adopts; any other
//     writer gets a retryable ErrConflict until then. When a check-and-set
//     hint from an earlier life of the secret (a ledger's version from
//     before a backend loss) lands on such a version, the write is taken
//     back, the copy written back carries "keyrelay-first-version-copy"
//     and stands for the first version, and the writer gets the same
//     retryable ErrConflict.
//     Extra tags and the description ("keyrelay-description") live there
//     too, within Vault's limits (64 keys; names up to 128 bytes, values up
//     to 512, printable).
//   - Delete is soft by default (the current version is marked deleted, as
//     LiteLLM's delete does); delete_mode "destroy" destroys every version's
//     data, "metadata" removes the secret entirely, and DeleteRequest.Force
//     always removes it entirely. A Put after a delete restores the secret
//     with a new version (Created) and undeletes the version the soft delete
//     hid. Older versions stay readable by Get(name, version) after a
//     rotation, up to the mount's max_versions (10 by default), until
//     Retire (providers.Retirer) destroys one (ErrNotFound from then on).
//   - Names: ".." anywhere, "." segments, empty segments (leading, trailing
//     or double "/"), control characters and invalid UTF-8 are refused with
//     ErrInvalid, in names, namespaces, mounts and path prefixes; otherwise
//     names map to paths unchanged.
//   - Errors are *providers.Error values. 429 is Throttled with the
//     Retry-After hint; 5xx (but 501), 412, network errors and timeouts are
//     retryable ErrUnavailable; a check-and-set mismatch is retryable
//     ErrConflict; 403 is permanent ErrAccessDenied, 404 ErrNotFound, other
//     4xx permanent ErrInvalid; an untrusted server certificate is permanent.
//     Messages keep the status and Vault's error text, never the request
//     URL, query, headers, a token, a secret id or a value.
//
// # Requests
//
// Vault requests per call, after the one-time mount check and the login
// (measured against the real server by TestVaultRequestCounts):
//
//	rotation with the ledger's version      1  PUT data (cas)
//	  ... with changed tags or description  2  + PATCH metadata
//	create (no hint)                        2  PUT data (cas 0), PATCH metadata (owner)
//	rotation without a hint                 3  PUT data (cas 0 conflict), GET data, PUT data
//	restore after a delete (no hint)        4  PUT data (cas 0 conflict), GET data, PUT data,
//	                                           PUT undelete
//	redelivery whose write landed           2  PUT data (cas conflict), GET data: Duplicate
//	  ... without a hint                    2  PUT data (cas 0 conflict), GET data: Duplicate
//	create over another key's metadata      3  PUT data, (its answer names the owner)
//	  without a version                        PUT destroy: ErrNotOwned
//	someone else wrote and took it over     2  PUT data (cas conflict), GET data: ErrNotOwned
//	  ... left it keyrelay's (LiteLLM)      3  + PUT data
//	owner changed without a new version     4  PUT data, GET data (previous), PUT data, PUT destroy
//	delete                                  2  GET metadata, DELETE data
//	Versions                                1 + one GET data per live version among the
//	                                           newest event_history (fewer for the
//	                                           former format)
//
// Before the hint and the event id in the data, a rotation cost 3 (read,
// write, custom_metadata patch) and a create 5; before the create wrote its
// first version first, a create cost 3 (GET metadata, PUT metadata, PUT
// data), and someone creating the secret between that read and the
// metadata write had their custom_metadata replaced by keyrelay's owner,
// after which keyrelay's retry wrote over their value.
//
// # Vault policy
//
// The token needs, on <mount>/data/<prefix>/*: create, read, update,
// delete; on <mount>/metadata/<prefix>/*: create, read, update, patch,
// delete; on <mount>/undelete/<prefix>/* and (delete_mode destroy,
// Retire, and the take-backs of the fast path and of a create into
// another key's metadata, which only log when refused)
// <mount>/destroy/<prefix>/*: update; and the default policy's
// auth/token/lookup-self, renew-self and revoke-self.
package vault
