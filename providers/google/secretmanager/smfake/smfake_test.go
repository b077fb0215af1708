package smfake_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"testing"
	"time"

	sm "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

const parent = "projects/p"

func client(t *testing.T, f *smfake.Server) *sm.Client {
	t.Helper()
	c, err := sm.NewClient(context.Background(), option.WithEndpoint(f.Addr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	c.CallOptions = &sm.CallOptions{} // no client retries
	t.Cleanup(func() { c.Close() })
	return c
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

var auto = &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}

func TestSemantics(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	ctx := context.Background()
	name := parent + "/secrets/s1"

	_, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	wantCode(t, "GetSecret missing", err, codes.NotFound)
	_, err = c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte("x")}})
	wantCode(t, "AddSecretVersion missing", err, codes.NotFound)
	_, err = c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "bad/id", Secret: &secretmanagerpb.Secret{Replication: auto}})
	wantCode(t, "CreateSecret bad id", err, codes.InvalidArgument)
	_, err = c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s1", Secret: &secretmanagerpb.Secret{Replication: auto, Labels: map[string]string{"Bad": "x"}}})
	wantCode(t, "CreateSecret bad label", err, codes.InvalidArgument)
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s1", Secret: &secretmanagerpb.Secret{Replication: auto, Labels: map[string]string{"a": "b"}}})
	if err != nil || sec.GetName() != name || sec.GetEtag() == "" {
		t.Fatalf("CreateSecret: %v %v", sec, err)
	}
	_, err = c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "s1", Secret: &secretmanagerpb.Secret{Replication: auto}})
	wantCode(t, "CreateSecret twice", err, codes.AlreadyExists)

	_, err = c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/latest"})
	wantCode(t, "latest without versions", err, codes.NotFound)
	bad := int64(1)
	_, err = c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte("x"), DataCrc32C: &bad}})
	wantCode(t, "bad checksum", err, codes.InvalidArgument)
	for i, v := range []string{"one", "two", "three"} {
		crc := int64(crc32.Checksum([]byte(v), crc32.MakeTable(crc32.Castagnoli)))
		sv, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte(v), DataCrc32C: &crc}})
		if err != nil || sv.GetName() != name+"/versions/"+string(rune('1'+i)) || sv.GetState() != secretmanagerpb.SecretVersion_ENABLED {
			t.Fatalf("AddSecretVersion %d: %v %v", i, sv, err)
		}
	}
	r, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/latest"})
	if err != nil || string(r.GetPayload().GetData()) != "three" || r.GetName() != name+"/versions/3" || r.GetPayload().DataCrc32C == nil {
		t.Fatalf("latest: %v %v", r, err)
	}
	_, err = c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name + "/versions/9"})
	wantCode(t, "missing version", err, codes.NotFound)

	// States: disable, enable, destroy; etags checked.
	v1, _ := c.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: name + "/versions/1"})
	_, err = c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v1.GetName(), Etag: `"stale"`})
	wantCode(t, "disable with a stale etag", err, codes.FailedPrecondition)
	if _, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: v1.GetName(), Etag: v1.GetEtag()}); err != nil {
		t.Fatal(err)
	}
	_, err = c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: v1.GetName()})
	wantCode(t, "access disabled", err, codes.FailedPrecondition)
	if _, err := c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: v1.GetName()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: v1.GetName()}); err != nil {
		t.Fatalf("access re-enabled: %v", err)
	}
	d, err := c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: v1.GetName()})
	if err != nil || d.GetState() != secretmanagerpb.SecretVersion_DESTROYED || d.GetDestroyTime() == nil {
		t.Fatalf("destroy: %v %v", d, err)
	}
	_, err = c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: v1.GetName()})
	wantCode(t, "enable destroyed", err, codes.FailedPrecondition)
	_, err = c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: v1.GetName()})
	wantCode(t, "access destroyed", err, codes.FailedPrecondition)

	// ListSecretVersions: newest first, across pages.
	it := c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: name, PageSize: 2})
	var got []string
	for {
		v, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v.GetName()[len(name)+len("/versions/"):]+v.GetState().String())
	}
	if len(got) != 3 || got[0] != "3ENABLED" || got[2] != "1DESTROYED" {
		t.Fatalf("versions: %v", got)
	}

	// UpdateSecret with etags.
	upd := func(etag string) error {
		_, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
			Secret:     &secretmanagerpb.Secret{Name: name, Etag: etag, Labels: map[string]string{"x": "y"}, Annotations: map[string]string{"k.a": "any value"}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"labels", "annotations"}},
		})
		return err
	}
	wantCode(t, "update with a stale etag", upd(`"stale"`), codes.FailedPrecondition)
	if err := upd(sec.GetEtag()); err != nil {
		t.Fatal(err)
	}
	after, _ := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	if after.GetLabels()["x"] != "y" || after.GetLabels()["a"] != "" || after.GetEtag() == sec.GetEtag() {
		t.Fatalf("after update: %v", after)
	}
	wantCode(t, "delete with a stale etag", c.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name, Etag: sec.GetEtag()}), codes.FailedPrecondition)
	if err := c.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name, Etag: after.GetEtag()}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "delete twice", c.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: name}), codes.NotFound)
}

func TestFaultInjection(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	f.Fail("GetSecret", codes.ResourceExhausted, 1, 2*time.Second)
	_, err := c.GetSecret(context.Background(), &secretmanagerpb.GetSecretRequest{Name: parent + "/secrets/x"})
	wantCode(t, "injected", err, codes.ResourceExhausted)
	st, _ := status.FromError(err)
	var delay time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			delay = ri.GetRetryDelay().AsDuration()
		}
	}
	if delay != 2*time.Second {
		t.Fatalf("RetryInfo missing: %v", err)
	}
	_, err = c.GetSecret(context.Background(), &secretmanagerpb.GetSecretRequest{Name: parent + "/secrets/x"})
	wantCode(t, "after the fault", err, codes.NotFound)
	if f.Calls("GetSecret") != 2 {
		t.Fatalf("calls: %d", f.Calls("GetSecret"))
	}
}

// TestEtagRules: as Google documents for Secret Manager etags, every
// UpdateSecret (a no-op too) gives the secret a new etag, returned in the
// answer; adding a version leaves the secret's etag alone; a stale etag is
// FAILED_PRECONDITION, and the fake counts such answers.
func TestEtagRules(t *testing.T) {
	f := smfake.Start(t)
	c := client(t, f)
	ctx := context.Background()
	name := parent + "/secrets/etags"
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: parent, SecretId: "etags", Secret: &secretmanagerpb.Secret{Replication: auto}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: name, Payload: &secretmanagerpb.SecretPayload{Data: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	got, _ := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	if got.GetEtag() != sec.GetEtag() {
		t.Fatalf("AddSecretVersion changed the secret's etag")
	}
	mask := &fieldmaskpb.FieldMask{Paths: []string{"annotations"}}
	up, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name, Etag: sec.GetEtag()}, UpdateMask: mask})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	if up.GetEtag() == sec.GetEtag() || up.GetEtag() != got.GetEtag() {
		t.Fatalf("no-op update: etag %s -> %s (stored %s)", sec.GetEtag(), up.GetEtag(), got.GetEtag())
	}
	_, err = c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name, Etag: sec.GetEtag()}, UpdateMask: mask})
	wantCode(t, "update with the etag read before the last update", err, codes.FailedPrecondition)
	if _, err := c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{Secret: &secretmanagerpb.Secret{Name: name, Etag: up.GetEtag()}, UpdateMask: mask}); err != nil {
		t.Fatalf("update with the returned etag: %v", err)
	}
	if n := f.Errors("UpdateSecret", codes.FailedPrecondition); n != 1 {
		t.Fatalf("Errors(UpdateSecret, FailedPrecondition) = %d, want 1", n)
	}
}

func TestListSecretsPagesAndFilters(t *testing.T) {
	s := smfake.Start(t)
	cl := client(t, s)
	ctx := context.Background()
	for i, team := range []string{"a", "b", "a", "a", ""} {
		sec := &secretmanagerpb.Secret{Replication: &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}}
		if team != "" {
			sec.Labels = map[string]string{"managed-by": "keyrelay", "keyrelay-team": "team-" + team}
		}
		if _, err := cl.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/p", SecretId: fmt.Sprintf("s%d", i), Secret: sec}); err != nil {
			t.Fatal(err)
		}
	}
	tests := map[string]struct {
		filter    string
		want      []string
		wantCalls int
	}{
		"all":      {"", []string{"s0", "s1", "s2", "s3", "s4"}, 3},
		"managed":  {"labels.managed-by=keyrelay", []string{"s0", "s1", "s2", "s3"}, 2},
		"team":     {`labels.managed-by=keyrelay AND labels.keyrelay-team="team-a"`, []string{"s0", "s2", "s3"}, 2},
		"presence": {"labels.keyrelay-team:*", []string{"s0", "s1", "s2", "s3"}, 2},
		"name":     {"name:s4", []string{"s4"}, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := s.Calls("ListSecrets")
			it := cl.ListSecrets(ctx, &secretmanagerpb.ListSecretsRequest{Parent: "projects/p", PageSize: 2, Filter: tc.filter})
			var got []string
			for {
				sec, err := it.Next()
				if errors.Is(err, iterator.Done) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, sec.GetName()[len("projects/p/secrets/"):])
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if n := s.Calls("ListSecrets") - before; n != tc.wantCalls {
				t.Errorf("%d ListSecrets calls, want %d", n, tc.wantCalls)
			}
		})
	}
	for _, req := range []*secretmanagerpb.ListSecretsRequest{
		{Parent: "projects/p", PageSize: 25001},
		{Parent: "projects/p", Filter: "create_time>2020"},
		{Parent: "projects/p", PageToken: "bogus"},
	} {
		if _, err := cl.ListSecrets(ctx, req).Next(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ListSecrets %v: %v, want InvalidArgument", req, err)
		}
	}
}
