// Package keys is the Azure Key Vault keys wrapper of the envelope sealer
// (package seal): data keys are wrapped with the vault's wrapKey and
// unwrapped with unwrapKey (RSA-OAEP-256) through the official azkeys
// SDK. Values are events.SealedValue with alg "A256GCM-AZKV" (Alg), kid
// the Key Vault key's name, and edk the key version that wrapped the data
// key followed by the RSA-OAEP-256 ciphertext:
//
//	edk = len(version) (1 byte) || version (ASCII) || RSA-OAEP-256(data key)
//
// # Guarantees
//
//   - Rotation is Key Vault's: a new key version (Create Key again, or the
//     vault's rotation policy) wraps every new data key; the version in
//     edk still unwraps older ones as long as it is enabled, and
//     seal.Sealer.Rewrap moves a value's data key to the newest version
//     without touching the value's ciphertext.
//   - RSA-OAEP takes no associated data, so the wrapped key is not bound to
//     the team by Key Vault; the value is, by its AES-GCM associated data,
//     so a value moved to another event still fails to open.
//   - Errors are *providers.Error classified for the retry policy: 429 is
//     Throttled with Key Vault's Retry-After, 5xx and network errors
//     retryable, 401 and 403 permanent providers.ErrAccessDenied (a
//     Sealer from New first retries a 401 once with a new credential, as
//     a token the vault revoked stays in azidentity's cache), 404
//     (KeyNotFound) permanent ErrKeyUnusable, a 400 on unwrapKey (a
//     ciphertext the key cannot decrypt) a permanent refusal
//     (events.ErrOpenFailed), other 4xx permanent. Credential errors are
//     classified as by the secrets provider (package keyvault): a client
//     secret Entra ID refuses (AADSTS7000215) or another 4xx from the token
//     endpoint is permanent providers.ErrAccessDenied, a token endpoint
//     that is unreachable or answers 5xx, 408, 429 or a transient AADSTS
//     code is retryable, and so is DefaultAzureCredential with no source
//     available yet (the managed identity endpoint at boot). Messages
//     carry Key Vault's error code and sanitized message, never a data
//     key or value.
//   - The SDK's own retries are off: the Sealer's policy decides.
//
// Configuration (keyrelay.sealing.azure_keys): "vault_url" (default
// LiteLLM's AZURE_KEY_VAULT_URI), "key_name" (empty: open only),
// "allowed_key_names", "tenant_id", "client_id", "client_secret" (default
// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET; without a secret,
// DefaultAzureCredential), "authority_host", "disable_instance_discovery",
// "ca_bundle", "disable_challenge_resource_verification", and the Sealer's
// options.
package keys
