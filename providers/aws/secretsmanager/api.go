package secretsmanager

import (
	"context"

	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// API lists the Secrets Manager calls the provider makes, and nothing else.
// *secretsmanager.Client implements it; tests may substitute another
// transport (NewWithAPI).
type API interface {
	CreateSecret(ctx context.Context, in *sm.CreateSecretInput, optFns ...func(*sm.Options)) (*sm.CreateSecretOutput, error)
	DescribeSecret(ctx context.Context, in *sm.DescribeSecretInput, optFns ...func(*sm.Options)) (*sm.DescribeSecretOutput, error)
	GetSecretValue(ctx context.Context, in *sm.GetSecretValueInput, optFns ...func(*sm.Options)) (*sm.GetSecretValueOutput, error)
	PutSecretValue(ctx context.Context, in *sm.PutSecretValueInput, optFns ...func(*sm.Options)) (*sm.PutSecretValueOutput, error)
	UpdateSecret(ctx context.Context, in *sm.UpdateSecretInput, optFns ...func(*sm.Options)) (*sm.UpdateSecretOutput, error)
	UpdateSecretVersionStage(ctx context.Context, in *sm.UpdateSecretVersionStageInput, optFns ...func(*sm.Options)) (*sm.UpdateSecretVersionStageOutput, error)
	DeleteSecret(ctx context.Context, in *sm.DeleteSecretInput, optFns ...func(*sm.Options)) (*sm.DeleteSecretOutput, error)
	RemoveRegionsFromReplication(ctx context.Context, in *sm.RemoveRegionsFromReplicationInput, optFns ...func(*sm.Options)) (*sm.RemoveRegionsFromReplicationOutput, error)
	ReplicateSecretToRegions(ctx context.Context, in *sm.ReplicateSecretToRegionsInput, optFns ...func(*sm.Options)) (*sm.ReplicateSecretToRegionsOutput, error)
	RestoreSecret(ctx context.Context, in *sm.RestoreSecretInput, optFns ...func(*sm.Options)) (*sm.RestoreSecretOutput, error)
	TagResource(ctx context.Context, in *sm.TagResourceInput, optFns ...func(*sm.Options)) (*sm.TagResourceOutput, error)
	UntagResource(ctx context.Context, in *sm.UntagResourceInput, optFns ...func(*sm.Options)) (*sm.UntagResourceOutput, error)
	ListSecrets(ctx context.Context, in *sm.ListSecretsInput, optFns ...func(*sm.Options)) (*sm.ListSecretsOutput, error)
	ListSecretVersionIds(ctx context.Context, in *sm.ListSecretVersionIdsInput, optFns ...func(*sm.Options)) (*sm.ListSecretVersionIdsOutput, error)
}

var _ API = (*sm.Client)(nil)
