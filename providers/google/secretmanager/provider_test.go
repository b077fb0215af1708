package secretmanager_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

var owner = providers.Owner{TeamID: "Team A", KeyID: "sk-key-1"}

// clock is a controllable clock shared by the fake and the provider.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newWithClock(t *testing.T, fake *smfake.Server, clk *clock, superseded, destroy time.Duration) *secretmanager.Provider {
	t.Helper()
	fake.SetClock(clk.Now)
	p, err := secretmanager.New(context.Background(), secretmanager.Config{
		Project: project, Endpoint: fake.Addr(), Insecure: true,
		SupersededGrace: superseded, DestroyGrace: destroy, Now: clk.Now,
		ProjectWritesPerMinute: 600000, SecretWritesPerSecond: 1000,
		ReadsPerMinute: 600000, AccessPerMinute: 600000,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func put(t *testing.T, p providers.Provider, name, value, key string) providers.PutResult {
	t.Helper()
	r, err := p.Put(context.Background(), providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: key, Owner: owner})
	if err != nil {
		t.Fatalf("Put %s: %v", value, err)
	}
	return r
}

func states(t *testing.T, fake *smfake.Server, p *secretmanager.Provider, name string) []string {
	t.Helper()
	cl := rawClient(fake)
	defer cl.Close()
	var out []string
	for n := 1; ; n++ {
		v, err := cl.GetSecretVersion(context.Background(), &secretmanagerpb.GetSecretVersionRequest{Name: p.SecretName(name) + "/versions/" + strconv.Itoa(n)})
		if err != nil {
			return out
		}
		out = append(out, v.GetState().String())
	}
}

func TestVersionHygiene(t *testing.T) {
	fake := smfake.Start(t)
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	p := newWithClock(t, fake, clk, 24*time.Hour, 48*time.Hour)
	const name = "team-a/hygiene"
	put(t, p, name, "v1", "e1")
	clk.Advance(time.Hour)
	put(t, p, name, "v2", "e2") // v1 superseded now
	if got := strings.Join(states(t, fake, p, name), ","); got != "ENABLED,ENABLED" {
		t.Fatalf("within the grace: %s", got)
	}
	if _, err := p.Get(context.Background(), name, "1"); err != nil {
		t.Fatalf("superseded version within the grace is not readable: %v", err)
	}
	clk.Advance(25 * time.Hour)
	put(t, p, name, "v3", "e3") // v1 superseded 25h ago: disabled; v2 just now
	if got := strings.Join(states(t, fake, p, name), ","); got != "DISABLED,ENABLED,ENABLED" {
		t.Fatalf("after the grace: %s", got)
	}
	if _, err := p.Get(context.Background(), name, "1"); !errors.Is(err, providers.ErrNotFound) {
		t.Fatalf("Get of a disabled version: %v, want ErrNotFound", err)
	}
	clk.Advance(49 * time.Hour)
	put(t, p, name, "v4", "e4")
	if got := strings.Join(states(t, fake, p, name), ","); got != "DESTROYED,DISABLED,ENABLED,ENABLED" {
		t.Fatalf("after the destroy grace: %s", got)
	}
	vs, err := p.Versions(context.Background(), name)
	if err != nil || len(vs) != 4 || !vs[0].Current || vs[0].Version != "4" || !vs[3].Destroyed || vs[0].IdempotencyKey != "e4" {
		t.Fatalf("Versions = %+v, %v", vs, err)
	}
	if s, err := p.Get(context.Background(), name, ""); err != nil || string(s.Value) != "v4" {
		t.Fatalf("current value: %v %v", s, err)
	}

	// Grace 0 keeps everything.
	keep := newWithClock(t, fake, clk, 0, 0)
	put(t, keep, "keep", "a", "")
	clk.Advance(1000 * time.Hour)
	put(t, keep, "keep", "b", "")
	clk.Advance(1000 * time.Hour)
	put(t, keep, "keep", "c", "")
	if got := strings.Join(states(t, fake, keep, "keep"), ","); got != "ENABLED,ENABLED,ENABLED" {
		t.Fatalf("grace 0: %s", got)
	}
}

func TestDuplicateWritesNothing(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	r1 := put(t, p, "dup", "v", "event-1")
	before := fake.Calls("AddSecretVersion")
	r2 := put(t, p, "dup", "v", "event-1")
	if !r2.Duplicate || r2.Version != r1.Version || fake.Calls("AddSecretVersion") != before {
		t.Fatalf("second Put %+v (first %+v), AddSecretVersion calls %d -> %d", r2, r1, before, fake.Calls("AddSecretVersion"))
	}
	long := strings.Repeat("k", 1000)
	r3 := put(t, p, "dup", "w", long)
	if r4 := put(t, p, "dup", "w", long); !r4.Duplicate || r4.Version != r3.Version {
		t.Fatalf("long key: %+v after %+v", r4, r3)
	}
}

func TestEtagConflicts(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	put(t, p, "etag", "v", "e1")
	// A few conflicts are resolved by re-reading.
	fake.Fail("UpdateSecret", codes.FailedPrecondition, 3, 0)
	if err := p.UpdateTags(ctx, providers.TagRequest{Name: "etag", Owner: owner, Tags: map[string]string{"env": "prod"}}); err != nil {
		t.Fatalf("UpdateTags after 3 conflicts: %v", err)
	}
	if s, err := p.Get(ctx, "etag", ""); err != nil || s.Tags["env"] != "prod" {
		t.Fatalf("tags: %v %v", s, err)
	}
	// Endless conflicts end in a retryable ErrConflict.
	fake.Fail("UpdateSecret", codes.FailedPrecondition, 1000, 0)
	err := p.UpdateTags(ctx, providers.TagRequest{Name: "etag", Owner: owner, Tags: map[string]string{"env": "dev"}})
	if !errors.Is(err, providers.ErrConflict) || !providers.IsRetryable(err) {
		t.Fatalf("UpdateTags under endless conflicts: %v", err)
	}
	fake.Fail("UpdateSecret", codes.FailedPrecondition, 0, 0)
	fake.Fail("DeleteSecret", codes.FailedPrecondition, 1, 0)
	err = p.Delete(ctx, providers.DeleteRequest{Name: "etag", Owner: owner})
	if !errors.Is(err, providers.ErrConflict) || !providers.IsRetryable(err) {
		t.Fatalf("Delete on an etag mismatch: %v", err)
	}
	if err := p.Delete(ctx, providers.DeleteRequest{Name: "etag", Owner: owner}); err != nil {
		t.Fatalf("Delete: %v", err)
	}

	// The fake itself rejects a stale etag.
	cl := rawClient(fake)
	defer cl.Close()
	put(t, p, "stale", "v", "")
	sec, _ := cl.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: p.SecretName("stale")})
	put(t, p, "stale", "w", "e2") // changes the etag (event annotation)
	err = cl.DeleteSecret(ctx, &secretmanagerpb.DeleteSecretRequest{Name: p.SecretName("stale"), Etag: sec.GetEtag()})
	if err == nil || !strings.Contains(err.Error(), "FailedPrecondition") {
		t.Fatalf("DeleteSecret with a stale etag: %v", err)
	}
}

func TestThrottling(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	fake.Fail("AddSecretVersion", codes.ResourceExhausted, 1, 3*time.Second)
	_, err := p.Put(ctx, providers.PutRequest{Name: "thr", Value: []byte("SENTINEL-c0ffee"), Owner: owner})
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Kind != providers.Throttled || pe.RetryAfter != 3*time.Second || !errors.Is(err, providers.ErrThrottled) {
		t.Fatalf("throttled Put: %v", err)
	}
	if strings.Contains(err.Error(), "SENTINEL") {
		t.Fatalf("error holds the value: %v", err)
	}
	fake.Fail("GetSecret", codes.ResourceExhausted, 1, 0)
	if _, err := p.Get(ctx, "thr", ""); providers.RetryAfter(err) != secretmanager.DefaultThrottleRetryAfter {
		t.Fatalf("throttled Get without RetryInfo: %v", err)
	}
	fake.Fail("*", codes.Unavailable, 1, 0)
	if _, err := p.Get(ctx, "thr", ""); !providers.IsRetryable(err) || !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("unavailable: %v", err)
	}
	fake.Fail("*", codes.PermissionDenied, 1, 0)
	if _, err := p.Get(ctx, "thr", ""); providers.IsRetryable(err) || !errors.Is(err, providers.ErrAccessDenied) {
		t.Fatalf("permission denied: %v", err)
	}
}

func TestClientSideLimiter(t *testing.T) {
	fake := smfake.Start(t)
	// 2 writes a second per secret, burst 2.
	p := open(t, fake, map[string]string{secretmanager.OptionSecretWritesPerSecond: "2", secretmanager.OptionProjectWritesPerMinute: "599"})
	start := time.Now()
	for i := range 4 {
		put(t, p, "limited", "v", "e"+string(rune('a'+i)))
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("4 writes to one secret at 2/s took %v", el)
	}
	// A call whose deadline comes before the token fails at once, throttled.
	slow := open(t, fake, map[string]string{secretmanager.OptionSecretWritesPerSecond: "0.25", secretmanager.OptionProjectWritesPerMinute: "598"})
	put(t, slow, "slow", "v", "") // the burst of one
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start = time.Now()
	_, err := slow.Put(ctx, providers.PutRequest{Name: "slow", Value: []byte("SENTINEL-c0ffee"), Owner: owner})
	if !errors.Is(err, providers.ErrThrottled) || providers.RetryAfter(err) < time.Second || time.Since(start) > 900*time.Millisecond {
		t.Fatalf("Put without time for a token: %v (after %v)", err, time.Since(start))
	}
	if strings.Contains(err.Error(), "SENTINEL") {
		t.Fatalf("error holds the value: %v", err)
	}
}

func TestLiteLLMCompatibility(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	cl := rawClient(fake)
	defer cl.Close()
	// keyrelay writes the raw string, as LiteLLM reads it.
	put(t, p, "litellm_key", "sk-1234", "")
	resp, err := cl.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/" + project + "/secrets/litellm_key/versions/latest"})
	if err != nil || string(resp.GetPayload().GetData()) != "sk-1234" {
		t.Fatalf("raw read: %v %v", resp, err)
	}
	// A secret LiteLLM wrote is readable.
	if err := createUnmanaged(ctx, fake, p.SecretName("from_litellm"), []byte("sk-abcd")); err != nil {
		t.Fatal(err)
	}
	if s, err := p.Get(ctx, "from_litellm", ""); err != nil || string(s.Value) != "sk-abcd" || s.Version != "1" {
		t.Fatalf("Get of LiteLLM's secret: %+v %v", s, err)
	}
}

func TestFactoryRejectsBadConfig(t *testing.T) {
	_, err := secretmanager.Factory(context.Background(), providers.Config{Options: map[string]string{}, Getenv: func(string) string { return "" }})
	if err == nil || !strings.Contains(err.Error(), "Config.Project") {
		t.Fatalf("Factory without a project: %v", err)
	}
}

// TestTagChangingPut: a Put that changes an existing secret's tags builds
// each UpdateSecret from the latest secret (the previous UpdateSecret's
// answer, with its new etag), as Google requires: two UpdateSecret calls,
// no etag mismatch and no re-read, and both the new tags and the event id
// are kept.
func TestTagChangingPut(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	put(t, p, "tags", "v1", "e1")
	updates, gets := fake.Calls("UpdateSecret"), fake.Calls("GetSecret")
	_, err := p.Put(ctx, providers.PutRequest{Name: "tags", Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner,
		Tags: map[string]string{"env": "prod"}, Description: "rotated"})
	if err != nil {
		t.Fatal(err)
	}
	if n := fake.Calls("UpdateSecret") - updates; n != 2 {
		t.Errorf("%d UpdateSecret calls for one tag-changing Put, want 2 (tags, then the event id)", n)
	}
	if n := fake.Errors("UpdateSecret", codes.FailedPrecondition); n != 0 {
		t.Errorf("%d UpdateSecret calls failed on a stale etag", n)
	}
	if n := fake.Calls("GetSecret") - gets; n != 1 {
		t.Errorf("%d GetSecret calls, want 1 (no re-read after a conflict)", n)
	}
	s, err := p.Get(ctx, "tags", "")
	if err != nil || s.Tags["env"] != "prod" || string(s.Value) != "v2" {
		t.Fatalf("after the Put: %+v, %v", s, err)
	}
	vs, err := p.Versions(ctx, "tags")
	if err != nil || len(vs) != 2 || vs[0].IdempotencyKey != "e2" || vs[1].IdempotencyKey != "e1" {
		t.Fatalf("versions: %+v, %v", vs, err)
	}
	// A replay is a duplicate: the event id was recorded.
	if r := put(t, p, "tags", "v2", "e2"); !r.Duplicate {
		t.Fatalf("replay: %+v", r)
	}
}
