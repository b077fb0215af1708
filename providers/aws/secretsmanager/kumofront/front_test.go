package kumofront_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"
	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

func name(t *testing.T, s string) string {
	return "kumofront-test/" + uuid.NewString()[:8] + "/" + s
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestTokensAreVersionIds(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "tok")
	tok1, tok2 := uuid.NewString(), uuid.NewString()
	out, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v1"), ClientRequestToken: aws.String(tok1)})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.VersionId) != tok1 {
		t.Errorf("CreateSecret VersionId %q, want the token %q", aws.ToString(out.VersionId), tok1)
	}
	// Same token, same value: nothing happens.
	p, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String("v1"), ClientRequestToken: aws.String(tok1)})
	if err != nil || aws.ToString(p.VersionId) != tok1 {
		t.Fatalf("repeated put: %v %v", p, err)
	}
	// Same token, other value: refused.
	_, err = c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String("other"), ClientRequestToken: aws.String(tok1)})
	if code(err) != "ResourceExistsException" {
		t.Errorf("put with a used token and another value: %v", err)
	}
	if _, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String("v2"), ClientRequestToken: aws.String(tok2)}); err != nil {
		t.Fatal(err)
	}
	l, err := c.ListSecretVersionIds(ctx, &sm.ListSecretVersionIdsInput{SecretId: aws.String(n)})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Versions) != 2 {
		t.Errorf("%d versions, want 2", len(l.Versions))
	}
	_, err = c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("x")})
	if code(err) != "ResourceExistsException" {
		t.Errorf("second CreateSecret: %v", err)
	}
}

func TestStagingLabels(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "stages")
	var ids []string
	for i, v := range []string{"a", "b", "c", "d"} {
		var id *string
		if i == 0 {
			out, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String(v)})
			if err != nil {
				t.Fatal(err)
			}
			id = out.VersionId
		} else {
			out, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String(v)})
			if err != nil {
				t.Fatal(err)
			}
			id = out.VersionId
		}
		ids = append(ids, aws.ToString(id))
	}
	get := func(stage string) string {
		t.Helper()
		out, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n), VersionStage: aws.String(stage)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.SecretString)
	}
	if get("AWSCURRENT") != "d" || get("AWSPREVIOUS") != "c" {
		t.Errorf("current %q previous %q, want d and c", get("AWSCURRENT"), get("AWSPREVIOUS"))
	}
	d, err := c.DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(n)})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.VersionIdsToStages) != 2 {
		t.Errorf("VersionIdsToStages %v, want exactly two labelled versions", d.VersionIdsToStages)
	}
	l, err := c.ListSecretVersionIds(ctx, &sm.ListSecretVersionIdsInput{SecretId: aws.String(n), IncludeDeprecated: aws.Bool(true), MaxResults: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Versions) != 3 || l.NextToken == nil {
		t.Fatalf("first page: %d versions, next %v", len(l.Versions), l.NextToken)
	}
	l2, err := c.ListSecretVersionIds(ctx, &sm.ListSecretVersionIdsInput{SecretId: aws.String(n), IncludeDeprecated: aws.Bool(true), NextToken: l.NextToken})
	if err != nil || len(l2.Versions) != 1 || l2.NextToken != nil {
		t.Fatalf("second page: %v %v", l2, err)
	}
	// Move AWSCURRENT back to the first version.
	_, err = c.UpdateSecretVersionStage(ctx, &sm.UpdateSecretVersionStageInput{SecretId: aws.String(n), VersionStage: aws.String("AWSCURRENT"),
		MoveToVersionId: aws.String(ids[0])})
	if code(err) != "InvalidParameterException" {
		t.Errorf("move without RemoveFromVersionId: %v", err)
	}
	if _, err := c.UpdateSecretVersionStage(ctx, &sm.UpdateSecretVersionStageInput{SecretId: aws.String(n), VersionStage: aws.String("AWSCURRENT"),
		MoveToVersionId: aws.String(ids[0]), RemoveFromVersionId: aws.String(ids[3])}); err != nil {
		t.Fatal(err)
	}
	if get("AWSCURRENT") != "a" || get("AWSPREVIOUS") != "d" {
		t.Errorf("after the move: current %q previous %q", get("AWSCURRENT"), get("AWSPREVIOUS"))
	}
}

func TestSoftDeleteAndRestore(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "del")
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	_, err := c.DeleteSecret(ctx, &sm.DeleteSecretInput{SecretId: aws.String(n), RecoveryWindowInDays: aws.Int64(3)})
	if code(err) != "InvalidParameterException" {
		t.Errorf("window of 3 days: %v", err)
	}
	out, err := c.DeleteSecret(ctx, &sm.DeleteSecretInput{SecretId: aws.String(n), RecoveryWindowInDays: aws.Int64(7)})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(aws.ToTime(out.DeletionDate)); d < 6*24*time.Hour || d > 7*24*time.Hour {
		t.Errorf("deletion in %v, want 7 days", d)
	}
	for what, err := range map[string]error{
		"get": func() error {
			_, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)})
			return err
		}(),
		"put": func() error {
			_, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String("x")})
			return err
		}(),
		"create": func() error {
			_, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("x")})
			return err
		}(),
		"delete": func() error {
			_, err := c.DeleteSecret(ctx, &sm.DeleteSecretInput{SecretId: aws.String(n)})
			return err
		}(),
		"tag": func() error {
			_, err := c.TagResource(ctx, &sm.TagResourceInput{SecretId: aws.String(n), Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
			return err
		}(),
	} {
		if code(err) != "InvalidRequestException" {
			t.Errorf("%s on a deleted secret: %v, want InvalidRequestException", what, err)
		}
	}
	d, err := c.DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(n)})
	if err != nil || d.DeletedDate == nil {
		t.Fatalf("describe deleted: %v %v", d, err)
	}
	if _, err := c.RestoreSecret(ctx, &sm.RestoreSecretInput{SecretId: aws.String(n)}); err != nil {
		t.Fatal(err)
	}
	g, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)})
	if err != nil || aws.ToString(g.SecretString) != "v" {
		t.Fatalf("after restore: %v %v", g, err)
	}
	if _, err := c.DeleteSecret(ctx, &sm.DeleteSecretInput{SecretId: aws.String(n), ForceDeleteWithoutRecovery: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(n)})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("describe after forced delete: %v", err)
	}
}

func TestTags(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "tags")
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v"),
		Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("1")}, {Key: aws.String("b"), Value: aws.String("2")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TagResource(ctx, &sm.TagResourceInput{SecretId: aws.String(n), Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("9")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UntagResource(ctx, &sm.UntagResourceInput{SecretId: aws.String(n), TagKeys: []string{"b"}}); err != nil {
		t.Fatal(err)
	}
	d, err := c.DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(n)})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Tags) != 1 || aws.ToString(d.Tags[0].Key) != "a" || aws.ToString(d.Tags[0].Value) != "9" {
		t.Errorf("tags %v", d.Tags)
	}
	_, err = c.TagResource(ctx, &sm.TagResourceInput{SecretId: aws.String(n), Tags: []types.Tag{{Key: aws.String("bad!"), Value: aws.String("x")}}})
	if code(err) != "ValidationException" {
		t.Errorf("invalid tag: %v", err)
	}
	_, err = c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n + " space"), SecretString: aws.String("v")})
	if code(err) != "ValidationException" {
		t.Errorf("invalid name: %v", err)
	}
}

func TestFaults(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "faults")
	f.Inject(kumofront.Fault{Action: "CreateSecret", Code: "ThrottlingException", Status: 400, Message: "Rate exceeded",
		Header: http.Header{"X-Amz-Retry-After": {"1500"}}, Times: 1})
	_, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")})
	if code(err) != "ThrottlingException" {
		t.Fatalf("injected throttle: %v", err)
	}
	// Lost response: the secret exists although the call failed.
	f.Inject(kumofront.Fault{Action: "CreateSecret", Status: 503, Code: "ServiceUnavailable", AfterForward: true, Times: 1})
	_, err = c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")})
	if code(err) != "ServiceUnavailable" {
		t.Fatalf("lost response: %v", err)
	}
	if _, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)}); err != nil {
		t.Errorf("secret missing after a lost response: %v", err)
	}
	f.Inject(kumofront.Fault{Action: "GetSecretValue", Drop: true, Times: 1})
	_, err = c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)})
	if err == nil || code(err) != "" {
		t.Errorf("dropped connection: %v", err)
	}
	if got := f.Calls("CreateSecret", n); got != 2 {
		t.Errorf("Calls(CreateSecret) = %d, want 2", got)
	}
	for _, r := range f.Requests() {
		if r.AccessKeyID != kumofront.AccessKeyID {
			t.Errorf("request %+v: access key id not recorded", r)
		}
	}
	if !strings.HasPrefix(f.URL, "http://127.0.0.1:") {
		t.Errorf("URL %q", f.URL)
	}
}
