// Package kumofront runs kumo (github.com/sivchari/kumo), an in-process AWS
// emulator, behind a thin handler that speaks the Secrets Manager AWS JSON
// 1.1 protocol (X-Amz-Target, errors as {"__type", "message"}) and supplies
// what kumo v0.33.1 lacks or gets wrong. It is test support for the
// aws_secret_manager provider; nothing in keyrelay's binary imports it.
//
// kumo keeps the secrets, their values by version id, descriptions, KMS key
// ids and ARNs, and answers CreateSecret, GetSecretValue, PutSecretValue,
// UpdateSecret, DeleteSecret (forced) and DescribeSecret. The front keeps,
// per secret, what kumo does not model faithfully, following the Secrets
// Manager API reference:
//
//   - ClientRequestToken is the VersionId on CreateSecret too (kumo picks a
//     random one); a PutSecretValue or UpdateSecret whose token names an
//     existing version with the same value changes nothing, and with a
//     different value fails with ResourceExistsException.
//   - Staging labels: exactly one version holds each label; a new
//     AWSCURRENT moves the previous one to AWSPREVIOUS (kumo leaves several
//     versions labelled AWSPREVIOUS after three writes). Versions without
//     labels are deprecated and listed only with IncludeDeprecated.
//   - Soft delete with a recovery window (7..30 days, default 30) or
//     ForceDeleteWithoutRecovery; a secret scheduled for deletion refuses
//     reads and writes with InvalidRequestException, cannot be created
//     again, and comes back with RestoreSecret.
//   - Replicas: the Regions of CreateSecret's AddReplicaRegions are
//     kept and shown by DescribeSecret (ReplicationStatus, InSync);
//     ReplicateSecretToRegions adds more, RemoveRegionsFromReplication
//     removes them, and DeleteSecret, forced
//     or not, refuses a secret that still has one
//     (InvalidParameterException), as AWS does.
//   - TagResource, UntagResource, ListSecretVersionIds and
//     UpdateSecretVersionStage, which kumo does not implement. A label is
//     moved only with RemoveFromVersionId naming the version that holds it
//     (InvalidParameterException otherwise), removed only from the version
//     holding it (InvalidParameterException otherwise), and AWSCURRENT
//     cannot be removed, only moved.
//   - The versions quota: a secret keeps at most MaxVersions versions. A
//     write that needs room removes deprecated versions created over
//     DeprecatedVersionMinAge (24 hours) ago, oldest first, as Secrets
//     Manager does; when that is not enough (the versions are labelled
//     or younger), PutSecretValue and UpdateSecret fail with HTTP 400
//     LimitExceededException and create nothing. AgeVersions lets time
//     pass for one secret's versions.
//   - Validation of names (1..512 of A-Z a-z 0-9 /_+=.@-), tags (at most
//     50, keys up to 128 and values up to 256 characters of letters,
//     digits, spaces and _.:/=+-@, no "aws:" prefix), descriptions (2048),
//     values (65536 bytes), tokens and version ids (32..64 characters)
//     and staging labels (256), with ValidationException or
//     InvalidParameterException as AWS answers.
//
// Other requests (STS, other services) go to kumo unchanged.
//
// The front has a clock of its own, the host's plus an offset
// (SetClockOffset, default 0), sent in every response's Date header. A
// Secrets Manager request whose SigV4 signing time (X-Amz-Date) is more
// than SignatureWindow (15 minutes) from it, either way, is refused as
// Secrets Manager refuses it: HTTP 400 InvalidSignatureException,
// "Signature expired: ..." or "Signature not yet current: ..."
// (SetSkewErrorCode("RequestExpired") answers the code the API reference
// lists instead). The AWS SDK's clock skew correction reads the Date
// header, signs its retry with the measured skew and keeps it for the
// client's later calls.
//
// Faults can be injected per action and secret (Inject): any HTTP status
// and error __type with headers such as X-Amz-Retry-After, a delay, a
// dropped connection, or a response lost after the call took effect.
//
// Request quotas are opt-in: EnforceQuotas (e.g. with DefaultQuotas, the
// published per-second rates per account and Region) makes the front
// throttle requests over a quota's token bucket with a ThrottlingException,
// as AWS does, and Throttled counts them. Without it nothing is
// throttled. The aws_secret_manager provider's tests use it to check its
// limiters and providers.Config.Quotas (cluster-wide quotas).
//
// kumo registers its services once per process, so every kumo server in a
// test binary shares one store: tests must use distinct secret names. The
// front's own state is per Server, and it is authoritative: a secret not
// created through this front does not exist for it.
package kumofront
