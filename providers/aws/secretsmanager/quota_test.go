package secretsmanager_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	"github.com/keyrelay/keyrelay/providers/providertest"
)

// memQuotas records the quota names, rates and tokens the provider asks for.
type memQuotas = providertest.Quotas

func openWithQuotas(t *testing.T, front *kumofront.Server, q providers.Quotas, extra map[string]string) *secretsmanager.Provider {
	t.Helper()
	opts := front.Options()
	for k, v := range extra {
		opts[k] = v
	}
	p, err := secretsmanager.Factory(context.Background(), providers.Config{Options: opts, Getenv: func(string) string { return "" }, Quotas: q})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(providers.Closer).Close() })
	return p.(*secretsmanager.Provider)
}

// bucketOf is the provider's bucket for each action it sends.
var bucketOf = map[string]string{
	"DescribeSecret": "read", "GetSecretValue": "read",
	"PutSecretValue": "write", "UpdateSecret": "write", "UpdateSecretVersionStage": "write",
	"CreateSecret": "create", "DeleteSecret": "delete", "RestoreSecret": "restore",
	"TagResource": "tag", "UntagResource": "tag", "ListSecretVersionIds": "list", "ListSecrets": "list",
}

// TestQuotasNamesAndTokens: every request the provider sends takes a token
// of its quota from Config.Quotas, named after the endpoint (no role names
// an account) and Region, at the local limiter's rate.
func TestQuotasNamesAndTokens(t *testing.T) {
	f := kumofront.Start(t)
	q := &memQuotas{}
	p := openWithQuotas(t, f, q, map[string]string{secretsmanager.OptionWriteTPS: "40", secretsmanager.OptionControlTPS: "30"})
	ctx := ctxT(t)
	name := uniq("quota-names")
	mustPut(t, p, name, "v1", "e1")
	if _, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner,
		Description: "described", Tags: map[string]string{"env": "test"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(ctx, name, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Versions(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, p, name, "v3", "e3") // restores it

	prefix := "aws_secret_manager/" + strings.TrimPrefix(f.URL, "http://") + "/" + kumofront.Region + "/"
	want := map[string]int{}
	for _, r := range f.Requests() {
		b, ok := bucketOf[r.Action]
		if !ok {
			t.Fatalf("unexpected action %s", r.Action)
		}
		want[prefix+b]++
	}
	for _, n := range q.Names() {
		if _, ok := want[n]; !ok {
			t.Errorf("quota %q taken, no request counts against it", n)
		}
	}
	for n, c := range want {
		if got := q.Tokens(n); got != c {
			t.Errorf("%s: %d tokens for %d requests", n, got, c)
		}
	}
	for _, b := range []string{"read", "write", "create", "delete", "restore", "tag", "list"} {
		if want[prefix+b] == 0 {
			t.Errorf("no %s request made; the test does not cover that bucket", b)
		}
	}
	for b, r := range map[string]float64{"read": secretsmanager.DefaultReadTPS, "write": 40, "create": 30, "tag": 30} {
		if got := q.Rate(prefix + b); got != r {
			t.Errorf("%s asked for %v/s, want the local limiter's %v", b, got, r)
		}
	}
}

// TestQuotasNameTheRoleAccount: a role names the account whose quotas the
// calls use.
func TestQuotasNameTheRoleAccount(t *testing.T) {
	f := kumofront.Start(t)
	q := &memQuotas{}
	p := openWithQuotas(t, f, q, map[string]string{"aws_role_name": "arn:aws:iam::111122223333:role/keyrelay-writer",
		"aws_session_name": "keyrelay-test", "aws_sts_endpoint": f.URL})
	mustPut(t, p, uniq("quota-role"), "v", "e")
	got := q.Names()
	want := []string{"aws_secret_manager/111122223333/us-east-1/create", "aws_secret_manager/111122223333/us-east-1/read"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("quota names %v, want %v", got, want)
	}
}

// TestQuotasThrottled: a quota the call's deadline cannot wait for fails
// the call as Throttled with the quota's wait as RetryAfter, before any
// request.
func TestQuotasThrottled(t *testing.T) {
	f := kumofront.Start(t)
	q := &memQuotas{Fail: func(string) (time.Duration, error) {
		return 3 * time.Second, fmt.Errorf("%w: cluster quota needs 3s", providers.ErrThrottled)
	}}
	p := openWithQuotas(t, f, q, nil)
	_, err := p.Put(ctxT(t), providers.PutRequest{Name: uniq("quota-throttled"), Value: []byte("v"), Owner: owner})
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Kind != providers.Throttled || !errors.Is(err, providers.ErrThrottled) || pe.RetryAfter != 3*time.Second {
		t.Fatalf("Put: %v, want Throttled with RetryAfter 3s", err)
	}
	if n := len(f.Requests()); n != 0 {
		t.Errorf("%d requests sent past an exhausted quota", n)
	}
	// A context that ends while waiting is the context's error.
	q.SetFail(func(string) (time.Duration, error) { return 0, context.Canceled })
	_, err = p.Get(ctxT(t), "x", "")
	if !errors.Is(err, context.Canceled) || errors.Is(err, providers.ErrThrottled) {
		t.Fatalf("Get: %v, want the context's error", err)
	}
}

// TestQuotasKeepABurstUnderTheFrontsQuota: with a local limit far above
// the front's write quota, a burst of concurrent writes is throttled by
// the front; with Quotas limiting below the front's quota, the same burst
// sees no throttled call.
func TestQuotasKeepABurstUnderTheFrontsQuota(t *testing.T) {
	f := kumofront.Start(t)
	const n = 16
	names := make([]string, n)
	seed := openWithQuotas(t, f, nil, nil)
	for i := range names {
		names[i] = uniq(fmt.Sprintf("quota-burst-%d", i))
		mustPut(t, seed, names[i], "v0", "e0")
	}
	burst := func(p *secretsmanager.Provider) {
		var wg sync.WaitGroup
		for _, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte(uuid.NewString()), IdempotencyKey: uuid.NewString(), Owner: owner})
			}()
		}
		wg.Wait()
	}
	fast := map[string]string{secretsmanager.OptionWriteTPS: "1000"}

	q := &memQuotas{Cap: 4}
	f.EnforceQuotas(map[string]kumofront.Quota{kumofront.QuotaWrite: {PerSecond: 5}})
	burst(openWithQuotas(t, f, q, fast))
	if got := f.Throttled(""); got != 0 {
		t.Fatalf("%d calls throttled by the front with Quotas at 4/s under its 5/s", got)
	}
	if got := q.Tokens("aws_secret_manager/" + strings.TrimPrefix(f.URL, "http://") + "/us-east-1/write"); got != n {
		t.Errorf("%d write tokens for %d writes", got, n)
	}

	f.EnforceQuotas(map[string]kumofront.Quota{kumofront.QuotaWrite: {PerSecond: 5}})
	burst(openWithQuotas(t, f, nil, fast))
	if got := f.Throttled(kumofront.QuotaWrite); got == 0 {
		t.Fatal("without Quotas the burst was not throttled: the test shows nothing")
	}
}
