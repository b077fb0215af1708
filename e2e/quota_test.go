package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	gsm "github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
	"github.com/keyrelay/keyrelay/worker"
)

// quotaWorkerYAML is the workers' configuration of the quota runs: close
// to the production timeouts and safety net (the e2e default's 2 s call
// timeout and 6 deliveries are made for fault tests; a call here may wait
// seconds for its quota's token, as it would in production), with a
// shorter ack_wait so the killed process's events come back sooner.
const quotaWorkerYAML = quotaWorkerConcurrency + "16" + quotaWorkerRest

// quotaWorkerConcurrency and quotaWorkerRest frame the worker section; a
// backend whose quota serves a few rotations a second runs fewer events
// at once, as an operator sizes concurrency to the backend (every event in
// flight there only waits for tokens, and its reads come before its
// writes: 48 events in flight would spend 10 s on reads alone at 600 a
// minute before the first write).
const quotaWorkerConcurrency = `
    concurrency: `

const quotaWorkerRest = `
    ack_wait: 20s
    claim_lease: 15s
    call_timeout: 10s
    max_deliver: 10000
    shutdown_grace: 3s`

// quotaKeysFor is how many keys a quota run of backend rotates:
// KEYRELAY_QUOTA_KEYS_<backend>, or def (make bench runs more).
func quotaKeysFor(backend string, def int) int {
	if n, err := strconv.Atoi(os.Getenv("KEYRELAY_QUOTA_KEYS_" + backend)); err == nil && n > 0 {
		return n
	}
	return def
}

// quotaRun is one cluster-wide quota proof: three `keyrelay serve`
// processes rotate keys (a `keyrelay rotate --all` job) against a backend
// front that throttles above quota write requests per second, one process
// is SIGKILLed halfway.
type quotaRun struct {
	backend string
	keys    int
	// quota is the backend's write quota (requests per second).
	quota float64
	// minRatio is the least steady rate asserted, as a fraction of quota.
	minRatio float64
	// prepare writes the keys to the backend (before the front enforces
	// its quotas) and returns each key's provider version.
	prepare func(ctx context.Context, t *testing.T, name string, owner providers.Owner) string
	// enforce turns the front's quotas on.
	enforce func()
	// writes returns the times of the write requests the front admitted
	// since enforce; throttled the requests it refused.
	writes    func() []time.Time
	throttled func() int
}

// prepareKeys writes the keys to the backend and the ledger as if each
// had been created by a key.created event (generation 1).
func (q quotaRun) prepareKeys(ctx context.Context, t *testing.T, e *env, team string) {
	t.Helper()
	nc, err := nats.Connect(e.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	lkv, err := e.js.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	ledger := worker.NewLedger(lkv, nc)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	errs := make(chan error, 1)
	for i := range q.keys {
		key := fmt.Sprintf("key-%05d", i)
		name := "litellm/" + team + "/" + key
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			version := q.prepare(ctx, t, name, providers.Owner{TeamID: team, KeyID: key})
			sv, err := e.keyring.Seal(ctx, []byte("sk-quota-initial"), events.Binding{TeamID: team, KeyID: key, Generation: 1})
			if err == nil {
				_, err = ledger.Put(ctx, team, key, &worker.LedgerEntry{Generation: 1, EventID: "prep-" + key, EventType: events.KeyCreated,
					Status: events.StatusStored, Provider: q.backend, SecretRef: name, ProviderVersion: version, Sealed: sv, SealedGen: 1,
					UpdatedAt: time.Now().UTC()}, 0)
			}
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func (q quotaRun) run(t *testing.T, e *env) {
	const team = "team-q"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	procs := []*proc{e.startWorker("quota-1"), e.startWorker("quota-2"), e.startWorker("quota-3")}
	q.prepareKeys(ctx, t, e, team)
	q.enforce()

	cli := cliRunner(ctx, t, e)
	done := make(chan string, 1)
	go func() {
		out, stderr, code := cli("rotate", "--all", "--json")
		done <- fmt.Sprintf("exit %d\n%s\n%s", code, out, stderr)
	}()
	// SIGKILL one process halfway.
	var killedAt time.Time
	for killedAt.IsZero() {
		if len(q.writes()) >= q.keys/2 {
			procs[1].stop(syscall.SIGKILL)
			killedAt = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatal("the job never got halfway")
		}
	}
	if res := <-done; res[:6] != "exit 0" {
		t.Fatalf("keyrelay rotate: %s", res)
	}
	e.waitQuiet(ctx, q.keys, 20*time.Minute)

	// Every key rotated exactly once.
	confs := readConfirmations(ctx, t, e.js)
	rotated := map[string]int{}
	for _, c := range confs {
		if c.JobID != "" && c.Status == events.StatusRotated {
			rotated[c.KeyID]++
		}
	}
	if len(rotated) != q.keys || len(confs) != q.keys {
		other := map[string]int{}
		for _, c := range confs {
			if c.Status != events.StatusRotated {
				other[string(c.Status)+": "+c.Reason]++
			}
		}
		t.Fatalf("%d keys rotated, %d confirmations; want %d each; the others: %v", len(rotated), len(confs), q.keys, other)
	}

	all := q.writes()
	sort.Slice(all, func(i, j int) bool { return all[i].Before(all[j]) })
	// Sustained: the steady middle, 5% to 95% of the writes. The first 5%
	// fill the pipeline (each event's reads come before its writes); the
	// last 5% are the events the killed process held, redelivered after
	// AckWait, and the last few with nothing queued behind them.
	ws := all[len(all)*5/100 : max(2, len(all)*95/100)]
	first, last := ws[0], ws[len(ws)-1]
	rate := float64(len(ws)-1) / last.Sub(first).Seconds()
	// Dips: windows of w seconds (long enough to hold about 40 writes at
	// the quota, so a window's count is not mostly rounding and scheduling
	// noise) under 0.8 x the quota.
	w := time.Duration(math.Ceil(40/q.quota)) * time.Second
	counts := make([]int, int(last.Sub(first)/w)+1)
	for _, x := range ws {
		counts[int(x.Sub(first)/w)]++
	}
	counts = counts[:len(counts)-1] // the last window is partial
	// A dip's length is measured by the writes it cost: in each window
	// under 0.8 x the quota, the writes short of the full quota, in
	// seconds of the quota. Counting whole windows instead would make a
	// 3 s pause that straddles a window boundary an 8 s dip (two 4 s
	// windows), or a 1 s dip, depending only on where the boundary falls.
	dips, maxWin, short := 0, 0, 0.0
	for _, n := range counts {
		maxWin = max(maxWin, n)
		if float64(n) < 0.8*q.quota*w.Seconds() {
			dips++
			short += q.quota*w.Seconds() - float64(n)
		}
	}
	dipSecs := time.Duration(short / q.quota * float64(time.Second)).Round(100 * time.Millisecond)
	fig := fmt.Sprintf("%s quota run: %d keys, %d write requests; steady (5%% to 95%% of them) %.1f writes/s over %.1fs against a quota of %.0f/s (%.2f); throttled %d; busiest %v window %d; windows under 0.8 x quota: %d, short of the quota by %v of writes (the SIGKILL at %.1fs); all in %.1fs; per %v window: %v",
		q.backend, q.keys, len(all), rate, last.Sub(first).Seconds(), q.quota, rate/q.quota, q.throttled(), w, maxWin, dips, dipSecs,
		killedAt.Sub(all[0]).Seconds(), all[len(all)-1].Sub(all[0]).Seconds(), w, counts)
	t.Log(fig)
	fmt.Println("e2e " + fig)
	if n := q.throttled(); n != 0 {
		t.Errorf("%d calls throttled by the backend, want 0", n)
	}
	if rate < q.minRatio*q.quota {
		t.Errorf("%.1f writes/s sustained, want at least %.2f x %.0f", rate, q.minRatio, q.quota)
	}
	if dipSecs > 6*time.Second {
		t.Errorf("the windows under 0.8 x the quota fell short by %v of writes, want at most 6s (the SIGKILLed process's share returns within seconds)", dipSecs)
	}
}

// TestClusterQuotaAWS: three `keyrelay serve` processes rotate every key
// of a team (a `keyrelay rotate --all` job) against AWS Secrets Manager
// (kumo behind the front, throttling above the published 50 write
// requests/s per account and region, as AWS does), sharing the quota
// through NATS; one process is SIGKILLed halfway. No call is throttled,
// the processes together sustain at least 0.9 x 50 writes/s, and the
// killed process's share comes back within seconds.
func TestClusterQuotaAWS(t *testing.T) {
	front := kumofront.Start(t)
	e := newEnv(t, envOptions{system: secretsmanager.Name, worker: quotaWorkerYAML, backendYML: fmt.Sprintf(`
    aws_secret_manager:
      endpoint: %s`, front.URL)})
	direct, err := secretsmanager.Factory(context.Background(), providers.Config{Options: mergeOpts(front.Options(),
		map[string]string{"write_tps": "100000", "control_tps": "100000"}), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	var enforced time.Time
	writeActions := map[string]bool{"PutSecretValue": true, "UpdateSecret": true, "UpdateSecretVersionStage": true}
	quotaRun{backend: secretsmanager.Name, keys: quotaKeysFor("AWS", 2000), quota: 50, minRatio: 0.9,
		prepare: func(ctx context.Context, t *testing.T, name string, owner providers.Owner) string {
			res, err := direct.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-quota-initial"), IdempotencyKey: "prep-" + owner.KeyID, Owner: owner})
			if err != nil {
				t.Error(err)
			}
			return res.Version
		},
		enforce: func() { enforced = time.Now(); front.EnforceQuotas(kumofront.DefaultQuotas()) },
		writes: func() []time.Time {
			var out []time.Time
			for _, r := range front.Requests() {
				if writeActions[r.Action] && !r.At.Before(enforced) {
					out = append(out, r.At)
				}
			}
			return out
		},
		throttled: func() int { return front.Throttled("") },
	}.run(t, e)
}

func mergeOpts(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// TestClusterQuotaGoogle: the same proof against Google Secret Manager's
// per-project write quota (600 requests a minute, enforced by the
// wire-faithful fake as a sliding window, RESOURCE_EXHAUSTED above it, as
// the service does; its read quota, 600 a minute, too). A rotation is two
// write requests (AddSecretVersion, then the event id recorded on the
// secret) and two reads.
func TestClusterQuotaGoogle(t *testing.T) {
	fake := smfake.Start(t)
	const project = "keyrelay-quota"
	setenv(t, "GOOGLE_SECRET_MANAGER_PROJECT_ID", project)
	e := newEnv(t, envOptions{system: gsm.Name, worker: quotaWorkerConcurrency + "4" + quotaWorkerRest, backendYML: `
    google_secret_manager:
      endpoint: ` + fake.Addr() + `
      insecure: "true"
      superseded_grace: "0"`})
	direct, err := gsm.New(context.Background(), gsm.Config{Project: project, Endpoint: fake.Addr(), Insecure: true,
		ProjectWritesPerMinute: 1e7, ReadsPerMinute: 1e7, AccessPerMinute: 1e7, SecretWritesPerSecond: 1e5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	quotaRun{backend: gsm.Name, keys: quotaKeysFor("GOOGLE", 400), quota: 10,
		// Measured 0.90-0.91 on an idle machine, 0.85-0.88 with other
		// tests running on the same 2 CPUs: its ceiling is 0.954 (the
		// 0.97 margin times WindowRate's 590 of 600 a minute), and a
		// rotation is two reads and two writes on two quotas that bind
		// alike. BENCHMARKS.md has the figures.
		minRatio: 0.85,
		prepare: func(ctx context.Context, t *testing.T, name string, owner providers.Owner) string {
			res, err := direct.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-quota-initial"), IdempotencyKey: "prep-" + owner.KeyID, Owner: owner})
			if err != nil {
				t.Error(err)
			}
			return res.Version
		},
		enforce:   func() { fake.EnforceQuotas(smfake.DefaultQuotas()) },
		writes:    func() []time.Time { return fake.Admitted(smfake.QuotaWrite) },
		throttled: func() int { return fake.Throttled("") },
	}.run(t, e)
}
