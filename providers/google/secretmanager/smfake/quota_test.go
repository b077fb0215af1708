package smfake_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

func TestQuotaBurstIsThrottled(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	ctx := context.Background()
	name := parent + "/secrets/burst"
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "burst", Secret: &secretmanagerpb.Secret{Replication: auto}}); err != nil {
		t.Fatal(err)
	}
	f.EnforceQuotas(map[string]smfake.Quota{smfake.QuotaWrite: {Limit: 5, Window: time.Minute}})

	errs := make([]error, 12)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name,
				Payload: &secretmanagerpb.SecretPayload{Data: []byte(fmt.Sprint(i))}})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
			continue
		}
		wantCode(t, "write over the quota", err, codes.ResourceExhausted)
		st, _ := status.FromError(err)
		if !strings.Contains(st.Message(), "Quota exceeded for quota metric 'Write requests'") || !strings.Contains(st.Message(), "project_number:p") {
			t.Fatalf("message %q", st.Message())
		}
		var info *errdetails.ErrorInfo
		var qf *errdetails.QuotaFailure
		for _, d := range st.Details() {
			switch d := d.(type) {
			case *errdetails.ErrorInfo:
				info = d
			case *errdetails.QuotaFailure:
				qf = d
			case *errdetails.RetryInfo:
				t.Fatalf("a rate quota error carries no RetryInfo: %v", d)
			}
		}
		if info == nil || info.GetReason() != smfake.QuotaReason || info.GetMetadata()["quota_limit_value"] != "5" ||
			info.GetMetadata()["consumer"] != "projects/p" || info.GetMetadata()["service"] != smfake.QuotaService {
			t.Fatalf("ErrorInfo %v", info)
		}
		if qf == nil || len(qf.GetViolations()) != 1 || qf.GetViolations()[0].GetSubject() != "project_number:p" {
			t.Fatalf("QuotaFailure %v", qf)
		}
	}
	if ok != 5 {
		t.Fatalf("%d writes passed, want the quota's 5", ok)
	}
	if got, all := f.Throttled(smfake.QuotaWrite), f.Throttled(""); got != 7 || all != 7 {
		t.Errorf("Throttled(write) %d, Throttled(\"\") %d, want 7", got, all)
	}
	if got := f.Errors("AddSecretVersion", codes.ResourceExhausted); got != 7 {
		t.Errorf("Errors(AddSecretVersion, RESOURCE_EXHAUSTED) %d, want 7", got)
	}
	if got := f.Calls("AddSecretVersion"); got != 5 {
		t.Errorf("Calls(AddSecretVersion) %d, want the 5 admitted", got)
	}
	// A throttled write changed nothing.
	if f.Data(name, 5) == nil || f.Data(name, 6) != nil {
		t.Error("want exactly 5 versions")
	}
	// Reads and accesses have quotas of their own, not enforced here.
	for range 20 {
		if _, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/latest"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	// Another project has a window of its own.
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/other", SecretId: "s", Secret: &secretmanagerpb.Secret{Replication: auto}}); err != nil {
		t.Fatalf("write in another project: %v", err)
	}
	// UpdateSecret names its project in the secret.
	_, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name}})
	wantCode(t, "UpdateSecret over the quota", err, codes.ResourceExhausted)
}

func TestQuotaSlidingWindow(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	ctx := context.Background()
	f.EnforceQuotas(map[string]smfake.Quota{smfake.QuotaRead: {Limit: 4, Window: 400 * time.Millisecond}})
	get := func() error {
		_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: parent + "/secrets/none"})
		if status.Code(err) == codes.NotFound {
			return nil
		}
		return err
	}
	start := time.Now()
	for range 4 {
		if err := get(); err != nil {
			t.Fatal(err)
		}
	}
	if err := get(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("fifth read in the window: %v", err)
	}
	// Throttled calls do not count: once the first four leave the window,
	// four more pass.
	time.Sleep(time.Until(start.Add(450 * time.Millisecond)))
	for i := range 4 {
		if err := get(); err != nil {
			t.Fatalf("read %d of the next window: %v", i, err)
		}
	}
	if got := f.Throttled(smfake.QuotaRead); got != 1 {
		t.Errorf("Throttled(read) %d, want 1", got)
	}
}

func TestQuotaBelowIsNotThrottled(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	ctx := context.Background()
	f.EnforceQuotas(map[string]smfake.Quota{smfake.QuotaWrite: {Limit: 10, Window: time.Second}, smfake.QuotaRead: {Limit: 10, Window: time.Second}})
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "below", Secret: &secretmanagerpb.Secret{Replication: auto}}); err != nil {
		t.Fatal(err)
	}
	// 8 a second: under 10 in any second.
	tick := time.NewTicker(time.Second / 8)
	defer tick.Stop()
	for i := range 16 {
		<-tick.C
		if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: parent + "/secrets/below",
			Payload: &secretmanagerpb.SecretPayload{Data: []byte(fmt.Sprint(i))}}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: parent + "/secrets/below"}); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if got := f.Throttled(""); got != 0 {
		t.Fatalf("%d throttled below the quota", got)
	}
	f.EnforceQuotas(nil)
	for range 30 {
		if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: parent + "/secrets/below"}); err != nil {
			t.Fatalf("read with enforcement off: %v", err)
		}
	}
}
