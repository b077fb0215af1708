package secretmanager

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/keyrelay/keyrelay/providers"
)

func TestSecretIDHostile(t *testing.T) {
	long := strings.Repeat("a", 300)
	inputs := []string{
		"plain-name_1", "UPPER", "upper", "a/b", "a-b", "a_b", "a.b", "a b", "a\x00b", "a\nb",
		"../../etc/passwd", "ключ", "🔑", "a--" + strings.Repeat("0", 32), long, long + "b",
		strings.Repeat("/", 255), strings.Repeat("x", 255), strings.Repeat("x", 256), "a%2Fb", "a\u202eb",
	}
	seen := map[string]string{}
	for _, in := range inputs {
		id := SecretID(in)
		if id != SecretID(in) {
			t.Errorf("SecretID(%q) is not deterministic", in)
		}
		if !secretIDOK(id) {
			t.Errorf("SecretID(%q) = %q breaks GCP's rules", in, id)
		}
		if secretIDOK(in) && id != in {
			t.Errorf("SecretID(%q) = %q, want the name unchanged", in, id)
		}
		if prev, ok := seen[id]; ok {
			t.Errorf("SecretID(%q) = SecretID(%q) = %q", in, prev, id)
		}
		seen[id] = in
	}
	if SecretID("") == "" || !secretIDOK(SecretID("")) {
		t.Errorf("SecretID(\"\") = %q", SecretID(""))
	}
}

func TestLabels(t *testing.T) {
	for _, in := range []string{"Team-A", "team a", "ключ", strings.Repeat("x", 100), "", "9lives", "ok_label-1", "a.b/c"} {
		v := LabelValue(in)
		if len(v) > 63 || strings.ToLower(v) != v || strings.ContainsFunc(v, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
		}) {
			t.Errorf("LabelValue(%q) = %q breaks GCP's rules", in, v)
		}
		k := LabelKey(in)
		if k == "" || k[0] < 'a' || k[0] > 'z' || len(k) > 63 {
			t.Errorf("LabelKey(%q) = %q breaks GCP's rules", in, k)
		}
	}
	if LabelValue("Team-A") == LabelValue("team-a") {
		t.Error("LabelValue maps Team-A and team-a together")
	}
	if LabelValue("ok_label-1") != "ok_label-1" {
		t.Error("LabelValue changed a valid value")
	}
	l := labelsFor(providers.OwnerTags(providers.Owner{TeamID: "Team A", KeyID: "sk-1"}, map[string]string{"Env": "Prod"}))
	if l["managed-by"] != "keyrelay" || l["keyrelay-key"] != "sk-1" || l["keyrelay-team"] == "" || len(l) != 4 {
		t.Errorf("labelsFor = %v", l)
	}
}

func TestPruneEvents(t *testing.T) {
	a := map[string]string{AnnotationTags: "{}"}
	for n := int64(1); n <= 100; n++ {
		a[eventAnnotation(n)] = "k"
	}
	pruneEvents(a, 100)
	if len(a) != MaxEventAnnotations+1 || a[eventAnnotation(100)] == "" || a[eventAnnotation(100-MaxEventAnnotations)] != "" {
		t.Errorf("after pruning %d annotations remain", len(a))
	}
	if v := eventValue(strings.Repeat("e", 500)); len(v) > maxEventValue || !strings.HasPrefix(v, "sha256:") {
		t.Errorf("eventValue of a long key = %q", v)
	}
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	withRetry := func(d time.Duration) error {
		st, _ := status.New(codes.ResourceExhausted, "Quota exceeded").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st.Err()
	}
	cases := []struct {
		err        error
		kind       providers.Kind
		sentinel   error
		retryAfter time.Duration
	}{
		{status.Error(codes.Unavailable, "x"), providers.Retryable, providers.ErrUnavailable, 0},
		{status.Error(codes.DeadlineExceeded, "x"), providers.Retryable, providers.ErrUnavailable, 0},
		{status.Error(codes.Internal, "x"), providers.Retryable, providers.ErrUnavailable, 0},
		{status.Error(codes.Aborted, "x"), providers.Retryable, providers.ErrConflict, 0},
		{status.Error(codes.ResourceExhausted, "x"), providers.Throttled, providers.ErrThrottled, DefaultThrottleRetryAfter},
		{withRetry(7 * time.Second), providers.Throttled, providers.ErrThrottled, 7 * time.Second},
		{withRetry(time.Hour), providers.Throttled, providers.ErrThrottled, MaxRetryAfter},
		{status.Error(codes.NotFound, "x"), providers.Permanent, providers.ErrNotFound, 0},
		{status.Error(codes.PermissionDenied, "x"), providers.Permanent, providers.ErrAccessDenied, 0},
		{status.Error(codes.Unauthenticated, "x"), providers.Permanent, providers.ErrAccessDenied, 0},
		{status.Error(codes.FailedPrecondition, "The etag provided in the request does not match"), providers.Retryable, providers.ErrConflict, 0},
		{status.Error(codes.FailedPrecondition, "Secret Version is in DISABLED state."), providers.Permanent, providers.ErrInvalid, 0},
		{status.Error(codes.InvalidArgument, "x"), providers.Permanent, providers.ErrInvalid, 0},
		{status.Error(codes.AlreadyExists, "x"), providers.Retryable, providers.ErrConflict, 0},
		{errors.New("dial tcp: connection refused"), providers.Retryable, providers.ErrUnavailable, 0},
	}
	for _, c := range cases {
		err := classify(ctx, "put", "n", "AddSecretVersion", c.err)
		var pe *providers.Error
		if !errors.As(err, &pe) {
			t.Fatalf("classify(%v) = %T", c.err, err)
		}
		if pe.Kind != c.kind || !errors.Is(err, c.sentinel) || pe.RetryAfter != c.retryAfter {
			t.Errorf("classify(%v) = %v (kind %v, retry after %v), want %v %v %v", c.err, err, pe.Kind, pe.RetryAfter, c.kind, c.sentinel, c.retryAfter)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := classify(cctx, "put", "n", "AddSecretVersion", status.Error(codes.Canceled, "x")); !errors.Is(err, context.Canceled) || providers.IsRetryable(err) {
		t.Errorf("cancelled: %v", err)
	}
	// Messages are sanitized: quoted text (which could echo a request) is
	// dropped.
	err := classify(ctx, "put", "n", "X", status.Error(codes.InvalidArgument, `bad payload "SENTINEL-c0ffee"`))
	if strings.Contains(err.Error(), "SENTINEL") {
		t.Errorf("unsanitized: %v", err)
	}
}

func TestConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := ConfigFromOptions(map[string]string{}, env(map[string]string{EnvProject: "litellm-proj"}))
	if err != nil || c.Project != "litellm-proj" || c.Replication != ReplicationAutomatic || c.SupersededGrace != DefaultSupersededGrace ||
		c.ProjectWritesPerMinute != 600 || c.SecretWritesPerSecond != 2 || c.ReadsPerMinute != 600 || c.AccessPerMinute != 90000 ||
		c.quotaWindow != time.Minute {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	c, err = ConfigFromOptions(map[string]string{OptionProject: "team-proj", OptionSupersededGrace: "0"}, env(map[string]string{EnvProject: "litellm-proj"}))
	if err != nil || c.Project != "team-proj" || c.SupersededGrace != 0 {
		t.Fatalf("options: %+v, %v", c, err)
	}
	c, err = ConfigFromOptions(map[string]string{OptionProject: "p", OptionReadsPerMinute: "300", OptionAccessPerMinute: "1000"}, env(nil))
	if err != nil || c.ReadsPerMinute != 300 || c.AccessPerMinute != 1000 {
		t.Fatalf("read and access limits: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		opts  map[string]string
		field string
	}{
		{map[string]string{}, "Config.Project"},
		{map[string]string{OptionProject: "Bad Project"}, "Config.Project"},
		{map[string]string{OptionProject: "p", OptionInsecure: "true"}, "Config.Insecure"},
		{map[string]string{OptionProject: "p", OptionInsecure: "yes please"}, "Config.Insecure"},
		{map[string]string{OptionProject: "p", OptionReplication: "everywhere"}, "Config.Replication"},
		{map[string]string{OptionProject: "p", OptionReplication: "user_managed"}, "Config.Locations"},
		{map[string]string{OptionProject: "p", OptionLocations: "us-east1"}, "Config.Locations"},
		{map[string]string{OptionProject: "p", OptionReplication: "user_managed", OptionLocations: "US East"}, "Config.Locations"},
		{map[string]string{OptionProject: "p", OptionSupersededGrace: "-1h"}, "Config.SupersededGrace"},
		{map[string]string{OptionProject: "p", OptionDestroyGrace: "soon"}, "Config.DestroyGrace"},
		{map[string]string{OptionProject: "p", OptionProjectWritesPerMinute: "-5"}, "Config.ProjectWritesPerMinute"},
		{map[string]string{OptionProject: "p", OptionSecretWritesPerSecond: "NaN"}, "Config.SecretWritesPerSecond"},
		{map[string]string{OptionProject: "p", OptionReadsPerMinute: "-1"}, "Config.ReadsPerMinute"},
		{map[string]string{OptionProject: "p", OptionReadsPerMinute: "0.5"}, "Config.ReadsPerMinute"},
		{map[string]string{OptionProject: "p", OptionAccessPerMinute: "lots"}, "Config.AccessPerMinute"},
		{map[string]string{OptionProject: "p", OptionProjectWritesPerMinute: "0.5"}, "Config.ProjectWritesPerMinute"},
		{map[string]string{OptionProject: "p", OptionEndpoint: "https://x/y"}, "Config.Endpoint"},
	} {
		_, err := ConfigFromOptions(tc.opts, env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("ConfigFromOptions(%v) = %v, want an error naming %s", tc.opts, err, tc.field)
		}
	}
	c, err = ConfigFromOptions(map[string]string{OptionProject: "p", OptionReplication: "user_managed", OptionLocations: "us-east1, europe-west1"}, env(nil))
	if err != nil || len(c.Locations) != 2 {
		t.Errorf("locations: %+v %v", c.Locations, err)
	}
}

func TestRegister(t *testing.T) {
	r := providers.NewRegistry()
	Register(r)
	if got := r.Names(); len(got) != 1 || got[0] != Name {
		t.Fatalf("Names = %v", got)
	}
	for _, k := range []string{OptionProject, OptionReplication, OptionLocations} {
		if !r.TeamOptionAllowed(Name, k) {
			t.Errorf("team option %q not allowed", k)
		}
	}
	for _, k := range []string{OptionEndpoint, OptionInsecure, OptionCABundle, OptionCredentialsFile, OptionProjectWritesPerMinute, OptionSecretWritesPerSecond,
		OptionReadsPerMinute, OptionAccessPerMinute} {
		if r.TeamOptionAllowed(Name, k) {
			t.Errorf("team option %q allowed", k)
		}
	}
}
