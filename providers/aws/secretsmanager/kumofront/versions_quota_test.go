package kumofront_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// TestVersionsQuota: as the Secrets Manager quotas page says, deprecated
// versions younger than a day are kept, so a secret written MaxVersions
// times within a day refuses the next write (PutSecretValue and
// UpdateSecret alike) with LimitExceededException and creates nothing; a
// write repeating an existing token creates nothing and still succeeds;
// once the versions are a day old the next write removes the oldest
// deprecated one and succeeds.
func TestVersionsQuota(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "quota")
	tokens := []string{uuid.NewString()}
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v0"), ClientRequestToken: aws.String(tokens[0])}); err != nil {
		t.Fatal(err)
	}
	put := func(tok, v string) error {
		_, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String(v), ClientRequestToken: aws.String(tok)})
		return err
	}
	for len(tokens) < kumofront.MaxVersions {
		tok := uuid.NewString()
		if err := put(tok, tok); err != nil {
			t.Fatalf("write %d: %v", len(tokens)+1, err)
		}
		tokens = append(tokens, tok)
	}
	err := put(uuid.NewString(), "one too many")
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "LimitExceededException" || ae.ErrorMessage() != kumofront.LimitExceededMessage {
		t.Fatalf("write %d: %v, want LimitExceededException", kumofront.MaxVersions+1, err)
	}
	if status := httpStatus(err); status != http.StatusBadRequest {
		t.Errorf("LimitExceededException with HTTP %d, want 400", status)
	}
	if _, err := c.UpdateSecret(ctx, &sm.UpdateSecretInput{SecretId: aws.String(n), SecretString: aws.String("update"), ClientRequestToken: aws.String(uuid.NewString())}); code(err) != "LimitExceededException" {
		t.Errorf("UpdateSecret with a value at the quota: %v, want LimitExceededException", err)
	}
	last := tokens[len(tokens)-1]
	if err := put(last, last); err != nil {
		t.Errorf("repeating the last write (same token and value) at the quota: %v", err)
	}
	if got := versions(t, c, n); got != kumofront.MaxVersions {
		t.Errorf("%d versions after the refused writes, want %d", got, kumofront.MaxVersions)
	}
	cur, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)})
	if err != nil || aws.ToString(cur.VersionId) != last {
		t.Fatalf("current version after the refused writes: %v %v, want %s", err, cur, last)
	}

	if !f.AgeVersions(n, kumofront.DeprecatedVersionMinAge) {
		t.Fatal("AgeVersions: no such secret")
	}
	next := uuid.NewString()
	if err := put(next, "after a day"); err != nil {
		t.Fatalf("write after the versions aged a day: %v", err)
	}
	if got := versions(t, c, n); got != kumofront.MaxVersions {
		t.Errorf("%d versions after the write that made room, want %d", got, kumofront.MaxVersions)
	}
	if _, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n), VersionId: aws.String(tokens[0])}); code(err) != "ResourceNotFoundException" {
		t.Errorf("oldest deprecated version after the write that made room: %v, want it removed", err)
	}
	if out, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n), VersionStage: aws.String(kumofront.StagePrevious)}); err != nil || aws.ToString(out.VersionId) != last {
		t.Errorf("AWSPREVIOUS after the write: %v %v, want %s", err, out, last)
	}
}

func versions(t *testing.T, c *sm.Client, n string) int {
	t.Helper()
	count := 0
	p := sm.NewListSecretVersionIdsPaginator(c, &sm.ListSecretVersionIdsInput{SecretId: aws.String(n), IncludeDeprecated: aws.Bool(true)})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		count += len(out.Versions)
	}
	return count
}

func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
