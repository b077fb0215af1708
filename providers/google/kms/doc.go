// Package kms is keyrelay's Google Cloud KMS integration (LiteLLM's
// key_management_system "google_kms"). It mirrors providers/aws/kms and
// does two things:
//
//   - Decrypter decrypts values the way LiteLLM reads them through Cloud
//     KMS: the secret's environment variable holds the base64 ciphertext,
//     decrypted with the CryptoKey named by GOOGLE_KMS_RESOURCE_NAME.
//   - Wrapper is the key wrapper (seal.Wrapper) of the envelope sealer,
//     package seal: events.AlgA256GCMGCPKMS values, as an alternative to
//     the local keyring and to AWS KMS. The Sealer draws 32 random bytes,
//     the Wrapper wraps them with Encrypt and unwraps them with Decrypt,
//     with the event's team as additional authenticated data
//     (events.Binding.GCPKMSAdditionalData, the counterpart of the AWS
//     encryption context). See docs/events.md, "Cloud KMS-wrapped data
//     keys", for the wire format.
//
// Both take a narrow API (Encrypt, Decrypt) that
// *kms.KeyManagementClient from cloud.google.com/go/kms/apiv1 implements;
// NewClient builds one from the options "endpoint", "insecure",
// "ca_bundle" and "credentials_file" (else Application Default
// Credentials). Tests run the official client over real gRPC against
// kmsfake, a wire-faithful fake of the service; over TLS it checks every
// call's access token, with expiry by its own clock and revocation on
// demand.
//
// # Guarantees
//
//   - A sealed value opens only for the event it was sealed for: the
//     AES-GCM associated data binds team, key id and generation, and Cloud
//     KMS unwraps the data key only with the additional data of the
//     event's team.
//   - Caching, wiping, retries and metrics are the Sealer's (package seal).
//   - Rotation: rotating the CryptoKey's primary version is keyring-style
//     rotation (the ciphertext records its version; the kid, the CryptoKey,
//     stays), and Sealer.Rewrap moves a value's data key to the primary
//     version without touching its ciphertext.
//   - Every request carries CRC32C checksums of its plaintext, ciphertext
//     and additional data, and every response's checksums (and
//     verified_* flags) are checked, as Google recommends; a failed check
//     is a retryable ErrChecksum.
//   - Every failure is a *providers.Error classified for the retry policy
//     by gRPC code: INVALID_ARGUMENT on Decrypt (tampered, another key or
//     other additional data) is permanent ErrInvalidCiphertext (plus
//     events.ErrOpenFailed from Open), and so is an INTERNAL or UNKNOWN
//     Decrypt answer whose message says the decryption or its
//     authentication failed (Cloud KMS's "Decryption failed: ..." or Go's
//     "cipher: message authentication failed", as emulators send it); a
//     value that fails AES-GCM authentication under its unwrapped data key
//     is a permanent events.ErrOpenFailed; NOT_FOUND and FAILED_PRECONDITION
//     are permanent ErrKeyUnusable; PERMISSION_DENIED is permanent
//     providers.ErrAccessDenied, and so is UNAUTHENTICATED once the call,
//     sent once more with a new access token, is refused again;
//     RESOURCE_EXHAUSTED is providers.Throttled; UNAVAILABLE,
//     DEADLINE_EXCEEDED, ABORTED and any other INTERNAL or UNKNOWN are
//     retryable. Messages carry the operation, the key name and the gRPC
//     code, never a ciphertext, a data key or a value.
//   - An access token Cloud KMS refuses (expired by Google's clock or
//     revoked while the client's cache holds it as valid: UNAUTHENTICATED,
//     ErrorInfo reason ACCESS_TOKEN_EXPIRED) costs one refresh, not the
//     event: NewClient's client reads the credentials again and sends the
//     call once more with a new token. A token that cannot be fetched for
//     a passing reason (token endpoint or metadata server down) is a
//     retryable providers.ErrUnavailable.
//   - The Sealer refuses other algorithms with events.ErrUnsupportedAlg,
//     and keys outside allowed_key_names with events.ErrUnknownKeyID,
//     without calling Cloud KMS.
//
// # LiteLLM compatibility
//
// Decrypter mirrors LiteLLM's get_secret for google_kms
// (litellm/secret_managers/google_kms.py loads the client and
// GOOGLE_KMS_RESOURCE_NAME; get_secret decrypts): the variable must be
// set, its value must pass LiteLLM's _is_base64 (canonical standard
// base64, b64encode(b64decode(s)) == s), Decrypt gets name =
// GOOGLE_KMS_RESOURCE_NAME and the ciphertext without additional data,
// and the plaintext is decoded as UTF-8 and returned unstripped. keyrelay
// additionally sends ciphertext_crc32c and checks the response's
// plaintext_crc32c.
package kms
