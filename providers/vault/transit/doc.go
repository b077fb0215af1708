// Package transit is the HashiCorp Vault Transit key wrapper of the
// envelope sealer (package seal): data keys are wrapped with the Transit
// secrets engine's encrypt endpoint and unwrapped with decrypt, through
// github.com/hashicorp/vault/api. Values are events.SealedValue with alg
// "A256GCM-VAULT" (Alg), kid "<mount>/<key name>" (e.g.
// "transit/keyrelay") and edk the Transit ciphertext ("vault:v3:...").
//
// # Guarantees
//
//   - Rotation is Vault's: `vault write -f transit/keys/keyrelay/rotate`
//     (or the API) makes a new key version; new data keys are wrapped with
//     the newest, the ciphertext records its version ("vault:vN:"), older
//     versions keep decrypting down to the key's min_decryption_version,
//     and seal.Sealer.Rewrap moves a value's data key to the newest version
//     without touching the value's ciphertext.
//   - The wrapped data key is bound to the value's team: Transit's
//     associated_data (for AEAD key types such as the default
//     aes256-gcm96) is seal.Context.AdditionalData, so a wrapped key copied
//     into another team's event does not decrypt.
//   - Errors are *providers.Error classified for the retry policy: 429 is
//     Throttled with Vault's Retry-After, 5xx, 412 (a standby's stale
//     read) and network errors retryable, a ciphertext Vault cannot
//     decrypt a permanent refusal (events.ErrOpenFailed), 403 permanent
//     providers.ErrAccessDenied, other 4xx permanent. Messages keep Vault's
//     error text sanitized (seal.Sanitize), never a data key or a value.
//   - The client's own retries are off: the Sealer's policy decides.
//   - A renewable token (a periodic one) is renewed in the background
//     while New's context lasts, at two thirds of its TTL, as the KV
//     provider renews its own; renewal cannot pass a token's max TTL.
//
// Configuration (keyrelay.sealing.vault_transit): "address" (default
// LiteLLM's HCP_VAULT_ADDR, then VAULT_ADDR), "token" (default
// HCP_VAULT_TOKEN, then VAULT_TOKEN), "namespace" (HCP_VAULT_NAMESPACE),
// "mount" (default "transit"), "key_name" (the Transit key new data keys
// are wrapped with; empty: open only), "allowed_key_names"
// (comma-separated kids, "<mount>/<name>"), "ca_bundle", and the Sealer's
// options (seal.FromOptions).
package transit
