// Package secretsmanager stores keyrelay's virtual keys in AWS Secrets
// Manager, through the official SDK (aws-sdk-go-v2). It registers as
// LiteLLM's key_management_system "aws_secret_manager" (Register) and reads
// LiteLLM's aws_* key_management_settings unchanged (see package awsconfig
// for region, endpoint, CA bundle and credentials) plus the options of
// Config: recovery_window_days, kms_key_id, replica_regions, write_tps,
// read_tps, control_tps and timeout.
//
// The provider depends on API, an interface listing the SDK calls it
// makes: CreateSecret, DescribeSecret, GetSecretValue, PutSecretValue,
// UpdateSecret, UpdateSecretVersionStage, DeleteSecret, RestoreSecret,
// RemoveRegionsFromReplication, ReplicateSecretToRegions, TagResource,
// UntagResource, ListSecrets and ListSecretVersionIds.
//
// # Compatibility with LiteLLM
//
// Values are the raw SecretString, as LiteLLM's aws_secret_manager_v2
// writes and reads them (bytes that are not valid UTF-8 go to
// SecretBinary). Names are used as they are whenever AWS accepts them, so
// a secret LiteLLM wrote under prefix+name is the secret keyrelay reads and
// writes; other names are mapped (SecretID). ReadPrimarySecret reads
// LiteLLM's primary_secret_name layout, one JSON object of many keys.
//
// # Guarantees
//
//   - One event, one version. The ClientRequestToken of every write is a
//     UUIDv5 of the idempotency key (the event id) in a fixed namespace
//     (ClientRequestToken), and AWS uses it as the VersionId. A Put whose
//     token is already AWSCURRENT is a Duplicate and changes nothing; a
//     retry after a lost response, from any process, lands on the same
//     VersionId and AWS does not create a second version.
//   - Rotation keeps the old value: PutSecretValue moves it to AWSPREVIOUS;
//     every version stays readable by Get(name, VersionId) while AWS keeps
//     it (AWS prunes unlabelled versions beyond 100, never younger than a
//     day). Retire (providers.Retirer) takes AWSPREVIOUS off an earlier
//     version, leaving it deprecated for AWS to delete; until then it stays
//     readable by VersionId.
//   - Soft delete: Delete schedules deletion with a recovery window
//     (recovery_window_days, 30 by default) unless the request forces it;
//     a Put on a name scheduled for deletion restores the secret first
//     (RestoreSecret) instead of failing, LiteLLM #10823. AWS deletes no
//     primary secret that still has replicas: Delete removes them first
//     (RemoveRegionsFromReplication), and a Put replicates a secret
//     lacking a replica_regions Region (a restored one) again.
//   - Ownership: a secret is tagged managed-by=keyrelay, keyrelay-team and
//     keyrelay-key. Put, Delete and UpdateTags refuse (ErrNotOwned) a
//     secret whose tags name another key, or no keyrelay owner at all,
//     unless the request sets Adopt. AWS has no conditional writes: a tag
//     changed between the check and the write is not detected.
//   - Quotas: calls take a token from client-side limiters sized to AWS's
//     published per-region quotas (PutSecretValue, UpdateSecret and
//     UpdateSecretVersionStage 50/s; GetSecretValue and DescribeSecret
//     10,000/s; CreateSecret, DeleteSecret, RestoreSecret, tagging and
//     ListSecretVersionIds 50/s each), shared by every provider instance
//     with the same region, endpoint and role account. A call whose
//     deadline would pass while waiting fails at once as Throttled, with
//     the wait as RetryAfter. With providers.Config.Quotas set (keyrelay
//     serve sets it: package quota), each call also takes a token of the
//     cluster-wide quota "aws_secret_manager/<account or endpoint>/<region>/<bucket>",
//     so every keyrelay process together stays under the same rates.
//   - Errors are *providers.Error values wrapping an *APIError: the AWS
//     operation, error code, HTTP status and a sanitized message, never a
//     value, a credential, an access key id or a request id. Throttling
//     (ThrottlingException and the SDK's other throttle codes, HTTP 429)
//     is Throttled with the service's hint (X-Amz-Retry-After,
//     Retry-After) or DefaultThrottleRetryAfter; 5xx, network failures,
//     timeouts and expired credentials are Retryable; validation, access
//     denied, KMS failures and other 4xx are Permanent;
//     ResourceNotFoundException is ErrNotFound. LimitExceededException is
//     no throttle although the SDK lists it as one: it is a quota on what
//     Secrets Manager stores, and matches ErrQuotaExceeded. From
//     PutSecretValue or UpdateSecret it is the secret's versions quota
//     (AWS removes unlabelled versions beyond 100 only once they are a day
//     old): Retryable with VersionQuotaRetryAfter, so the event's retry
//     budget bounds it; from any other call (CreateSecret: secrets per
//     Region) it is Permanent. The SDK itself makes at most max_attempts
//     (3) attempts per request, none again after a LimitExceededException,
//     with no client-side retry quota: keyrelay's worker retries the event.
//   - A host clock more than 15 minutes from AWS's: AWS refuses the
//     request (InvalidSignatureException "Signature expired" / "Signature
//     not yet current", RequestTimeTooSkewed). The SDK's retryer measures
//     the skew from the response's Date header, signs its next attempt
//     with it and keeps it for the client's later calls, so the call
//     usually succeeds on its second attempt. When it does not (no attempt
//     left, no Date header), the error is Retryable, matches ErrClockSkew
//     and providers.ErrAccessDenied, and says to check the host's clock; a
//     signature error that says nothing of time stays a Permanent
//     ErrAccessDenied.
//
// # Testing
//
// The tests run the shared conformance suite and the provider's own tests
// against kumo, an in-process AWS emulator, behind package kumofront, a
// thin handler that adds what kumo lacks (see its documentation). They do
// not run against AWS itself.
package secretsmanager
