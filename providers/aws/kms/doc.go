// Package kms is keyrelay's AWS KMS integration (LiteLLM's
// key_management_system "aws_kms"). It does two things:
//
//   - Decrypter decrypts values the way LiteLLM reads them through KMS:
//     "aws_kms/<base64>" values and LITELLM_SECRET_AWS_KMS_* environment
//     variables (LiteLLM's decrypt_env_var, enabled by USE_AWS_KMS=True).
//   - Wrapper is the key wrapper (seal.Wrapper) of the envelope sealer,
//     package seal: events.AlgA256GCMKMS values, data keys made by
//     GenerateDataKey and unwrapped by Decrypt, as an alternative to the
//     local keyring: the gateway (kms:GenerateDataKey) and the workers
//     (kms:Decrypt) share a KMS key instead of a key file. New and
//     NewSealer return a *seal.Sealer over it. See docs/events.md,
//     "KMS-wrapped data keys", for the wire format.
//
// Both take a narrow API (GenerateDataKey, Encrypt, Decrypt) that *kms.Client from
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
//   - Caching, wiping, retries and metrics are the Sealer's (package seal,
//     one implementation for every KMS).
//   - Every KMS failure is a *providers.Error classified for the retry
//     policy: invalid ciphertext, wrong key, access denied, unusable keys
//     and validation errors are permanent, and so is LimitExceededException
//     (ErrQuotaExceeded: a KMS quota on keys, aliases or grants, not a
//     request rate; clients from NewClient do not retry it either);
//     throttling (ThrottlingException, providers.Throttled),
//     KMS internal errors, 5xx, timeouts and network errors are retryable,
//     and so is a refusal for a signing time over 15 minutes from AWS's
//     clock (ErrClockSkew; the SDK corrects its clock from the refusal).
//     Messages carry the operation, the KMS key and the KMS error code,
//     never a request id, a ciphertext, a data key or a value; KMS's own
//     message is kept only for codes whose messages name keys and
//     principals, and then sanitized.
//   - The Sealer refuses local-keyring values with events.ErrUnsupportedAlg
//     (never events.ErrOpenFailed), and values of KMS keys outside
//     allowed_key_arns with events.ErrUnknownKeyID, without calling KMS.
//   - Rotation: move key_id to a new KMS key; values name the ARN that
//     wrapped them and keep opening (KMS's own automatic rotation keeps
//     the ARN and needs nothing). Sealer.Rewrap reseals a value under the
//     new key.
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
