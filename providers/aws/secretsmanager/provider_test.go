package secretsmanager_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

var owner = providers.Owner{TeamID: "team-1", KeyID: "key-1"}

// uniq returns a fresh secret name: kumo's store is shared by the whole
// test binary.
func uniq(s string) string { return "sm-test/" + uuid.NewString()[:8] + "/" + s }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, p providers.Provider, name, value, key string) providers.PutResult {
	t.Helper()
	res, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: key, Owner: owner})
	if err != nil {
		t.Fatalf("Put %q: %v", name, err)
	}
	return res
}

// stage reads a staging label with a plain SDK client, as any AWS tool.
func stage(t *testing.T, f *kumofront.Server, name, label string) (string, string) {
	t.Helper()
	out, err := f.Client().GetSecretValue(ctxT(t), &sm.GetSecretValueInput{SecretId: aws.String(name), VersionStage: aws.String(label)})
	if err != nil {
		t.Fatalf("GetSecretValue %s %s: %v", name, label, err)
	}
	return aws.ToString(out.SecretString), aws.ToString(out.VersionId)
}

func versionCount(t *testing.T, p *secretsmanager.Provider, name string) int {
	t.Helper()
	vs, err := p.Versions(ctxT(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return len(vs)
}

func TestRotationKeepsPrevious(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("rotate")
	var res []providers.PutResult
	for i, v := range []string{"sk-1", "sk-2", "sk-3"} {
		key := "event-" + string(rune('a'+i))
		r := mustPut(t, p, name, v, key)
		if r.Version != secretsmanager.ClientRequestToken(key) {
			t.Errorf("version %q, want the ClientRequestToken of the event id %q", r.Version, secretsmanager.ClientRequestToken(key))
		}
		res = append(res, r)
	}
	if v, id := stage(t, f, name, "AWSCURRENT"); v != "sk-3" || id != res[2].Version {
		t.Errorf("AWSCURRENT = %q (%s), want sk-3", v, id)
	}
	if v, id := stage(t, f, name, "AWSPREVIOUS"); v != "sk-2" || id != res[1].Version {
		t.Errorf("AWSPREVIOUS = %q (%s), want sk-2", v, id)
	}
	for i, want := range []string{"sk-1", "sk-2", "sk-3"} {
		s, err := p.Get(ctxT(t), name, res[i].Version)
		if err != nil || string(s.Value) != want || s.Version != res[i].Version {
			t.Errorf("Get version %d: %v %v", i, s, err)
		}
	}
	vs, err := p.Versions(ctxT(t), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].Version != res[0].Version || !vs[2].Current || vs[2].Version != res[2].Version {
		t.Errorf("Versions = %+v, want the three writes oldest first, the last current", vs)
	}
}

func TestDuplicateWritesNothing(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("dup")
	r1 := mustPut(t, p, name, "v1", "e1")
	f.ResetRequests()
	r2 := mustPut(t, p, name, "v1", "e1")
	if !r2.Duplicate || r2.Version != r1.Version {
		t.Errorf("second Put %+v, want Duplicate of %s", r2, r1.Version)
	}
	for _, r := range f.Requests() {
		if r.Action != "DescribeSecret" {
			t.Errorf("a duplicate made a %s call", r.Action)
		}
	}
}

func TestLostResponses(t *testing.T) {
	tests := map[string]struct {
		action   string
		existing bool
	}{
		"create": {action: "CreateSecret"},
		"put":    {action: "PutSecretValue", existing: true},
	}
	for label, tc := range tests {
		t.Run(label, func(t *testing.T) {
			f := kumofront.Start(t)
			p := open(t, f, map[string]string{"max_attempts": "1"})
			name := uniq("lost")
			want := 1
			if tc.existing {
				mustPut(t, p, name, "v0", "e0")
				want = 2
			}
			f.Inject(kumofront.Fault{Action: tc.action, Status: 503, Code: "ServiceUnavailable", AfterForward: true, Times: 1})
			_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("v1"), IdempotencyKey: "e1", Owner: owner})
			if !providers.IsRetryable(err) || !errors.Is(err, providers.ErrUnavailable) {
				t.Fatalf("Put with a lost response: %v, want retryable ErrUnavailable", err)
			}
			r := mustPut(t, p, name, "v1", "e1") // the worker's retry
			if !r.Duplicate || r.Version != secretsmanager.ClientRequestToken("e1") {
				t.Errorf("retry %+v, want a Duplicate of the version the lost call made", r)
			}
			if n := versionCount(t, p, name); n != want {
				t.Errorf("%d versions, want %d", n, want)
			}
		})
	}
}

func TestOlderKeyBecomesCurrentAgain(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("older")
	r1 := mustPut(t, p, name, "v1", "e1")
	mustPut(t, p, name, "v2", "e2")
	r3 := mustPut(t, p, name, "v1", "e1")
	if r3.Version != r1.Version || r3.Duplicate {
		t.Errorf("re-put of an older version: %+v", r3)
	}
	if v, _ := stage(t, f, name, "AWSCURRENT"); v != "v1" {
		t.Errorf("AWSCURRENT = %q, want v1", v)
	}
	if v, _ := stage(t, f, name, "AWSPREVIOUS"); v != "v2" {
		t.Errorf("AWSPREVIOUS = %q, want v2", v)
	}
	if n := versionCount(t, p, name); n != 2 {
		t.Errorf("%d versions, want 2", n)
	}
	// The same key with another value can never succeed.
	_, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("other"), IdempotencyKey: "e2", Owner: owner})
	if !errors.Is(err, providers.ErrInvalid) || providers.IsRetryable(err) {
		t.Errorf("reused key with another value: %v, want permanent ErrInvalid", err)
	}
}

func TestDelete(t *testing.T) {
	tests := map[string]struct {
		opts  map[string]string
		force bool
		days  int
	}{
		"default window": {days: 30},
		"7 days":         {opts: map[string]string{"recovery_window_days": "7"}, days: 7},
		"force":          {force: true},
	}
	for label, tc := range tests {
		t.Run(label, func(t *testing.T) {
			f := kumofront.Start(t)
			p := open(t, f, tc.opts)
			name := uniq("del")
			mustPut(t, p, name, "v", "e1")
			if err := p.Delete(ctxT(t), providers.DeleteRequest{Name: name, Owner: owner, Force: tc.force}); err != nil {
				t.Fatal(err)
			}
			d, err := f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(name)})
			if tc.force {
				var nf *types.ResourceNotFoundException
				if !errors.As(err, &nf) {
					t.Errorf("after a forced delete: %v, want ResourceNotFoundException", err)
				}
				return
			}
			if err != nil || d.DeletedDate == nil {
				t.Fatalf("describe: %v %v", d, err)
			}
			in := time.Until(*d.DeletedDate)
			if want := time.Duration(tc.days) * 24 * time.Hour; in > want || in < want-time.Hour {
				t.Errorf("deletion in %v, want %d days", in, tc.days)
			}
			_, err = p.Get(ctxT(t), name, "")
			if !errors.Is(err, providers.ErrNotFound) {
				t.Errorf("Get of a deleted secret: %v", err)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		p := open(t, kumofront.Start(t), nil)
		for _, force := range []bool{false, true} {
			err := p.Delete(ctxT(t), providers.DeleteRequest{Name: uniq("missing"), Owner: owner, Force: force})
			if !errors.Is(err, providers.ErrNotFound) || providers.IsRetryable(err) {
				t.Errorf("Delete (force=%v) of a missing secret: %v", force, err)
			}
		}
	})
}

// A name scheduled for deletion is restored, not recreated (LiteLLM #10823).
func TestPutRestoresScheduledDeletion(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("restore")
	r1 := mustPut(t, p, name, "v1", "e1")
	if err := p.Delete(ctxT(t), providers.DeleteRequest{Name: name, Owner: owner}); err != nil {
		t.Fatal(err)
	}
	f.ResetRequests()
	r2 := mustPut(t, p, name, "v2", "e2")
	if !r2.Created || r2.Duplicate {
		t.Errorf("Put after delete: %+v, want Created", r2)
	}
	if f.Calls("RestoreSecret", name) != 1 || f.Calls("CreateSecret", name) != 0 {
		t.Errorf("calls: %+v, want one RestoreSecret and no CreateSecret", f.Requests())
	}
	if v, _ := stage(t, f, name, "AWSCURRENT"); v != "v2" {
		t.Errorf("AWSCURRENT = %q", v)
	}
	if v, _ := stage(t, f, name, "AWSPREVIOUS"); v != "v1" {
		t.Errorf("AWSPREVIOUS = %q, want the value from before the delete", v)
	}
	if s, err := p.Get(ctxT(t), name, r1.Version); err != nil || string(s.Value) != "v1" {
		t.Errorf("old version after restore: %v %v", s, err)
	}
}

func TestCreateRequest(t *testing.T) {
	f := kumofront.Start(t)
	rec := &recordingAPI{API: f.Client()}
	cfg, err := secretsmanager.ConfigFromOptions(map[string]string{"kms_key_id": "alias/keyrelay", "replica_regions": "eu-west-1, us-west-2",
		"aws_region_name": "us-east-1"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	p, err := secretsmanager.NewWithAPI(rec, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	name := uniq("create")
	_, err = p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("sk-x"), IdempotencyKey: "evt-1", Owner: owner,
		Description: "LiteLLM virtual key", Tags: map[string]string{"env": "prod", "bad chars!": "a,b", "aws:reserved": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	in := rec.creates[0]
	if aws.ToString(in.ClientRequestToken) != secretsmanager.ClientRequestToken("evt-1") || aws.ToString(in.SecretString) != "sk-x" ||
		aws.ToString(in.KmsKeyId) != "alias/keyrelay" || aws.ToString(in.Description) != "LiteLLM virtual key" || in.SecretBinary != nil {
		t.Errorf("CreateSecret input %+v", in)
	}
	if len(in.AddReplicaRegions) != 2 || aws.ToString(in.AddReplicaRegions[0].Region) != "eu-west-1" {
		t.Errorf("AddReplicaRegions %+v", in.AddReplicaRegions)
	}
	got := map[string]string{}
	for _, tg := range in.Tags {
		got[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	want := map[string]string{"managed-by": "keyrelay", "keyrelay-team": "team-1", "keyrelay-key": "key-1", "env": "prod",
		"bad chars_": "a_b", "x-aws:reserved": "x"}
	if len(got) != len(want) {
		t.Errorf("tags %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("tag %q = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	d, err := f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil || aws.ToString(d.KmsKeyId) != "alias/keyrelay" {
		t.Errorf("stored KmsKeyId: %v %v", d, err)
	}
}

// recordingAPI records CreateSecret inputs on the way to a real client.
type recordingAPI struct {
	secretsmanager.API
	mu      sync.Mutex
	creates []*sm.CreateSecretInput
}

func (r *recordingAPI) CreateSecret(ctx context.Context, in *sm.CreateSecretInput, o ...func(*sm.Options)) (*sm.CreateSecretOutput, error) {
	r.mu.Lock()
	r.creates = append(r.creates, in)
	r.mu.Unlock()
	return r.API.CreateSecret(ctx, in, o...)
}

func TestDescriptionAndTagUpdates(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("meta")
	if _, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: []byte("v"), IdempotencyKey: "e1", Owner: owner,
		Description: "first", Tags: map[string]string{"keyrelay-alias": "a1", "env": "dev"}}); err != nil {
		t.Fatal(err)
	}
	f.ResetRequests()
	if err := p.UpdateTags(ctxT(t), providers.TagRequest{Name: name, Owner: owner, Description: "renamed",
		Tags: map[string]string{"keyrelay-alias": "a2"}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range f.Requests() {
		if r.Action == "PutSecretValue" || r.Action == "CreateSecret" {
			t.Errorf("UpdateTags made a %s call", r.Action)
		}
	}
	d, err := f.Client().DescribeSecret(ctxT(t), &sm.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{}
	for _, tg := range d.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if aws.ToString(d.Description) != "renamed" || tags["keyrelay-alias"] != "a2" || tags["env"] != "" || tags["managed-by"] != "keyrelay" {
		t.Errorf("after UpdateTags: description %q, tags %v", aws.ToString(d.Description), tags)
	}
	if len(d.VersionIdsToStages) != 1 {
		t.Errorf("UpdateTags changed versions: %v", d.VersionIdsToStages)
	}
}

func TestNamesAWSCannotHold(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	base := uniq("names")
	for _, suffix := range []string{"with space", "ünïcödé/ключ", "colon:and,comma", strings.Repeat("x", 700)} {
		name := base + "/" + suffix
		mustPut(t, p, name, "v-"+suffix[:3], "e")
		s, err := p.Get(ctxT(t), name, "")
		if err != nil || s.Name != name || string(s.Value) != "v-"+suffix[:3] {
			t.Errorf("Get %q: %v %v", name, s, err)
		}
	}
	// A name AWS accepts is used unchanged, as LiteLLM would.
	name := base + "/litellm/plain-alias_1"
	mustPut(t, p, name, "plain", "e")
	if v, _ := stage(t, f, name, "AWSCURRENT"); v != "plain" {
		t.Errorf("plain name not stored as is")
	}
}

func TestBinaryValue(t *testing.T) {
	f := kumofront.Start(t)
	p := open(t, f, nil)
	name := uniq("bin")
	v := []byte{0xff, 0x00, 0xfe, 'k'}
	if _, err := p.Put(ctxT(t), providers.PutRequest{Name: name, Value: v, IdempotencyKey: "e", Owner: owner}); err != nil {
		t.Fatal(err)
	}
	out, err := f.Client().GetSecretValue(ctxT(t), &sm.GetSecretValueInput{SecretId: aws.String(name)})
	if err != nil || out.SecretString != nil || string(out.SecretBinary) != string(v) {
		t.Errorf("stored as %+v %v, want SecretBinary", out, err)
	}
}

func TestRateLimit(t *testing.T) {
	f := kumofront.Start(t)
	// The front's URL is unique, so these limiters are this test's.
	opts := map[string]string{"control_tps": "4", "write_tps": "2"}
	p1, p2 := open(t, f, opts), open(t, f, opts)
	start := time.Now()
	// 8 creates at 4/s with a burst of 4, across two instances that share
	// the limiter: the last one waits about a second.
	var wg sync.WaitGroup
	for i := range 8 {
		p := p1
		if i%2 == 1 {
			p = p2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustPut(t, p, uniq("rl"), "v", "e")
		}()
	}
	wg.Wait()
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Errorf("8 creates at 4/s took %v; the limiter is not shared or not applied", d)
	}
	// A deadline shorter than the wait fails at once, before any request.
	name := uniq("rl-deadline")
	mustPut(t, p1, name, "v", "e0") // a create: the control bucket
	for range 3 {
		// Drain the write bucket (2/s, burst 2).
		mustPut(t, p1, name, "v", uuid.NewString())
	}
	f.ResetRequests()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := p1.Put(ctx, providers.PutRequest{Name: name, Value: []byte("w"), IdempotencyKey: "late", Owner: owner})
	if !errors.Is(err, providers.ErrThrottled) || providers.RetryAfter(err) <= 0 {
		t.Fatalf("Put past the limiter's wait: %v (retry after %v), want throttled with a hint", err, providers.RetryAfter(err))
	}
	if f.Calls("PutSecretValue", "") != 0 {
		t.Errorf("a throttled Put reached the server")
	}
}

func TestAssumeRole(t *testing.T) {
	f := kumofront.Start(t)
	// STS calls go to the same front, which passes them to kumo's STS.
	p := open(t, f, map[string]string{"aws_role_name": "arn:aws:iam::111122223333:role/keyrelay-writer",
		"aws_session_name": "keyrelay-test", "aws_sts_endpoint": f.URL})
	name := uniq("role")
	mustPut(t, p, name, "v", "e")
	for _, r := range f.Requests() {
		if r.SecretID == name && !strings.HasPrefix(r.AccessKeyID, "ASIA") {
			t.Errorf("%s signed with %q, want the assumed role's temporary key", r.Action, r.AccessKeyID)
		}
	}
}

func TestCABundle(t *testing.T) {
	f := kumofront.StartTLS(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, f.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	name := uniq("tls")
	p := open(t, f, map[string]string{"ca_bundle": ca})
	mustPut(t, p, name, "v", "e")
	if s, err := p.Get(ctxT(t), name, ""); err != nil || string(s.Value) != "v" {
		t.Fatalf("Get over TLS: %v %v", s, err)
	}
	untrusting := open(t, f, map[string]string{"ca_bundle": "/etc/ssl/certs/ca-certificates.crt"})
	_, err := untrusting.Get(ctxT(t), name, "")
	if err == nil || providers.IsRetryable(err) || !errors.Is(err, providers.ErrInvalid) || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("untrusted certificate: %v, want a permanent TLS error", err)
	}
}

func TestNoCredentials(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	f := kumofront.Start(t)
	p, err := secretsmanager.Factory(ctxT(t), providers.Config{Options: map[string]string{"endpoint": f.URL, "aws_region_name": "us-east-1"},
		Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Get(ctxT(t), uniq("nocreds"), "")
	if !errors.Is(err, providers.ErrAccessDenied) || providers.IsRetryable(err) {
		t.Errorf("no credentials: %v, want permanent ErrAccessDenied", err)
	}
}

func TestFactoryRejectsBadOptions(t *testing.T) {
	tests := map[string]struct {
		opts map[string]string
		want string
	}{
		"window":   {map[string]string{"recovery_window_days": "3"}, "Config.RecoveryWindowDays"},
		"window2":  {map[string]string{"recovery_window_days": "a week"}, "Config.RecoveryWindowDays"},
		"tps":      {map[string]string{"write_tps": "-1"}, "Config.WriteTPS"},
		"tps nan":  {map[string]string{"read_tps": "fast"}, "Config.ReadTPS"},
		"timeout":  {map[string]string{"timeout": "soon"}, "Config.Timeout"},
		"replica":  {map[string]string{"replica_regions": "EU WEST"}, "Config.ReplicaRegions"},
		"replica2": {map[string]string{"replica_regions": "us-east-1", "aws_region_name": "us-east-1"}, "Config.ReplicaRegions"},
		"region":   {map[string]string{"aws_region_name": "Mars"}, "Settings.Region"},
		"role":     {map[string]string{"aws_role_name": "writer"}, "Settings.RoleARN"},
	}
	for label, tc := range tests {
		t.Run(label, func(t *testing.T) {
			_, err := secretsmanager.Factory(context.Background(), providers.Config{Options: tc.opts, Getenv: func(string) string { return "" }})
			var pe *providers.Error
			if !errors.As(err, &pe) || pe.Kind != providers.Permanent || !errors.Is(err, providers.ErrInvalid) {
				t.Fatalf("Factory: %v, want a permanent ErrInvalid *providers.Error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}

func TestConfigFromOptions(t *testing.T) {
	c, err := secretsmanager.ConfigFromOptions(map[string]string{"recovery_window_days": "7", "kms_key_id": "k", "replica_regions": "eu-west-1,,ap-south-1",
		"write_tps": "10", "read_tps": "100.5", "control_tps": "3", "timeout": "5s", "aws_region_name": "us-east-2", "mount": "ignored"},
		func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if c.RecoveryWindowDays != 7 || c.KMSKeyID != "k" || len(c.ReplicaRegions) != 2 || c.WriteTPS != 10 || c.ReadTPS != 100.5 ||
		c.ControlTPS != 3 || c.Timeout != 5*time.Second || c.AWS.Region != "us-east-2" {
		t.Errorf("config %+v", c)
	}
	d, err := secretsmanager.ConfigFromOptions(nil, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if d.RecoveryWindowDays != secretsmanager.DefaultRecoveryWindowDays || d.WriteTPS != secretsmanager.DefaultWriteTPS ||
		d.ReadTPS != secretsmanager.DefaultReadTPS || d.ControlTPS != secretsmanager.DefaultControlTPS || d.Timeout != secretsmanager.DefaultTimeout {
		t.Errorf("defaults %+v", d)
	}
}

func TestClosed(t *testing.T) {
	p := open(t, kumofront.Start(t), nil)
	p.Close()
	_, err := p.Get(ctxT(t), uniq("closed"), "")
	if !errors.Is(err, secretsmanager.ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
}
