package kumofront_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// TestRemoveStage: a label comes off only the version holding it, AWSCURRENT
// never comes off, and version ids must be 32 to 64 characters, as the
// UpdateSecretVersionStage reference says.
func TestRemoveStage(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "stage")
	v1, v2 := uuid.NewString(), uuid.NewString()
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("a"), ClientRequestToken: aws.String(v1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String("b"), ClientRequestToken: aws.String(v2)}); err != nil {
		t.Fatal(err)
	}
	remove := func(stage, from string) error {
		_, err := c.UpdateSecretVersionStage(ctx, &sm.UpdateSecretVersionStageInput{SecretId: aws.String(n), VersionStage: aws.String(stage), RemoveFromVersionId: aws.String(from)})
		return err
	}
	tests := map[string]struct {
		stage, from, code string
	}{
		"previous from the current version": {kumofront.StagePrevious, v2, "InvalidParameterException"},
		"current":                           {kumofront.StageCurrent, v2, "InvalidParameterException"},
		"short version id":                  {kumofront.StagePrevious, "v1", "ValidationException"},
		"unknown version":                   {kumofront.StagePrevious, uuid.NewString(), "InvalidParameterException"},
	}
	for label, tc := range tests {
		if err := remove(tc.stage, tc.from); code(err) != tc.code {
			t.Errorf("%s: %v, want %s", label, err, tc.code)
		}
	}
	if err := remove(kumofront.StagePrevious, v1); err != nil {
		t.Fatalf("removing AWSPREVIOUS from the version holding it: %v", err)
	}
	d, err := c.DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(n)})
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := d.VersionIdsToStages[v1]; ok {
		t.Errorf("the unlabelled version is still listed with stages %v", st)
	}
	if _, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n), VersionStage: aws.String(kumofront.StagePrevious)}); code(err) != "ResourceNotFoundException" {
		t.Errorf("GetSecretValue AWSPREVIOUS after removing it: %v, want ResourceNotFoundException", err)
	}
	// Deprecated, not gone: still readable by id, listed with IncludeDeprecated.
	if out, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n), VersionId: aws.String(v1)}); err != nil || aws.ToString(out.SecretString) != "a" {
		t.Errorf("GetSecretValue of the deprecated version: %v", err)
	}
	if err := remove(kumofront.StagePrevious, v1); code(err) != "InvalidParameterException" {
		t.Errorf("removing AWSPREVIOUS twice: %v, want InvalidParameterException", err)
	}
}
