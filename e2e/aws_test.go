package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
)

// TestPipelineAWSSecretsManager is the core end-to-end flow with AWS
// Secrets Manager as the backend: kumo behind the kumofront handler (in
// this test process), three `keyrelay serve` processes configured as a
// LiteLLM deployment would be (AWS_REGION_NAME and static keys in the
// environment, the endpoint in keyrelay.providers), 100 keys with eight
// generations each, one worker SIGKILLed midway and restarted, exact
// duplicates re-published after the dedupe window and older generations
// under new ids. AWS loses responses after committing and throttles now
// and then. Afterwards every key's AWSCURRENT holds its newest value, every
// AWS version is the ClientRequestToken of one event of that key (so no
// event made two versions), every stored or rotated confirmation names a
// version holding that generation's value, and every event id has exactly
// one confirmation.
func TestPipelineAWSSecretsManager(t *testing.T) {
	if !slices.Contains(app.Registry().Names(), secretsmanager.Name) {
		t.Skipf("provider %q is not registered in internal/app.Registry(): add secretsmanager.Register(r) there", secretsmanager.Name)
	}
	const (
		keys      = 100
		fresh     = 8 // per key: key.created then 7 key.rotated
		dupWindow = 2 * time.Second
	)
	front := kumofront.Start(t)
	front.Inject(kumofront.Fault{Action: "PutSecretValue", Status: 503, Code: "ServiceUnavailable", AfterForward: true, Times: 20})
	front.Inject(kumofront.Fault{Action: "CreateSecret", Status: 500, Code: "InternalServiceError", AfterForward: true, Times: 5})
	front.Inject(kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ThrottlingException",
		Header: http.Header{"X-Amz-Retry-After": {"50"}}, Times: 20})

	// The workers inherit LiteLLM's variables, as a LiteLLM deployment
	// would pass them; nothing of the machine's AWS setup leaks in.
	for _, k := range []string{"AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_REGION",
		"AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_ROLE_NAME", "AWS_PROFILE_NAME", "AWS_WEB_IDENTITY_TOKEN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_REGION_NAME", kumofront.Region)
	t.Setenv("AWS_ACCESS_KEY_ID", kumofront.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", kumofront.SecretAccessKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)

	// kumo's store lives as long as this test binary: a fresh prefix.
	prefix := "e2e-" + uuid.NewString()[:8]
	e := newEnv(t, envOptions{system: secretsmanager.Name, dupWindow: dupWindow, backendYML: fmt.Sprintf(`
    aws_secret_manager:
      endpoint: %s
      max_attempts: "1"
      write_tps: "1000"
      control_tps: "1000"`, front.URL)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	w := []*proc{e.startWorker("w1"), e.startWorker("w2"), e.startWorker("w3")}

	pub := client.NewPublisher(e.js)
	rng := rand.New(rand.NewPCG(5, 6))
	publishAll := func(evs []*events.Event) {
		futs := make([]jetstream.PubAckFuture, 0, len(evs))
		for _, ev := range evs {
			f, err := pub.PublishAsync(ev)
			if err != nil {
				t.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish: %v", err)
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
	teamOf := func(k int) string { return fmt.Sprintf("%s-team-%d", prefix, k%5) }
	keyOf := func(k int) string { return fmt.Sprintf("key-%03d", k) }
	mk := func(k int, gen uint64) *events.Event {
		typ := events.KeyRotated
		if gen == 1 {
			typ = events.KeyCreated
		}
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, teamOf(k), keyOf(k), gen, []byte(value(teamOf(k), keyOf(k), gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}

	all := map[string]*events.Event{} // every distinct event id
	var phase1 []*events.Event
	raw := map[string][]byte{}
	for g := uint64(1); g <= fresh; g++ {
		for _, k := range rng.Perm(keys) {
			ev := mk(k, g)
			phase1 = append(phase1, ev)
			all[ev.ID] = ev
			raw[ev.ID], _ = json.Marshal(ev)
		}
	}
	start := time.Now()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for {
			s, err := e.js.Stream(ctx, "KEYRELAY_CONFIRMATIONS")
			if err == nil {
				if info, err := s.Info(ctx); err == nil && info.State.Msgs >= keys*fresh/3 {
					break
				}
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		w[1].stop(syscall.SIGKILL)
		t.Logf("SIGKILLed w2 at %v", time.Since(start).Round(time.Millisecond))
		time.Sleep(500 * time.Millisecond)
		w[1] = e.startWorker("w2-restarted")
	}()
	publishAll(phase1)

	// Exact duplicates after the dedupe window: stored again by the server.
	time.Sleep(dupWindow + 500*time.Millisecond)
	for i := 0; i < keys; i++ {
		orig := phase1[rng.IntN(len(phase1))]
		m := &nats.Msg{Subject: orig.Subject(), Data: raw[orig.ID], Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, orig.ID)
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Older generations under new ids.
	var phase2 []*events.Event
	for i := 0; i < keys; i++ {
		ev := mk(rng.IntN(keys), uint64(1+rng.IntN(fresh-1)))
		phase2 = append(phase2, ev)
		all[ev.ID] = ev
	}
	publishAll(phase2)

	<-killed
	e.waitQuiet(ctx, len(all), 4*time.Minute)
	elapsed := time.Since(start)

	confByID := map[string]*events.Confirmation{}
	for _, c := range e.confirmations(ctx) {
		if confByID[c.EventID] != nil {
			t.Errorf("event %s has two confirmations", c.EventID)
		}
		confByID[c.EventID] = c
	}
	statuses := map[events.Status]int{}
	for id := range all {
		c := confByID[id]
		if c == nil {
			t.Errorf("event %s has no confirmation", id)
			continue
		}
		statuses[c.Status]++
		if c.Status == events.StatusFailed || c.Status == events.StatusRejected {
			t.Errorf("event %s: %s (%s)", id, c.Status, c.Reason)
		}
	}

	p, err := secretsmanager.Factory(ctx, providers.Config{Options: front.Options(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	sdk := front.Client()
	eventsOf := map[string][]*events.Event{}
	for _, ev := range all {
		eventsOf[ev.TeamID+"/"+ev.KeyID] = append(eventsOf[ev.TeamID+"/"+ev.KeyID], ev)
	}
	versionsTotal, writtenThenSuperseded := 0, 0
	for k := 0; k < keys; k++ {
		team, key := teamOf(k), keyOf(k)
		name := "litellm/" + team + "/" + key
		cur, err := p.Get(ctx, name, "")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if string(cur.Value) != value(team, key, fresh) {
			t.Errorf("%s: AWSCURRENT holds %q, want generation %d", name, cur.Value, fresh)
		}
		if !providers.IsOwnedBy(cur.Tags, providers.Owner{TeamID: team, KeyID: key}) {
			t.Errorf("%s: tags %v", name, cur.Tags)
		}
		byToken := map[string]*events.Event{}
		for _, ev := range eventsOf[team+"/"+key] {
			byToken[secretsmanager.ClientRequestToken(ev.ID)] = ev
		}
		out, err := sdk.ListSecretVersionIds(ctx, &sm.ListSecretVersionIdsInput{SecretId: aws.String(name), IncludeDeprecated: aws.Bool(true)})
		if err != nil {
			t.Fatal(err)
		}
		versionsTotal += len(out.Versions)
		have := map[string]bool{}
		for _, v := range out.Versions {
			id := aws.ToString(v.VersionId)
			have[id] = true
			ev := byToken[id]
			if ev == nil {
				t.Errorf("%s: version %s is no event's token: a write without the event's ClientRequestToken", name, id)
				continue
			}
			if c := confByID[ev.ID]; c != nil && c.Status == events.StatusSuperseded {
				// A worker killed after the write and before the ledger
				// commit, its key then taken over by a newer generation.
				writtenThenSuperseded++
			}
		}
		for _, ev := range eventsOf[team+"/"+key] {
			c := confByID[ev.ID]
			if c == nil || (c.Status != events.StatusStored && c.Status != events.StatusRotated) {
				continue
			}
			if !have[c.ProviderVersion] {
				t.Errorf("%s: %s confirmed version %q, which AWS does not have", name, ev.ID, c.ProviderVersion)
				continue
			}
			s, err := p.Get(ctx, name, c.ProviderVersion)
			if err != nil || string(s.Value) != value(team, key, ev.Generation) {
				t.Errorf("%s: version %s of generation %d: %v %v", name, c.ProviderVersion, ev.Generation, s, err)
			}
		}
	}
	t.Logf("%d events (%d distinct) in %v, statuses %v, %d AWS versions for %d keys (%d written then superseded by a kill), %d faults injected, %d AWS requests",
		len(phase1)+keys+len(phase2), len(all), elapsed.Round(time.Millisecond), statuses, versionsTotal, keys, writtenThenSuperseded,
		front.Fired(), len(front.Requests()))
	if front.Fired() == 0 {
		t.Error("no fault was injected")
	}
}
