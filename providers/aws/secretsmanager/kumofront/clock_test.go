package kumofront_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// The front refuses a request signed more than SignatureWindow from its
// clock, either way, as Secrets Manager does, and tells its clock in the
// Date header.
func TestSigningTimeChecked(t *testing.T) {
	f := kumofront.Start(t)
	ctx := context.Background()
	n := name(t, "skew")
	if _, err := f.Client().CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	for label, tc := range map[string]struct {
		offset time.Duration
		msg    string
	}{
		"client behind": {20 * time.Minute, "Signature expired: "},
		"client ahead":  {-20 * time.Minute, "Signature not yet current: "},
		"within window": {14 * time.Minute, ""},
	} {
		t.Run(label, func(t *testing.T) {
			f.SetClockOffset(tc.offset)
			defer f.SetClockOffset(0)
			before := f.SkewRejections()
			// A fresh client (one attempt, no skew learnt yet).
			_, err := f.Client().GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)})
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("request signed %v from the server's clock: %v", tc.offset, err)
				}
				return
			}
			var re *smithyhttp.ResponseError
			if code(err) != "InvalidSignatureException" || !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("request signed %v from the server's clock: %v, want HTTP 400 InvalidSignatureException %q", tc.offset, err, tc.msg)
			}
			date, perr := http.ParseTime(re.Response.Header.Get("Date"))
			if perr != nil || date.Sub(time.Now().Add(tc.offset)).Abs() > 5*time.Second {
				t.Errorf("Date %q is not the server's clock", re.Response.Header.Get("Date"))
			}
			if f.SkewRejections() != before+1 {
				t.Errorf("SkewRejections %d, want %d", f.SkewRejections(), before+1)
			}
		})
	}
}

// What the AWS SDK does with the refusal: its retryer measures the skew
// from the response's Date, signs the next attempt with it and keeps it
// for the client's later calls.
func TestSDKCorrectsClockSkew(t *testing.T) {
	f := kumofront.Start(t)
	ctx := context.Background()
	n := name(t, "sdk-skew")
	f.SetClockOffset(time.Hour)
	c := sm.New(sm.Options{Region: kumofront.Region, BaseEndpoint: aws.String(f.URL), RetryMaxAttempts: 3,
		Credentials: credentials.NewStaticCredentialsProvider(kumofront.AccessKeyID, kumofront.SecretAccessKey, "")})
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")}); err != nil {
		t.Fatalf("CreateSecret with a retrying client an hour behind: %v", err)
	}
	if got := f.SkewRejections(); got != 1 {
		t.Errorf("SkewRejections %d, want 1 (the first attempt)", got)
	}
	if _, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)}); err != nil {
		t.Fatal(err)
	}
	if got := f.SkewRejections(); got != 1 {
		t.Errorf("SkewRejections %d after a second call, want still 1 (the client kept the skew)", got)
	}
}
