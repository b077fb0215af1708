package e2e

import (
	"context"
	"fmt"
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
	"github.com/keyrelay/keyrelay/worker"
)

// quotaKeys is how many keys a quota run rotates: KEYRELAY_QUOTA_KEYS, or
// def (make bench runs the 20,000).
func quotaKeys(def int) int {
	if n, err := strconv.Atoi(os.Getenv("KEYRELAY_QUOTA_KEYS")); err == nil && n > 0 {
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
		t.Fatalf("%d keys rotated, %d confirmations; want %d each", len(rotated), len(confs), q.keys)
	}

	all := q.writes()
	sort.Slice(all, func(i, j int) bool { return all[i].Before(all[j]) })
	// Sustained: while the job had work queued, up to its last 5% (the
	// tail is the events the killed process held, redelivered after
	// AckWait, and the last few with nothing behind them).
	ws := all[:max(2, len(all)*95/100)]
	first, last := ws[0], ws[len(ws)-1]
	secs := int(last.Sub(first) / time.Second)
	perSec := make([]int, secs+1)
	for _, w := range ws {
		perSec[int(w.Sub(first)/time.Second)]++
	}
	// Whole seconds only (the first and the last are partial).
	full := perSec[1:max(1, secs)]
	below, afterKill := 0, 0
	killSec := int(killedAt.Sub(first) / time.Second)
	maxSec := 0
	for i, n := range full {
		maxSec = max(maxSec, n)
		if float64(n) < 0.9*q.quota {
			below++
			if i+1 >= killSec {
				afterKill++
			}
		}
	}
	rate := float64(len(ws)-1) / last.Sub(first).Seconds()
	fig := fmt.Sprintf("%s quota run: %d keys, %d write requests; the first 95%% in %.1fs = %.1f writes/s against a quota of %.0f/s (%.2f); throttled %d; busiest second %d; seconds under 0.9 x quota: %d (%d after the SIGKILL at %.1fs); all in %.1fs",
		q.backend, q.keys, len(all), last.Sub(first).Seconds(), rate, q.quota, rate/q.quota, q.throttled(), maxSec, below, afterKill,
		killedAt.Sub(first).Seconds(), all[len(all)-1].Sub(first).Seconds())
	t.Log(fig)
	fmt.Println("e2e " + fig)
	if n := q.throttled(); n != 0 {
		t.Errorf("%d calls throttled by the backend, want 0", n)
	}
	if rate < 0.9*q.quota {
		t.Errorf("%.1f writes/s sustained, want at least 0.9 x %.0f", rate, q.quota)
	}
	if below > 5 {
		t.Errorf("%d whole seconds under 0.9 x the quota (per second: %v), want at most 5 (the SIGKILLed process's share returns within seconds)", below, full)
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
	useAWSEnv(t)
	e := newEnv(t, envOptions{system: secretsmanager.Name, backendYML: fmt.Sprintf(`
    aws_secret_manager:
      endpoint: %s`, front.URL)})
	direct, err := secretsmanager.Factory(context.Background(), providers.Config{Options: mergeOpts(front.Options(),
		map[string]string{"write_tps": "100000", "control_tps": "100000"}), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	var enforced time.Time
	writeActions := map[string]bool{"PutSecretValue": true, "UpdateSecret": true, "UpdateSecretVersionStage": true}
	quotaRun{backend: secretsmanager.Name, keys: quotaKeys(2000), quota: 50,
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
