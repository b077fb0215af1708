package kvfake_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
)

type tokenCred string

func (c tokenCred) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(c), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// sdkClient is the official client on s, without retries.
func sdkClient(t *testing.T, s *kvfake.Server) *azsecrets.Client {
	t.Helper()
	s.Token = "tok"
	c, err := azsecrets.NewClient(s.URL, tokenCred("tok"), &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: s.Client(), Retry: policy.RetryOptions{MaxRetries: -1}},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func setSecret(c *azsecrets.Client, name, value string) error {
	_, err := c.SetSecret(context.Background(), name, azsecrets.SetSecretParameters{Value: &value}, nil)
	return err
}

func TestQuotaBurstIsThrottled(t *testing.T) {
	s := kvfake.New()
	defer s.Close()
	c := sdkClient(t, s)
	s.EnforceQuotas(map[string]kvfake.Quota{kvfake.QuotaSecretCreate: {Limit: 5, Window: time.Minute}})

	errs := make([]error, 12)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = setSecret(c, fmt.Sprintf("burst-%d", i), "v")
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests || re.ErrorCode != "Throttled" {
			t.Fatalf("write over the limit: %v, want 429 Throttled", err)
		}
		ra, aerr := strconv.Atoi(re.RawResponse.Header.Get("Retry-After"))
		if aerr != nil || ra < 1 || ra > 60 {
			t.Fatalf("Retry-After %q, want 1..60 seconds", re.RawResponse.Header.Get("Retry-After"))
		}
	}
	if ok != 5 {
		t.Fatalf("%d writes passed, want the limit's 5", ok)
	}
	if got, all := s.Throttled(kvfake.QuotaSecretCreate), s.Throttled(""); got != 7 || all != 7 {
		t.Errorf("Throttled(secret-create) %d, Throttled(\"\") %d, want 7", got, all)
	}
	if got := s.Transactions(kvfake.QuotaSecretCreate); got != 5 {
		t.Errorf("Transactions(secret-create) %d, want the 5 admitted", got)
	}
	if got := len(s.Names()); got != 5 {
		t.Errorf("%d secrets stored, want 5: a throttled write changes nothing", got)
	}
	// Reads count against the other limit, not enforced here.
	for range 20 {
		_, err := c.GetSecret(context.Background(), "burst-none", "", nil)
		var re *azcore.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
			t.Fatalf("read: %v, want 404", err)
		}
	}
	if got := s.Transactions(kvfake.QuotaOther); got != 20 {
		t.Errorf("Transactions(other) %d, want 20", got)
	}
}

func TestQuotaSlidingWindow(t *testing.T) {
	s := kvfake.New()
	defer s.Close()
	c := sdkClient(t, s)
	s.EnforceQuotas(map[string]kvfake.Quota{kvfake.QuotaSecretCreate: {Limit: 3, Window: 500 * time.Millisecond}})
	for i := range 3 {
		if err := setSecret(c, "win", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	// All three are in the window from here on (measured after the last
	// one, not before the first, so that a slow machine cannot make the
	// window end later than the test expects).
	filled := time.Now()
	err := setSecret(c, "win", "over")
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests || re.RawResponse.Header.Get("Retry-After") != "1" {
		t.Fatalf("fourth write in the window: %v, want 429 with Retry-After 1", err)
	}
	// The throttled write did not count: once the first three leave the
	// window, three more pass.
	time.Sleep(time.Until(filled.Add(550 * time.Millisecond)))
	for i := range 3 {
		if err := setSecret(c, "win", "next"+strconv.Itoa(i)); err != nil {
			t.Fatalf("write %d of the next window: %v", i, err)
		}
	}
	if _, n := s.SecretState("win"); n != 6 {
		t.Errorf("%d versions, want 6", n)
	}
}

func TestQuotaBelowIsNotThrottled(t *testing.T) {
	s := kvfake.New()
	defer s.Close()
	c := sdkClient(t, s)
	s.EnforceQuotas(map[string]kvfake.Quota{kvfake.QuotaSecretCreate: {Limit: 10, Window: time.Second}, kvfake.QuotaOther: {Limit: 10, Window: time.Second}})
	// 8 a second: under 10 in any second.
	tick := time.NewTicker(time.Second / 8)
	defer tick.Stop()
	for i := range 16 {
		<-tick.C
		if err := setSecret(c, "below", strconv.Itoa(i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := c.GetSecret(context.Background(), "below", "", nil); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if got := s.Throttled(""); got != 0 {
		t.Fatalf("%d throttled below the limit", got)
	}
	s.EnforceQuotas(nil)
	for i := range 30 {
		if err := setSecret(c, "below", "off"+strconv.Itoa(i)); err != nil {
			t.Fatalf("write with enforcement off: %v", err)
		}
	}
}
