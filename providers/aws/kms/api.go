package kms

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/keyrelay/keyrelay/providers/aws/awsconfig"
)

// API is the part of the KMS client keyrelay uses; *kms.Client (from
// github.com/aws/aws-sdk-go-v2/service/kms) implements it, and tests wrap
// it to count or fail calls.
type API interface {
	GenerateDataKey(ctx context.Context, in *awskms.GenerateDataKeyInput, optFns ...func(*awskms.Options)) (*awskms.GenerateDataKeyOutput, error)
	Encrypt(ctx context.Context, in *awskms.EncryptInput, optFns ...func(*awskms.Options)) (*awskms.EncryptOutput, error)
	Decrypt(ctx context.Context, in *awskms.DecryptInput, optFns ...func(*awskms.Options)) (*awskms.DecryptOutput, error)
}

// loadAWSConfig builds the SDK configuration from LiteLLM-style options
// and the environment (region, endpoint, CA bundle, credentials, roles);
// see providers/aws/awsconfig.
var loadAWSConfig = awsconfig.Load

// NewClient returns a KMS client configured from opts and getenv (nil
// means os.Getenv) the way every keyrelay AWS provider is: LiteLLM's aws_*
// options and environment variables, plus "endpoint", "ca_bundle",
// "region" and "max_attempts" (see providers/aws/awsconfig). It makes no
// network call.
func NewClient(ctx context.Context, opts map[string]string, getenv func(string) string) (*awskms.Client, error) {
	cfg, err := loadAWSConfig(ctx, opts, getenv)
	if err != nil {
		return nil, err
	}
	return NewClientFromConfig(cfg), nil
}

// NewClientFromConfig returns a KMS client for an SDK configuration. Its
// retryer does not retry LimitExceededException (a KMS quota, see
// ErrQuotaExceeded), which the SDK's default retryer takes for throttling.
func NewClientFromConfig(cfg aws.Config, optFns ...func(*awskms.Options)) *awskms.Client {
	noQuotaRetry := func(o *awskms.Options) { o.Retryer = awsconfig.WithoutQuotaRetry(o.Retryer) }
	return awskms.NewFromConfig(cfg, append(optFns[:len(optFns):len(optFns)], noQuotaRetry)...)
}
