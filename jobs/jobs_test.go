package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

type env struct {
	ctx   context.Context
	js    jetstream.JetStream
	kr    *events.Keyring
	store *local.Provider
	deps  jobs.Deps
}

// newEnv starts a nats-server, the topology, one worker writing to an
// in-memory local store, and the job store.
func newEnv(t *testing.T) *env { return newEnvWith(t, 0) }

// newEnvWith is newEnv with every provider write taking latency.
func newEnvWith(t *testing.T, latency time.Duration) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	_, js := testenv.StartJetStream(t)
	nc := js.Conn()
	topo := worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute, AckWait: 5 * time.Second, MaxAckPending: 1024}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	kr, err := events.NewKeyring("j1", map[string][]byte{"j1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	store, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	reg := providers.NewRegistry()
	var p providers.Provider = store
	if latency > 0 {
		p = slowPut{store, latency}
	}
	reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return p, nil })
	w, err := worker.New(ctx, worker.Config{Concurrency: 16, AckWait: topo.AckWait, CallTimeout: time.Second, ClaimLease: 3 * time.Second},
		worker.Deps{JS: js, Settings: settings.Default(), Registry: reg, Opener: kr})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	st, err := jobs.EnsureStore(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	lkv, _ := js.KeyValue(ctx, worker.LedgerBucket)
	return &env{ctx: ctx, js: js, kr: kr, store: store,
		deps: jobs.Deps{JS: js, Ledger: worker.NewLedger(lkv, nc), Store: st, Sealer: kr}}
}

// slowPut delays every write by d.
type slowPut struct {
	providers.Provider
	d time.Duration
}

func (s slowPut) Put(ctx context.Context, r providers.PutRequest) (providers.PutResult, error) {
	select {
	case <-time.After(s.d):
	case <-ctx.Done():
		return providers.PutResult{}, ctx.Err()
	}
	return s.Provider.Put(ctx, r)
}

func (s slowPut) Unwrap() providers.Provider { return s.Provider }

// create publishes key.created for n keys of team and waits until the
// ledger has them all.
func (e *env) create(t *testing.T, team string, n int) {
	t.Helper()
	pub := client.NewPublisher(e.js)
	for i := 0; i < n; i++ {
		ev, err := events.NewKeyEvent(e.ctx, e.kr, events.KeyCreated, team, fmt.Sprintf("key-%03d", i), 1, []byte("sk-initial"), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(e.ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		for {
			le, _, err := e.deps.Ledger.Get(e.ctx, team, fmt.Sprintf("key-%03d", i))
			if err != nil {
				t.Fatal(err)
			}
			if le != nil && le.Generation == 1 && le.Claim == nil {
				break
			}
			if e.ctx.Err() != nil {
				t.Fatalf("key-%03d never stored", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// waitDone polls the job's status until every event is confirmed.
func (e *env) waitDone(t *testing.T, id string) *jobs.Status {
	t.Helper()
	for {
		st, err := jobs.GetStatus(e.ctx, e.js, e.deps.Store, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Done() {
			return st
		}
		if e.ctx.Err() != nil {
			t.Fatalf("job %s never finished: %+v", id, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJobKilledAndResumedRotatesEachKeyOnce: a 5,000-key job stopped
// after 2,500 events, its saved cursor then set back 500 events (a crash
// before the last save), and resumed: every key is rotated exactly once
// (one new version, the plan's event and generation in the ledger), one
// confirmation per event carrying the job id, `jobs status` exact at every
// point it is read (between the confirmations stored just before and just
// after), and no value in the job's record, plan or confirmations.
func TestJobKilledAndResumedRotatesEachKeyOnce(t *testing.T) {
	e := newEnv(t)
	const n, killAt, back = 5000, 2500, 500
	e.create(t, "team-j", n)
	e.create(t, "team-other", 5)

	j, plan, err := jobs.Plan(e.ctx, e.deps, jobs.Spec{Selection: jobs.Selection{Teams: []string{"team-j"}}, Rate: 600})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != n {
		t.Fatalf("planned %d keys, want %d (team-other is out of scope)", len(plan), n)
	}
	if err := e.deps.Store.Create(e.ctx, j, plan); err != nil {
		t.Fatal(err)
	}
	ctx, kill := context.WithCancel(e.ctx)
	_, err = jobs.Run(ctx, e.deps, j.ID, func(p jobs.Progress) {
		if p.Published == killAt {
			kill()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("killed run: %v, want context.Canceled", err)
	}
	// The cursor as a crash would have left it: behind what was published.
	kv, _ := e.js.KeyValue(e.ctx, jobs.Bucket)
	rec, _ := kv.Get(e.ctx, "job."+j.ID)
	var saved jobs.Job
	_ = json.Unmarshal(rec.Value(), &saved)
	if saved.Cursor != killAt || saved.State != jobs.StateRunning {
		t.Fatalf("saved after the kill: cursor %d state %s, want %d running", saved.Cursor, saved.State, killAt)
	}
	saved.Cursor = killAt - back
	b, _ := json.Marshal(saved)
	if _, err := kv.Update(e.ctx, "job."+j.ID, b, rec.Revision()); err != nil {
		t.Fatal(err)
	}
	mid, err := jobs.GetStatus(e.ctx, e.js, e.deps.Store, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mid.Rotated+mid.Remaining != n || mid.Rotated > killAt || mid.Failed != 0 {
		t.Errorf("status while stopped: %+v", mid)
	}
	// Status while the resumed job runs: between the job's confirmations
	// stored before it was read and those stored after.
	conf, _ := e.js.Stream(e.ctx, worker.ConfirmationsStream)
	jobConfs := func() int {
		info, err := conf.Info(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return int(info.State.Msgs) - (n + 5) // the creations
	}
	sampled := make(chan int)
	stopSampling := make(chan struct{})
	var reads atomic.Int32 // status reads finished so far
	go func() {
		samples, last := 0, -1
		defer func() { sampled <- samples }()
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			before := jobConfs()
			st, err := jobs.GetStatus(e.ctx, e.js, e.deps.Store, j.ID)
			after := jobConfs()
			if err != nil {
				t.Error(err)
				return
			}
			if st.Rotated < before || st.Rotated > after || st.Rotated < last ||
				st.Rotated+st.Superseded+st.Failed+st.Remaining != n || st.Failed != 0 || st.Superseded != 0 {
				t.Errorf("status while running: rotated %d (confirmations before %d, after %d, last status %d), superseded %d, failed %d, remaining %d",
					st.Rotated, before, after, last, st.Superseded, st.Failed, st.Remaining)
				return
			}
			last = st.Rotated
			samples++
			reads.Add(1)
			if st.Done() {
				return
			}
		}
	}()
	// Halfway through, the job waits for two status reads: on a loaded
	// machine one read (race detector, 5,000 keys) can take as long as the
	// whole resumed run, and the reads must happen while it runs.
	done, err := jobs.Run(e.ctx, e.deps, j.ID, func(p jobs.Progress) {
		if p.Published == (killAt-back+n)/2 {
			for reads.Load() < 2 && e.ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if done.State != jobs.StatePublished || done.Cursor != n {
		t.Fatalf("after the resume: %+v", done)
	}
	st := e.waitDone(t, j.ID)
	close(stopSampling)
	if k := <-sampled; k < 2 {
		t.Errorf("status read %d times while the job ran, want several", k)
	} else {
		t.Logf("status exact at each of %d reads while the job ran", k)
	}
	if st.Rotated != n || st.Failed != 0 || st.Superseded != 0 || st.Remaining != 0 {
		t.Fatalf("status: rotated %d superseded %d failed %d remaining %d", st.Rotated, st.Superseded, st.Failed, st.Remaining)
	}

	var values []string
	for _, tg := range plan {
		le, _, _ := e.deps.Ledger.Get(e.ctx, tg.Team, tg.Key)
		if le.EventID != tg.EventID || le.Generation != tg.Generation || le.Status != events.StatusRotated {
			t.Errorf("%s: ledger at %s gen %d (%s), want the plan's %s gen %d", tg.Key, le.EventID, le.Generation, le.Status, tg.EventID, tg.Generation)
		}
		name := "litellm/" + tg.Team + "/" + tg.Key
		vs, err := e.store.Versions(e.ctx, name)
		if err != nil || len(vs) != 2 {
			t.Errorf("%s: %d versions (%v), want 2: created, rotated once", tg.Key, len(vs), err)
		}
		sec, err := e.store.Get(e.ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		v := string(sec.Value)
		if !strings.HasPrefix(v, "sk-") || len(v) != 3+22 {
			t.Errorf("%s: generated value of %d bytes, want sk- and 22 base64url characters", tg.Key, len(v))
		}
		values = append(values, v)
		m, err := conf.GetLastMsgForSubject(e.ctx, events.ConfirmationSubject(tg.Team, tg.Key, tg.EventID))
		if err != nil {
			t.Fatal(err)
		}
		var c events.Confirmation
		_ = json.Unmarshal(m.Data, &c)
		if c.JobID != j.ID {
			t.Errorf("%s: confirmation job_id %q, want %q", tg.Key, c.JobID, j.ID)
		}
	}
	// No value anywhere in the job's state or its confirmations.
	planBytes, _ := e.deps.Store.OS.GetBytes(e.ctx, j.ID)
	rec, _ = kv.Get(e.ctx, "job."+j.ID)
	all := string(planBytes) + string(rec.Value())
	info, _ := conf.Info(e.ctx)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		if m, err := conf.GetMsg(e.ctx, seq); err == nil {
			all += string(m.Data)
		}
	}
	generated := map[string]bool{}
	for _, v := range values {
		generated[v] = true
	}
	for _, m := range regexp.MustCompile(`sk-[A-Za-z0-9_-]{22}`).FindAllString(all, -1) {
		if generated[m] {
			t.Fatal("a generated value appears in the job's record, plan or confirmations")
		}
	}
	// The other team was not touched.
	if le, _, _ := e.deps.Ledger.Get(e.ctx, "team-other", "key-000"); le.Generation != 1 {
		t.Errorf("team-other rotated: %+v", le)
	}
	if _, err := jobs.Run(e.ctx, e.deps, j.ID, nil); err == nil {
		t.Error("a published job ran again")
	}
}

// TestJobCancel: a cancelled job stops publishing within a save period;
// what it published is still applied, the rest never is.
func TestJobCancel(t *testing.T) {
	e := newEnv(t)
	e.create(t, "team-c", 40)
	j, plan, err := jobs.Plan(e.ctx, e.deps, jobs.Spec{Selection: jobs.Selection{All: true}, Rate: 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.deps.Store.Create(e.ctx, j, plan); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		if _, err := e.deps.Store.Cancel(e.ctx, j.ID); err != nil {
			t.Error(err)
		}
	}()
	got, err := jobs.Run(e.ctx, e.deps, j.ID, nil)
	if !errors.Is(err, jobs.ErrCancelled) {
		t.Fatalf("run: %v, want ErrCancelled", err)
	}
	if got.Cursor >= len(plan) || got.Cursor == 0 {
		t.Fatalf("cancelled at cursor %d of %d", got.Cursor, len(plan))
	}
	st := e.waitDone(t, j.ID)
	if st.Job.State != jobs.StateCancelled || st.Rotated < got.Cursor || st.Rotated+st.Remaining != len(plan) {
		t.Errorf("status after the cancel: %+v (published %d)", st, got.Cursor)
	}
	time.Sleep(300 * time.Millisecond)
	if last, _, _ := e.deps.Ledger.Get(e.ctx, "team-c", plan[len(plan)-1].Key); last.Generation != 1 {
		t.Errorf("a key after the cancel was rotated: %+v", last)
	}
	if _, err := jobs.Run(e.ctx, e.deps, j.ID, nil); err == nil {
		t.Error("a cancelled job ran again")
	}
}

// TestSelection: teams, backend, age and a keys list narrow the plan;
// deleted keys are never selected; generations order after the ledger's.
func TestSelection(t *testing.T) {
	e := newEnv(t)
	e.create(t, "team-s", 6)
	pub := client.NewPublisher(e.js)
	del, _ := events.NewKeyEvent(e.ctx, e.kr, events.KeyDeleted, "team-s", "key-005", 2, nil, events.KeyData{})
	if _, err := pub.Publish(e.ctx, del); err != nil {
		t.Fatal(err)
	}
	for {
		if le, _, _ := e.deps.Ledger.Get(e.ctx, "team-s", "key-005"); le.Status == events.StatusDeleted {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	now := time.Now()
	cases := map[string]struct {
		sel  jobs.Selection
		now  time.Time
		want int
	}{
		"team":                  {jobs.Selection{Teams: []string{"team-s"}}, now, 5},
		"all":                   {jobs.Selection{All: true}, now, 5},
		"another backend":       {jobs.Selection{All: true, Backend: "aws_secret_manager"}, now, 0},
		"its backend":           {jobs.Selection{All: true, Backend: "local"}, now, 5},
		"older than 90d, fresh": {jobs.Selection{All: true, OlderThan: 90 * 24 * time.Hour}, now, 0},
		"older than 90d, later": {jobs.Selection{All: true, OlderThan: 90 * 24 * time.Hour}, now.Add(91 * 24 * time.Hour), 5},
		"keys file":             {jobs.Selection{Keys: []jobs.TeamKey{{"team-s", "key-001"}, {"team-s", "key-005"}, {"team-s", "nope"}}}, now, 1},
		"unknown team":          {jobs.Selection{Teams: []string{"team-x"}}, now, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := jobs.Select(e.ctx, e.deps.Ledger, c.sel, c.now)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != c.want {
				t.Fatalf("%d keys, want %d: %+v", len(got), c.want, got)
			}
			for _, tg := range got {
				if tg.Generation <= 1 || tg.Key == "key-005" {
					t.Errorf("target %+v", tg)
				}
			}
		})
	}
	if _, err := jobs.Select(e.ctx, e.deps.Ledger, jobs.Selection{}, now); err == nil {
		t.Error("an empty selection was accepted")
	}
}

func TestKeyFormat(t *testing.T) {
	for name, c := range map[string]struct {
		f      jobs.KeyFormat
		ok     bool
		length int
	}{
		"litellm default": {jobs.DefaultKeyFormat, true, 25},
		"zero is default": {jobs.KeyFormat{Prefix: "sk-"}, true, 25},
		"longer":          {jobs.KeyFormat{Prefix: "gw_", Bytes: 32}, true, 3 + 43},
		"too weak":        {jobs.KeyFormat{Prefix: "sk-", Bytes: 8}, false, 0},
		"space in prefix": {jobs.KeyFormat{Prefix: "sk -", Bytes: 16}, false, 0},
	} {
		t.Run(name, func(t *testing.T) {
			err := c.f.Validate()
			if (err == nil) != c.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, c.ok)
			}
			if !c.ok {
				return
			}
			a, _ := c.f.NewKey()
			b, _ := c.f.NewKey()
			if len(a) != c.length || bytes.Equal(a, b) || !bytes.HasPrefix(a, []byte(c.f.Prefix)) {
				t.Errorf("keys %d bytes (want %d), equal %v", len(a), c.length, bytes.Equal(a, b))
			}
		})
	}
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "36h": 36 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := jobs.ParseAge(in); err != nil || got != want {
			t.Errorf("ParseAge(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"-1d", "1.5d", "soon", "-3h"} {
		if _, err := jobs.ParseAge(bad); err == nil {
			t.Errorf("ParseAge(%q) accepted", bad)
		}
	}
}
