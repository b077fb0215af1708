// Package seal is keyrelay's one envelope sealer: a random 32-byte data
// key per (team, window) encrypts values with AES-256-GCM, bound to the
// event's team, key id and generation (events.Binding.AAD), and a key
// wrapper, the only thing a KMS implements (Wrapper: wrap, unwrap, key id,
// error classification), wraps that data key under a key-encryption key
// (KEK). It follows the shape of Tink's KMS envelope AEAD, with keyrelay's
// wire format (events.SealedValue: alg, kid, edk, nonce, ct).
//
// Wrappers: KeyringWrapper here (the local keyring), and one package per
// KMS: providers/aws/kms, providers/google/kms, providers/vault/transit,
// providers/azure/keyvault/keys. sealtest is the conformance suite they
// all pass against their servers.
//
// It lives outside events because events is the wire contract (format,
// associated data, validation, no I/O), while this package is runtime
// machinery (caches, retries, metrics, KMS clients through wrappers);
// and outside providers because sealing is not a secret store.
//
// # Guarantees
//
//   - A sealed value opens only for the event it was sealed for: the
//     AES-GCM associated data binds alg, kid, team, key id and generation;
//     wrappers whose KMS takes a context (AWS encryption context, Cloud KMS
//     and Vault Transit additional data, the local keyring) also bind the
//     wrapped data key to the team (Context).
//   - Plaintext data keys live only in memory: the bytes a KMS returns or
//     the Sealer draws are wiped as soon as the AES-GCM cipher is built;
//     caches hold the cipher, never the key bytes. Data keys and values
//     are never logged, put in errors or in metrics.
//   - A data key seals at most Config.DataKeyMaxUses values (default 1000)
//     during at most Config.DataKeyTTL (default 5m), and only values of one
//     team; an unwrapped key is reused for at most Config.OpenCacheTTL
//     (default 5m). Both caches are bounded LRUs; concurrent misses share
//     one KMS call.
//   - Every KMS call is bounded by Config.CallTimeout and retried by one
//     policy, here: retryable errors up to Config.MaxAttempts with jittered
//     exponential backoff, throttled ones after the KMS's hint, permanent
//     ones never. What is returned is a *providers.Error of the wrapper's
//     class (Wrapper.Classify), so the worker's retry policy continues from
//     there; a wrapped key the KMS refused, and a value that fails AES-GCM
//     authentication, are permanent and match events.ErrOpenFailed.
//   - Rotation of the KEK is keyring-style: new values are wrapped with the
//     newest KEK version, the wrapped data key records which version
//     wrapped it, older values still open, and Sealer.Rewrap moves a value
//     to the newest version without touching its ciphertext.
//   - Formats stay compatible: A256GCM-KMS and A256GCM-GCPKMS values sealed
//     before this package existed open, and are still what the AWS and
//     Google wrappers seal.
package seal
