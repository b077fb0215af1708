// Package kms is keyrelay's AWS KMS integration (LiteLLM's
// key_management_system "aws_kms"). It does two things:
//
//   - Decrypter decrypts values the way LiteLLM reads them through KMS:
//     "aws_kms/<base64>" values and LITELLM_SECRET_AWS_KMS_* environment
//     variables (LiteLLM's decrypt_env_var, enabled by USE_AWS_KMS=True).
//   - Sealer seals event values with KMS-wrapped data keys
//     (events.AlgA256GCMKMS), as an alternative to the local keyring: the
//     gateway (kms:GenerateDataKey) and the workers (kms:Decrypt) share a
//     KMS key instead of a key file. See docs/events.md, "KMS-wrapped data
//     keys", for the wire format.
//
// Both take a narrow API (GenerateDataKey, Decrypt) that *kms.Client from
// the AWS SDK implements; NewClient builds one from LiteLLM's AWS options
// and environment variables through providers/aws/awsconfig, so the
// endpoint, CA bundle, region, credentials and roles come from
// configuration.
//
// # Guarantees
//
//   - A sealed value opens only for the event it was sealed for: the
//     AES-GCM associated data binds team, key id and generation (as for
//     the local keyring), and KMS unwraps the data key only under the
//     encryption context of the event's team, so a wrapped key copied into
//     another team's event does not even unwrap.
//   - Plaintext data keys live only in memory: the bytes KMS returns are
//     wiped as soon as the AES-GCM cipher is built; caches hold the cipher,
//     never the key bytes. Data keys are never logged, printed or put in
//     errors.
//   - A data key seals at most DataKeyMaxUses values (default 1000) during
//     at most DataKeyTTL (default 5m), and only values of one team; an
//     unwrapped key is reused for at most OpenCacheTTL (default 5m). Both
//     caches are bounded LRUs. Concurrent misses share one KMS call.
//   - Every KMS failure is a *providers.Error classified for the retry
//     policy: invalid ciphertext, wrong key, access denied, unusable keys
//     and validation errors are permanent; throttling (providers.Throttled),
//     KMS internal errors, 5xx, timeouts and network errors are retryable.
//     Messages carry the operation, the KMS key and the KMS error code,
//     never a request id, a ciphertext, a data key or a value; KMS's own
//     message is kept only for codes whose messages name keys and
//     principals, and then sanitized.
//   - Sealer.Open refuses local-keyring values with events.ErrUnsupportedAlg
//     (never events.ErrOpenFailed), and values of KMS keys outside
//     AllowedKeyARNs with events.ErrUnknownKeyID, without calling KMS.
//
// # LiteLLM compatibility
//
// Decrypter mirrors litellm/secret_managers/aws_secret_manager.py: the
// "aws_kms/" prefix is removed, the rest decoded as Python's
// base64.b64decode does, KMS Decrypt is called with the CiphertextBlob
// alone (no encryption context), the plaintext must be UTF-8 and is
// stripped of surrounding whitespace; a variable is decrypted when its
// lower-cased name starts with "litellm_secret_aws_kms" or its value starts
// with "aws_kms/", and is exposed under its name with every
// "litellm_secret_aws_kms_" removed case-insensitively. Two deliberate
// differences: LiteLLM turns "True"/"False" into booleans (which its own
// os.environ assignment then rejects) where Decrypter returns the text, and
// LiteLLM's older get_secret path falls back to the undecrypted value on
// any error where Decrypter returns the error.
package kms
