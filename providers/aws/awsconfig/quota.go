package awsconfig

import (
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/smithy-go"
)

// LimitExceeded is the error code AWS services answer for a request that
// would exceed one of the service's quotas (Secrets Manager's versions
// per secret, KMS's keys or grants); request rates are
// ThrottlingException instead.
const LimitExceeded = "LimitExceededException"

// NoQuotaRetry is an SDK retryer minus LimitExceededException, which the
// SDK lists among its throttle codes (retry.DefaultThrottleErrorCodes) and
// retries with backoff: a quota does not clear within the SDK's attempts,
// and each attempt only delays the error (and takes a request token for
// nothing). The provider classifies the error itself.
type NoQuotaRetry struct{ aws.RetryerV2 }

// IsErrorRetryable is the wrapped retryer's answer, except for
// LimitExceededException: never.
func (r NoQuotaRetry) IsErrorRetryable(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == LimitExceeded {
		return false
	}
	return r.RetryerV2.IsErrorRetryable(err)
}

// WithoutQuotaRetry wraps retryer in NoQuotaRetry when it is an
// aws.RetryerV2 (the SDK's default is), and returns it unchanged otherwise.
func WithoutQuotaRetry(retryer aws.Retryer) aws.Retryer {
	if r, ok := retryer.(aws.RetryerV2); ok {
		return NoQuotaRetry{r}
	}
	return retryer
}
