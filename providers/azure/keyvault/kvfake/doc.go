// Package kvfake is an in-process HTTPS fake of the Azure Key Vault secrets
// REST API, faithful enough on the wire to drive the official azsecrets
// client: the bearer challenge, api-version, Key Vault's JSON error shape
// (with its inner error codes), versions with ids, soft delete with recover
// and purge, disabled versions, case-insensitive names and injected faults
// such as 429 with Retry-After.
//
// # What the fake enforces
//
//   - Tokens: the vault accepts only tokens its token endpoint issued (or
//     the static Server.Token) and checks them as Key Vault does: an
//     expired token, a token not valid yet (the vault's clock, see
//     AdvanceClock) and a revoked one (RevokeTokens) get the 401 bearer
//     challenge.
//   - Soft delete: a write to a deleted-but-recoverable name is 409
//     Conflict with inner error ObjectIsDeletedButRecoverable; the name
//     can only be recovered or purged.
//   - Asynchronous deletes, recoveries and purges, on by default, each
//     with its delay: DeleteDelay (while a delete runs, the deleted
//     secret reads 404 and a write, recover or purge gets 409 Conflict
//     with inner error ObjectIsBeingDeleted), RecoverDelay (a recovered
//     secret reads 404 for a while, and a write gets 409 Conflict with
//     inner error ObjectIsBeingRecovered), PurgeDelay (after a purge,
//     Get Secret and Get Deleted Secret answer 404 while Set Secret
//     answers 409 Conflict with inner error ObjectIsBeingDeleted, as Key
//     Vault does for a few seconds). New sets DefaultDeleteDelay,
//     DefaultRecoverDelay and DefaultPurgeDelay (a few hundred
//     milliseconds, where Key Vault takes seconds); Instant, or a delay
//     set to 0, is the explicit opt-out to completion at once.
//   - Disabled versions: a read answers 403 Forbidden with inner error
//     SecretDisabled; the versions list still shows their tags.
//   - Limits: 25 KiB values, 15 tags, Key Vault's name syntax, purge
//     protection (PurgeProtection: a purge is 403).
//   - Transaction limits, opt-in: EnforceQuotas (e.g. with DefaultQuotas:
//     300 secret creates and 4,000 other transactions per 10 seconds)
//     makes the vault answer 429 with Retry-After, as Key Vault does, to
//     requests over a limit in a sliding window; Throttled counts them.
//     Without it nothing is throttled.
//
// A minimal Entra ID token endpoint runs on the same listener. It can fail
// on demand (InjectTokenFault): with an HTTP status, or with a dropped
// connection and no HTTP response, as an unreachable Entra ID looks to a
// client.
//
// keys.go serves the keys API too (create, get, wrapkey, unwrapkey with
// RSA-OAEP-256 on real RSA keys), for providers/azure/keyvault/keys.
//
// No Key Vault emulator exists offline; keyrelay's azure_key_vault provider
// is tested against this fake (see the repository README).
package kvfake
