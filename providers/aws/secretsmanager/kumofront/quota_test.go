package kumofront_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

func TestQuotaOff(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "off")
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	// Far above DefaultQuotas' write rate, and nothing is throttled: the
	// front enforces nothing until EnforceQuotas.
	for i, err := range burst(t, c, n, 60) {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if got := f.Throttled(""); got != 0 {
		t.Fatalf("%d throttled with enforcement off", got)
	}
}

func TestQuotaBurstIsThrottled(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "burst")
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	f.EnforceQuotas(map[string]kumofront.Quota{kumofront.QuotaWrite: {PerSecond: 5}})
	f.ResetRequests()

	errs := burst(t, c, n, 20)
	ok, throttled := 0, 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		throttled++
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" || ae.ErrorMessage() != kumofront.ThrottleMessage {
			t.Fatalf("throttled put: %v, want ThrottlingException %q", err, kumofront.ThrottleMessage)
		}
		var re *smithyhttp.ResponseError
		if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusBadRequest {
			t.Fatalf("throttled put: %v, want HTTP 400", err)
		}
	}
	// A bucket of 5 refilled at 5/s: 5 at once, and at most a couple more
	// while the burst lasts.
	if ok < 5 || ok > 8 || throttled == 0 {
		t.Fatalf("%d writes passed and %d were throttled, want 5 to 8 and the rest throttled", ok, throttled)
	}
	if got, all := f.Throttled(kumofront.QuotaWrite), f.Throttled(""); got != throttled || all != throttled {
		t.Errorf("Throttled(write) %d, Throttled(\"\") %d, want %d", got, all, throttled)
	}
	if got := f.Calls("PutSecretValue", n); got != 20 {
		t.Errorf("%d PutSecretValue requests recorded, want all 20", got)
	}
	// A throttled write changes nothing: one version per write that passed.
	l, err := c.ListSecretVersionIds(ctx, &sm.ListSecretVersionIdsInput{SecretId: aws.String(n), IncludeDeprecated: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Versions) != ok+1 {
		t.Errorf("%d versions, want %d (the create and the writes that passed)", len(l.Versions), ok+1)
	}
	// Other quotas are not enforced, and the write quota refills.
	for range 20 {
		if _, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)}); err != nil {
			t.Fatalf("read with only the write quota enforced: %v", err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String("later")}); err != nil {
		t.Fatalf("write after the bucket refilled: %v", err)
	}
}

func TestQuotaBelowIsNotThrottled(t *testing.T) {
	f := kumofront.Start(t)
	c, ctx := f.Client(), context.Background()
	n := name(t, "below")
	f.EnforceQuotas(kumofront.DefaultQuotas())
	if _, err := c.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(n), SecretString: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	f.EnforceQuotas(map[string]kumofront.Quota{kumofront.QuotaWrite: {PerSecond: 20}, kumofront.QuotaRead: {PerSecond: 20}})
	// 20 writes and 20 reads paced at 15 a second each: under 20/s.
	tick := time.NewTicker(time.Second / 15)
	defer tick.Stop()
	for i := range 20 {
		<-tick.C
		if _, err := c.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(n), SecretString: aws.String(fmt.Sprint(i))}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := c.GetSecretValue(ctx, &sm.GetSecretValueInput{SecretId: aws.String(n)}); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if got := f.Throttled(""); got != 0 {
		t.Fatalf("%d throttled below the quota", got)
	}
}

func TestQuotaPerRegion(t *testing.T) {
	f := kumofront.Start(t)
	ctx := context.Background()
	f.EnforceQuotas(map[string]kumofront.Quota{kumofront.QuotaRandomPassword: {PerSecond: 1, Burst: 2}})
	east := f.Client()
	west := sm.New(sm.Options{Region: "eu-west-1", BaseEndpoint: aws.String(f.URL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(kumofront.AccessKeyID, kumofront.SecretAccessKey, "")})
	call := func(c *sm.Client) error {
		_, err := c.GetRandomPassword(ctx, &sm.GetRandomPasswordInput{})
		return err
	}
	for range 2 {
		if err := call(east); code(err) == "ThrottlingException" {
			t.Fatalf("within the burst: %v", err)
		}
	}
	if err := call(east); code(err) != "ThrottlingException" {
		t.Fatalf("third call in us-east-1: %v, want ThrottlingException", err)
	}
	// eu-west-1 has buckets of its own.
	if err := call(west); code(err) == "ThrottlingException" {
		t.Fatalf("first call in eu-west-1: %v", err)
	}
	if got := f.Throttled(kumofront.QuotaRandomPassword); got != 1 {
		t.Errorf("Throttled(random-password) %d, want 1", got)
	}
}

// burst sends n concurrent PutSecretValue requests to secret id and
// returns their errors.
func burst(t *testing.T, c *sm.Client, id string, n int) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.PutSecretValue(context.Background(), &sm.PutSecretValueInput{SecretId: aws.String(id),
				SecretString: aws.String(fmt.Sprintf("value-%d", i))})
		}()
	}
	wg.Wait()
	return errs
}
