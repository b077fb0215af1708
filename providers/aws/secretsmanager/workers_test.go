package secretsmanager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// TestTwoWorkersNoStaleOverwriteNoDuplicateVersion runs keyrelay's whole
// pipeline in process (a real nats-server, two workers on the shared
// durable consumer, one registry with this provider registered and
// pointed at kumo) and publishes, for many keys: every generation in a
// shuffled order, then older generations re-published under new event ids,
// then exact duplicates re-published after the JetStream dedupe window (so
// the server stores them again). The AWS side also loses responses after
// committing and throttles now and then. In the end every key holds its
// newest value (or is scheduled for deletion when its newest event is a
// delete), and every AWS version is the ClientRequestToken of exactly one
// applied event: no stale overwrite, no second version for any event.
func TestTwoWorkersNoStaleOverwriteNoDuplicateVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	front := kumofront.Start(t)
	// Responses lost after the change took effect, and throttling with
	// the service's hint: the workers must retry into duplicates, never
	// into second versions.
	front.Inject(kumofront.Fault{Action: "PutSecretValue", Status: 503, Code: "ServiceUnavailable", AfterForward: true, Times: 6})
	front.Inject(kumofront.Fault{Action: "CreateSecret", Status: 500, Code: "InternalServiceError", AfterForward: true, Times: 3})
	front.Inject(kumofront.Fault{Action: "PutSecretValue", Status: 400, Code: "ThrottlingException",
		Header: http.Header{"X-Amz-Retry-After": {"20"}}, Times: 4})

	srv := testenv.StartNATS(t)
	_, js := testenv.ConnectJetStream(t, srv.URL)
	topo := worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Second, AckWait: 5 * time.Second, MaxDeliver: 8, MaxAckPending: 256}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	kr, err := events.NewKeyring("k1", map[string][]byte{"k1": bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := settings.Default()
	cfg.KeyManagementSystem = secretsmanager.Name
	opts := front.Options()
	opts["max_attempts"] = "1" // let the workers do the retrying
	cfg.Keyrelay.Providers = map[string]map[string]string{secretsmanager.Name: opts}
	reg := providers.NewRegistry()
	secretsmanager.Register(reg)
	t.Cleanup(func() { reg.Close() })
	metrics := worker.NewMetrics(prometheus.NewRegistry())

	var workers []*worker.Worker
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	for i := range 2 {
		w, err := worker.New(ctx, worker.Config{ID: fmt.Sprintf("w%d", i), Concurrency: 8, AckWait: topo.AckWait, MaxDeliver: topo.MaxDeliver,
			CallTimeout: 2 * time.Second, ClaimLease: 3 * time.Second, RetryInitial: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond,
			ShutdownGrace: 2 * time.Second},
			worker.Deps{JS: js, Settings: cfg, Registry: reg, Opener: kr, Logger: zap.NewNop(), Metrics: metrics,
				Getenv: func(string) string { return "" }})
		if err != nil {
			t.Fatal(err)
		}
		workers = append(workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(runCtx); err != nil {
				t.Errorf("worker: %v", err)
			}
		}()
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	for _, w := range workers {
		for !w.Ready() {
			time.Sleep(5 * time.Millisecond)
		}
	}

	pub := client.NewPublisher(js)
	publish := func(evs ...*events.Event) {
		t.Helper()
		for _, ev := range evs {
			if _, err := pub.Publish(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	value := func(key string, gen uint64) string { return fmt.Sprintf("sk-%s-g%d", key, gen) }
	newEvent := func(typ events.Type, team, key string, gen uint64) *events.Event {
		t.Helper()
		var v []byte
		if typ != events.KeyDeleted {
			v = []byte(value(key, gen))
		}
		ev, err := events.NewKeyEvent(ctx, kr, typ, team, key, gen, v, events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}

	// kumo's store is shared by the test binary: a fresh team per run.
	team := "team-" + uuid.NewString()[:8]
	const keys, gens = 12, 5
	type keyState struct {
		id      string
		newest  uint64
		deleted bool
		events  map[string]*events.Event // every event id published for the key
	}
	var all []*events.Event
	state := map[string]*keyState{}
	for k := range keys {
		ks := &keyState{id: fmt.Sprintf("key-%02d", k), events: map[string]*events.Event{}}
		state[ks.id] = ks
		for g := uint64(1); g <= gens; g++ {
			typ := events.KeyRotated
			if g == 1 {
				typ = events.KeyCreated
			}
			ev := newEvent(typ, team, ks.id, g)
			ks.events[ev.ID], ks.newest = ev, g
			all = append(all, ev)
		}
		if k%4 == 3 {
			// Some keys end deleted.
			ev := newEvent(events.KeyDeleted, team, ks.id, gens+1)
			ks.events[ev.ID], ks.newest, ks.deleted = ev, gens+1, true
			all = append(all, ev)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

	// Phase 1: every generation, shuffled across keys and generations.
	publish(all...)
	waitConfirmations(ctx, t, js, len(all))

	// Phase 2: older generations again, under new event ids (an outbox
	// retry, a replay): all of them are older than what was applied.
	var stale []*events.Event
	for _, ks := range state {
		for _, g := range []uint64{1, 3, gens} {
			typ := events.KeyRotated
			if g == 1 {
				typ = events.KeyCreated
			}
			ev := newEvent(typ, team, ks.id, g)
			if g == gens && !ks.deleted {
				continue // equal to the newest: also superseded, but keep the set simple
			}
			ks.events[ev.ID] = ev
			stale = append(stale, ev)
		}
	}
	publish(stale...)

	// Phase 3: exact duplicates past the dedupe window: the server stores
	// them again and the workers see them again.
	time.Sleep(1200 * time.Millisecond)
	dups := append(append([]*events.Event{}, all[:20]...), stale[:5]...)
	publish(dups...)

	total := len(all) + len(stale)
	confs := waitConfirmations(ctx, t, js, total)
	waitIdle(ctx, t, js)
	confs = waitConfirmations(ctx, t, js, total)
	if len(confs) != total {
		t.Fatalf("%d confirmations, want exactly one per event id (%d)", len(confs), total)
	}
	for _, ev := range stale {
		if c := confs[ev.ID]; c == nil || c.Status != events.StatusSuperseded {
			t.Errorf("stale event %s (%s gen %d): %+v, want superseded", ev.ID, ev.KeyID, ev.Generation, c)
		}
	}
	for id, c := range confs {
		if c.Status == events.StatusFailed || c.Status == events.StatusRejected {
			t.Errorf("event %s: %s (%s)", id, c.Status, c.Reason)
		}
	}

	p := open(t, front, nil)
	sdk := front.Client()
	for _, ks := range state {
		name := "litellm/" + team + "/" + ks.id
		d, err := sdk.DescribeSecret(ctx, &sm.DescribeSecretInput{SecretId: aws.String(name)})
		var nf *types.ResourceNotFoundException
		switch {
		case ks.deleted && errors.As(err, &nf):
			// The delete was applied before any create: nothing was written.
			continue
		case err != nil:
			t.Fatalf("%s: %v", name, err)
		}
		if ks.deleted {
			if d.DeletedDate == nil {
				t.Errorf("%s: not scheduled for deletion; a stale event restored it", ks.id)
			}
		} else {
			s, err := p.Get(ctx, name, "")
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if want := value(ks.id, ks.newest); string(s.Value) != want {
				t.Errorf("%s holds %q, want the newest %q: a stale overwrite", ks.id, s.Value, want)
			}
		}
		// Every version is one applied event's token, and no event made two.
		byToken := map[string]*events.Event{}
		for _, ev := range ks.events {
			byToken[secretsmanager.ClientRequestToken(ev.ID)] = ev
		}
		out, err := sdk.ListSecretVersionIds(ctx, &sm.ListSecretVersionIdsInput{SecretId: aws.String(name), IncludeDeprecated: aws.Bool(true)})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, v := range out.Versions {
			ev := byToken[aws.ToString(v.VersionId)]
			if ev == nil {
				t.Errorf("%s: version %s belongs to no event (a write without the event's token)", ks.id, aws.ToString(v.VersionId))
				continue
			}
			if seen[ev.ID] {
				t.Errorf("%s: event %s made two versions", ks.id, ev.ID)
			}
			seen[ev.ID] = true
			if c := confs[ev.ID]; c == nil || c.Status == events.StatusSuperseded {
				t.Errorf("%s: event %s gen %d was confirmed %+v yet wrote version %s", ks.id, ev.ID, ev.Generation, c, aws.ToString(v.VersionId))
			}
			if c := confs[ev.ID]; c != nil && c.ProviderVersion != aws.ToString(v.VersionId) {
				t.Errorf("%s: confirmation of %s names version %q, AWS has %q", ks.id, ev.ID, c.ProviderVersion, aws.ToString(v.VersionId))
			}
		}
		if len(out.Versions) == 0 || len(out.Versions) > gens {
			t.Errorf("%s: %d versions for %d generations", ks.id, len(out.Versions), gens)
		}
	}
	for i, w := range workers {
		if w.Handled() == 0 {
			t.Errorf("worker %d handled no event: the test did not exercise two workers", i)
		}
	}
	if front.Fired() == 0 {
		t.Error("no fault was injected")
	}
	t.Logf("%d events (%d stale, %d exact duplicates re-published), handled %d+%d, %d AWS requests, %d faults injected",
		total, len(stale), len(dups), workers[0].Handled(), workers[1].Handled(), len(front.Requests()), front.Fired())
}

// waitConfirmations waits until the confirmations stream holds n messages
// and returns them by event id.
func waitConfirmations(ctx context.Context, t *testing.T, js jetstream.JetStream, n int) map[string]*events.Confirmation {
	t.Helper()
	s, err := js.Stream(ctx, worker.ConfirmationsStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(info.State.Msgs) >= n {
			out := map[string]*events.Confirmation{}
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
				m, err := s.GetMsg(ctx, seq)
				if err != nil {
					continue
				}
				var c events.Confirmation
				if err := json.Unmarshal(m.Data, &c); err != nil {
					t.Fatal(err)
				}
				if out[c.EventID] != nil {
					t.Errorf("two confirmations for event %s", c.EventID)
				}
				out[c.EventID] = &c
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d confirmations after 90s, want %d", info.State.Msgs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitIdle waits until the shared consumer has nothing pending or in
// flight.
func waitIdle(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cons, err := js.Consumer(ctx, worker.EventsStream, worker.ConsumerName)
		if err == nil {
			if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("consumer not idle after 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
