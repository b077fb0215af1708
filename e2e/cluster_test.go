package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/quota"
	"github.com/keyrelay/keyrelay/worker"
)

// clusterWorkerYAML is the workers' configuration of the cluster runs:
// the e2e default's short timeouts, with the production safety net (no
// max_deliver of 6: a leader election may hand an event back several
// times, which must never dead-letter it) and an ack_wait long enough for
// an election, so that only a SIGKILLed worker's events are redelivered.
const clusterWorkerYAML = `
    concurrency: 16
    ack_wait: 10s
    claim_lease: 6s
    call_timeout: 2s
    retry_initial: 20ms
    retry_max: 500ms
    infra_wait: 5s
    shutdown_grace: 3s`

// clusterFigure logs one figure of the cluster tests and prints it for
// the `make test` output.
func clusterFigure(t *testing.T, format string, args ...any) {
	t.Helper()
	s := "e2e cluster: " + fmt.Sprintf(format, args...)
	t.Log(s)
	fmt.Println(s)
}

// storedConfirmation is a confirmation with the time its stream stored it.
type storedConfirmation struct {
	*events.Confirmation
	at time.Time
}

// readStoredConfirmations reads every confirmation in the stream with its
// stored time (the stream leader's clock; the test's machine).
func readStoredConfirmations(ctx context.Context, t *testing.T, js jetstream.JetStream) []storedConfirmation {
	t.Helper()
	s, err := js.Stream(ctx, worker.ConfirmationsStream)
	if err != nil {
		t.Fatal(err)
	}
	total := int(s.CachedInfo().State.Msgs)
	if total == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, worker.ConfirmationsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]storedConfirmation, 0, total)
	for len(out) < total {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var c events.Confirmation
			if err := json.Unmarshal(m.Data(), &c); err != nil {
				t.Fatalf("confirmation is not JSON: %v", err)
			}
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, storedConfirmation{Confirmation: &c, at: md.Timestamp})
		}
		if n == 0 {
			if ctx.Err() != nil {
				t.Fatalf("read %d of %d confirmations: %v", len(out), total, ctx.Err())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}

// pacedPublisher publishes events through the client at a steady rate,
// in chunks, the way a gateway would: a chunk's failed publishes (no
// stream leader during an election, a connection moving to another node,
// a PubAck lost) are published again, with the same event id, until the
// stream has them all.
type pacedPublisher struct {
	pub       *client.Publisher
	published atomic.Int64
	// retried counts publishes repeated after an error or a lost PubAck.
	retried atomic.Int64
	mu      sync.Mutex
	// stalls records how long the chunks that took over a second took.
	stalls []time.Duration
	// acks records when each publish that the stream acknowledged was
	// sent and its PubAck seen.
	acks []publishRecord
}

type publishRecord struct{ sent, acked time.Time }

// resumed returns the time from at to the first PubAck of a publish sent
// after it (-1: none).
func (p *pacedPublisher) resumed(at time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := time.Duration(-1)
	for _, a := range p.acks {
		if !a.sent.Before(at) && (first < 0 || a.acked.Sub(at) < first) {
			first = a.acked.Sub(at)
		}
	}
	return first
}

func (p *pacedPublisher) run(ctx context.Context, evs []*events.Event, perSecond float64) error {
	const chunk = 25
	interval := time.Duration(float64(chunk) / perSecond * float64(time.Second))
	next := time.Now()
	for i := 0; i < len(evs); i += chunk {
		batch := evs[i:min(i+chunk, len(evs))]
		started := time.Now()
		for try := 0; len(batch) > 0; try++ {
			if try > 0 {
				p.retried.Add(int64(len(batch)))
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
			futs := make([]jetstream.PubAckFuture, len(batch))
			var failed []*events.Event
			sent := time.Now()
			for j, ev := range batch {
				f, err := p.pub.PublishAsync(ev)
				if err != nil {
					failed = append(failed, ev)
					continue
				}
				futs[j] = f
			}
			for j, f := range futs {
				if f == nil {
					continue
				}
				select {
				case <-f.Ok():
					p.mu.Lock()
					p.acks = append(p.acks, publishRecord{sent: sent, acked: time.Now()})
					p.mu.Unlock()
				case <-f.Err():
					failed = append(failed, batch[j])
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			batch = failed
		}
		if d := time.Since(started); d > time.Second {
			p.mu.Lock()
			p.stalls = append(p.stalls, d)
			p.mu.Unlock()
		}
		p.published.Store(int64(min(i+chunk, len(evs))))
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			next = time.Now()
		}
	}
	return nil
}

// disruption is one fault injected under load.
type disruption struct {
	what string
	at   time.Time
	// delivered is the shared consumer's last delivered stream sequence
	// just before the fault: an event above it was delivered after.
	delivered uint64
	// back is when the node or process was started again.
	back time.Time
}

// recoveryFigures is how the pipeline came through one fault, read from
// the confirmations' stored times.
type recoveryFigures struct {
	// resumed is the time from the fault to the pipeline confirming again:
	// to the end of the last stall (a second or more without a
	// confirmation) after the fault, its restart included, while the
	// pipeline still had work from after it and before the next fault; 0
	// when there was none. gap is the longest time without a confirmation
	// in that window.
	resumed, gap time.Duration
	// perSecond counts the confirmations in each second from the fault,
	// to the end of the window.
	perSecond []int
	// settled is the time until the last confirmation of an event
	// delivered before the fault (the work in flight at the fault; a
	// killed worker's events come back after ack_wait).
	settled time.Duration
}

// recovery measures d in the confirmations, sorted by stored time; next is
// the next fault (zero: none).
func (d disruption) recovery(confs []storedConfirmation, next time.Time) recoveryFigures {
	var r recoveryFigures
	// The window: up to the next fault, and no further than the last
	// confirmation of an event delivered after this one (past it, the
	// backlog is done and the only confirmations left are redeliveries).
	until := d.at
	for _, c := range confs {
		if c.StreamSeq > d.delivered && c.at.After(until) {
			until = c.at
		}
		if c.StreamSeq <= d.delivered && c.at.Sub(d.at) > r.settled {
			r.settled = c.at.Sub(d.at)
		}
	}
	if !next.IsZero() && next.Before(until) {
		until = next
	}
	prev := d.at
	for _, c := range confs {
		if c.at.Before(d.at) {
			continue
		}
		// A stall still going on at the next fault ends there for this
		// fault's figures.
		end := c.at
		if end.After(until) {
			end = until
		}
		gap := end.Sub(prev)
		r.gap = max(r.gap, gap)
		if gap >= time.Second {
			r.resumed = end.Sub(d.at)
		}
		if !c.at.Before(until) {
			break
		}
		sec := int(c.at.Sub(d.at) / time.Second)
		for len(r.perSecond) <= sec {
			r.perSecond = append(r.perSecond, 0)
		}
		r.perSecond[sec]++
		prev = c.at
	}
	return r
}

// ledBy names the streams, and the shared consumer of the interactive
// lane, that node leads.
func ledBy(ctx context.Context, e *env, node string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var led []string
	lister := e.js.ListStreams(ctx)
	for info := range lister.Info() {
		if info.Cluster != nil && info.Cluster.Leader == node {
			led = append(led, info.Config.Name)
		}
	}
	sort.Strings(led)
	if cons, err := e.js.Consumer(ctx, worker.EventsStream, worker.ConsumerName); err == nil {
		if c := cons.CachedInfo().Cluster; c != nil && c.Leader == node {
			led = append(led, "consumer "+worker.ConsumerName)
		}
	}
	return strings.Join(led, ", ")
}

// waitFlowing waits, up to bound, until the confirmations stream has
// grown by n or more over the last second: the pipeline running again
// before the next fault.
func waitFlowing(ctx context.Context, t *testing.T, e *env, n uint64, bound time.Duration) {
	t.Helper()
	type sample struct {
		at   time.Time
		msgs uint64
	}
	var samples []sample
	for start := time.Now(); time.Since(start) < bound; time.Sleep(200 * time.Millisecond) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		s, err := e.js.Stream(cctx, worker.ConfirmationsStream)
		cancel()
		if err != nil {
			continue
		}
		now, msgs := time.Now(), s.CachedInfo().State.Msgs
		samples = append(samples, sample{now, msgs})
		for len(samples) > 1 && now.Sub(samples[1].at) >= time.Second {
			samples = samples[1:]
		}
		if now.Sub(samples[0].at) >= time.Second && msgs-samples[0].msgs >= n {
			return
		}
	}
	t.Logf("confirmations not flowing at %d/s %v after the cluster was healthy again", n, bound)
}

// deliveredSeq returns the shared consumer's last delivered stream
// sequence, retrying through an election for up to 10 s.
func deliveredSeq(ctx context.Context, t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cons, err := js.Consumer(cctx, worker.EventsStream, worker.ConsumerName)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = cons.Info(cctx)
		}
		cancel()
		if err == nil {
			return info.Delivered.Stream
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer info: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterNodeLossUnderLoad (issue 13): a 3-node JetStream cluster with
// every stream and bucket at replicas 3 and three `keyrelay serve`
// processes (local backend, one shared store), the workers connected
// through the seed list. 10,000 events over 1,000 keys (key.created, then
// nine rotations, sealed with the environment's keyring) are published
// asynchronously through the client while, one after the other, the node
// leading KEYRELAY_EVENTS is SIGKILLed and restarted 3 s later, then the
// node leading the ledger bucket's stream (KV_KEYRELAY_LEDGER), then one
// worker process (each fault once the cluster is healthy and confirming
// again after the one before). The events are offered at 1,000/s, more
// than three processes confirm here (about 300/s), so a backlog runs
// through the faults and what is measured is the pipeline's own
// recovery, not the publisher's. Afterwards no event is lost (every event
// id has exactly one confirmation), every key holds its newest generation
// in the store, the DLQ is empty, and the time from each fault to the
// pipeline confirming again is printed (and bounded: 20 s; a lost
// consumer leader used to stop every worker for 30 s).
func TestClusterNodeLossUnderLoad(t *testing.T) {
	nodeLossUnderLoad(t, nodeLoss{keys: 1000, gens: 10, workerYAML: clusterWorkerYAML, victim: 1})
}

// TestClusterNodeLossUnderLoadExclusive is the same run with the workers
// in ownership mode exclusive (one lease holder consumes, without claims):
// the nodes leading the events stream and the ledger are killed, and then
// the lease holder itself, with SIGKILL, so that a standby takes over
// after the lease TTL and loads the dead holder's intents.
func TestClusterNodeLossUnderLoadExclusive(t *testing.T) {
	nodeLossUnderLoad(t, nodeLoss{keys: 500, gens: 8, victim: -1, workerYAML: clusterWorkerYAML + `
    ownership: exclusive
    lease_ttl: 3s`})
}

// nodeLoss shapes one node-loss run.
type nodeLoss struct {
	keys       int
	gens       uint64
	workerYAML string
	// victim is the worker SIGKILLed (index), or -1: the lease holder.
	victim int
}

// leaseHolder returns the index of the process holding the writer lease.
func leaseHolder(ctx context.Context, t *testing.T, e *env, w []*proc) int {
	t.Helper()
	kv, err := e.js.KeyValue(ctx, worker.OwnershipBucket)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ent, err := kv.Get(ctx, worker.WriterLeaseKey)
		if err != nil {
			continue
		}
		var rec struct {
			Holder string `json:"holder"`
		}
		if json.Unmarshal(ent.Value(), &rec) != nil {
			continue
		}
		for i, p := range w {
			if strings.Contains(rec.Holder, fmt.Sprintf("-%d-", p.cmd.Process.Pid)) {
				return i
			}
		}
	}
	t.Fatal("no worker holds the writer lease")
	return -1
}

func nodeLossUnderLoad(t *testing.T, o nodeLoss) {
	if testing.Short() {
		t.Skip("kills cluster nodes and a worker under load")
	}
	const (
		teams = 10
		rate  = 1000.0 // events/s offered
	)
	keys, gens := o.keys, o.gens
	cl := testenv.StartCluster(t, 3)
	e := newEnv(t, envOptions{cluster: cl, worker: o.workerYAML})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w := []*proc{e.startWorker("w1"), e.startWorker("w2"), e.startWorker("w3")}

	teamOf := func(k int) string { return fmt.Sprintf("team-%d", k%teams) }
	keyOf := func(k int) string { return fmt.Sprintf("key-%04d", k) }
	rng := rand.New(rand.NewPCG(13, 14))
	all := make([]*events.Event, 0, keys*int(gens))
	for g := uint64(1); g <= gens; g++ {
		typ := events.KeyRotated
		if g == 1 {
			typ = events.KeyCreated
		}
		for _, k := range rng.Perm(keys) {
			team, key := teamOf(k), keyOf(k)
			ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key, g, []byte(value(team, key, g)), events.KeyData{})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, ev)
		}
	}

	// The publisher's own connection fails over between the nodes; an
	// async publish whose PubAck does not come within 2 s is published again.
	pjs, err := jetstream.New(e.nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	pp := &pacedPublisher{pub: client.NewPublisher(pjs)}
	start := time.Now()
	pubDone := make(chan error, 1)
	go func() { pubDone <- pp.run(ctx, all, rate) }()
	waitPublished := func(n int) {
		t.Helper()
		for int(pp.published.Load()) < n {
			select {
			case err := <-pubDone:
				pubDone <- err
				t.Fatalf("publisher ended at %d of %d events before the faults were done: %v", pp.published.Load(), len(all), err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}

	var faults []disruption
	killLeader := func(stream string, after int) {
		t.Helper()
		waitPublished(after)
		idx, err := cl.LeaderOf(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		d := disruption{what: fmt.Sprintf("SIGKILL node %s (leading %s)", cl.Name(idx), ledBy(ctx, e, cl.Name(idx))), delivered: deliveredSeq(ctx, t, e.js)}
		d.at = time.Now()
		cl.Kill(idx)
		t.Logf("%v: %s", d.at.Sub(start).Round(time.Millisecond), d.what)
		time.Sleep(3 * time.Second)
		cl.Start(idx)
		d.back = time.Now()
		hctx, hcancel := context.WithTimeout(ctx, time.Minute)
		defer hcancel()
		if err := cl.WaitHealthy(hctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: node %s restarted, cluster healthy %v later", time.Since(start).Round(time.Millisecond), cl.Name(idx),
			time.Since(d.back).Round(time.Millisecond))
		faults = append(faults, d)
		waitFlowing(ctx, t, e, 100, 20*time.Second)
	}
	killLeader(worker.EventsStream, len(all)/4)
	killLeader("KV_"+worker.LedgerBucket, 0)

	victim, what := o.victim, ""
	if victim < 0 {
		victim = leaseHolder(ctx, t, e, w)
		what = " (the writer lease holder)"
	}
	d := disruption{what: fmt.Sprintf("SIGKILL worker %s%s", w[victim].name, what), delivered: deliveredSeq(ctx, t, e.js)}
	d.at = time.Now()
	w[victim].stop(syscall.SIGKILL)
	t.Logf("%v: %s", d.at.Sub(start).Round(time.Millisecond), d.what)
	w[victim] = e.startWorker(w[victim].name + "-restarted")
	d.back = time.Now()
	faults = append(faults, d)

	if err := <-pubDone; err != nil {
		t.Fatalf("publish: %v", err)
	}
	published := time.Since(start)
	e.waitQuiet(ctx, len(all), 2*time.Minute)
	elapsed := time.Since(start)

	// Every event id exactly once.
	confs := readStoredConfirmations(ctx, t, e.js)
	ids := make(map[string]bool, len(all))
	for _, ev := range all {
		ids[ev.ID] = true
	}
	count := map[string]int{}
	statuses := map[events.Status]int{}
	unknown := 0
	for _, c := range confs {
		if !ids[c.EventID] {
			unknown++
			continue
		}
		count[c.EventID]++
		statuses[c.Status]++
	}
	missing, notOnce := 0, 0
	for id := range ids {
		switch count[id] {
		case 0:
			missing++
		case 1:
		default:
			notOnce++
		}
	}
	if missing != 0 || notOnce != 0 || unknown != 0 {
		t.Errorf("confirmations: %d for %d events: %d events without one, %d with more than one, %d for unknown ids", len(confs), len(all), missing, notOnce, unknown)
	}
	if statuses[events.StatusFailed] != 0 || statuses[events.StatusRejected] != 0 {
		t.Errorf("failed or rejected events: %v", statuses)
	}

	// Every key at its newest generation in the shared store.
	store, err := local.New(local.Config{Path: e.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	wrong := 0
	for k := 0; k < keys; k++ {
		team, key := teamOf(k), keyOf(k)
		s, err := store.Get(ctx, "litellm/"+team+"/"+key, "")
		if err != nil || string(s.Value) != value(team, key, gens) {
			wrong++
			if wrong <= 5 {
				got := ""
				if err == nil {
					got = string(s.Value)
				}
				t.Errorf("%s/%s: %q (%v), want generation %d", team, key, got, err, gens)
			}
		}
	}
	dlq, err := e.js.Stream(ctx, worker.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	dead := dlq.CachedInfo().State.Msgs
	if dead != 0 {
		t.Errorf("%d dead letters", dead)
	}
	evs, err := e.js.Stream(ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}

	mode := "claims"
	if strings.Contains(o.workerYAML, "exclusive") {
		mode = "exclusive"
	}
	clusterFigure(t, "node loss under load (ownership %s): %d events over %d keys published in %.1fs (%.0f/s offered, %d publishes repeated), all confirmed in %.1fs (%.0f events/s); events stored %d, confirmations %d, missing %d, more than once %d, DLQ %d, keys not at their newest generation %d; statuses %v",
		mode, len(all), keys, published.Seconds(), rate, pp.retried.Load(), elapsed.Seconds(), float64(len(all))/elapsed.Seconds(),
		evs.CachedInfo().State.Msgs, len(confs), missing, notOnce, dead, wrong, statuses)
	if len(pp.stalls) > 0 {
		stalls := make([]string, len(pp.stalls))
		for i, s := range pp.stalls {
			stalls[i] = s.Round(100 * time.Millisecond).String()
		}
		clusterFigure(t, "node loss under load (ownership %s): publishes held up (a chunk of 25 taking over 1 s): %s", mode, strings.Join(stalls, ", "))
	}
	sort.Slice(confs, func(i, j int) bool { return confs[i].at.Before(confs[j].at) })
	for i, d := range faults {
		var next time.Time
		if i+1 < len(faults) {
			next = faults[i+1].at
		}
		r := d.recovery(confs, next)
		if bound := 20 * time.Second; r.resumed > bound {
			t.Errorf("%s: the pipeline confirmed again only %v after it, want at most %v", d.what, r.resumed, bound)
		}
		clusterFigure(t, "%s at %.1fs, back after %.1fs: confirming again %v after the kill (longest time without a confirmation %v); publishing again after %v; the events delivered before the kill all confirmed %v after it",
			d.what, d.at.Sub(start).Seconds(), d.back.Sub(d.at).Seconds(), r.resumed.Round(100*time.Millisecond),
			r.gap.Round(100*time.Millisecond), pp.resumed(d.at).Round(100*time.Millisecond), r.settled.Round(100*time.Millisecond))
		t.Logf("%s: confirmations in each second from the kill: %v", d.what, r.perSecond)
	}
}

// readyzCode returns p's /readyz status (0 when it does not answer).
func readyzCode(p *proc) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", p.opsPort))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// publishKeys publishes generation gen of n keys of team, retrying each
// publish until the stream has it, and returns the events.
func publishKeys(ctx context.Context, t *testing.T, e *env, team string, n int, gen uint64) []*events.Event {
	t.Helper()
	pub := client.NewPublisher(e.js)
	evs := make([]*events.Event, n)
	for i := range evs {
		key := fmt.Sprintf("key-%03d", i)
		typ := events.KeyRotated
		if gen == 1 {
			typ = events.KeyCreated
		}
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key, gen, []byte(value(team, key, gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := pub.Publish(pctx, ev)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("publish: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		evs[i] = ev
	}
	return evs
}

// TestClusterAllNodesDown (issue 13): two `keyrelay serve` processes on a
// 3-node cluster; all three nodes are stopped for 10 s. While NATS is gone
// both processes answer /readyz with 503; once the nodes are started again
// both return to 200 by themselves (within a printed bound), and events
// published after the restart are confirmed by the same processes, which
// never restarted.
func TestClusterAllNodesDown(t *testing.T) {
	if testing.Short() {
		t.Skip("stops a whole cluster")
	}
	const outage = 10 * time.Second
	cl := testenv.StartCluster(t, 3)
	e := newEnv(t, envOptions{cluster: cl, worker: clusterWorkerYAML})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := []*proc{e.startWorker("d1"), e.startWorker("d2")}
	pids := []int{w[0].cmd.Process.Pid, w[1].cmd.Process.Pid}

	before := publishKeys(ctx, t, e, "team-d", 50, 1)
	e.waitQuiet(ctx, len(before), time.Minute)

	// Stop every node at once, polling /readyz from the moment the stops
	// begin until the outage ends.
	first503 := make([]time.Duration, len(w))
	not503 := make([]int, len(w)) // answers other than 503 once every node is down
	var (
		downAt  atomic.Int64 // unix nanoseconds once every node is down
		polling sync.WaitGroup
	)
	stopping := time.Now()
	pollEnd := stopping.Add(outage)
	for i, p := range w {
		first503[i] = -1
		polling.Add(1)
		go func() {
			defer polling.Done()
			for time.Now().Before(pollEnd) {
				code := readyzCode(p)
				if code == http.StatusServiceUnavailable && first503[i] < 0 {
					first503[i] = time.Since(stopping)
				}
				if down := downAt.Load(); code != http.StatusServiceUnavailable && down != 0 && time.Now().UnixNano() > down {
					not503[i]++
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	var wg sync.WaitGroup
	for i := 0; i < cl.Size(); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); cl.Stop(i) }()
	}
	wg.Wait()
	downAt.Store(time.Now().UnixNano())
	stopTook := time.Since(stopping)
	polling.Wait()
	for i, p := range w {
		if first503[i] < 0 {
			t.Fatalf("%s: /readyz never answered 503 in %v without NATS", p.name, outage)
		}
		if not503[i] != 0 {
			t.Errorf("%s: /readyz answered other than 503 %d times with every node down", p.name, not503[i])
		}
	}

	cl.StartAll()
	restarted := time.Now()
	const readyBound = 30 * time.Second
	readyAt := waitAllReady(t, w, readyBound)
	readyAfter := make([]time.Duration, len(w))
	for i, at := range readyAt {
		readyAfter[i] = at.Sub(restarted)
	}
	hctx, hcancel := context.WithTimeout(ctx, time.Minute)
	defer hcancel()
	if err := cl.WaitHealthy(hctx); err != nil {
		t.Fatal(err)
	}
	healthy := time.Since(restarted)

	pubAt := time.Now()
	after := publishKeys(ctx, t, e, "team-d", 50, 2)
	e.waitQuiet(ctx, len(before)+len(after), time.Minute)
	confirmedIn := time.Since(pubAt)
	confs := readStoredConfirmations(ctx, t, e.js)
	byID := map[string]events.Status{}
	for _, c := range confs {
		byID[c.EventID] = c.Status
	}
	for _, ev := range after {
		if s := byID[ev.ID]; s != events.StatusRotated {
			t.Errorf("%s g%d published after the restart: %q, want rotated", ev.KeyID, ev.Generation, s)
		}
	}
	for i, p := range w {
		select {
		case <-p.exited:
			t.Errorf("%s (pid %d) exited", p.name, pids[i])
		default:
		}
	}
	clusterFigure(t, "all nodes stopped for %v (stopping them took %v): /readyz 503 %v and %v after the stops began, never 200 while every node was down; after the nodes were started: cluster healthy in %.1fs, /readyz 200 in %.1fs and %.1fs (bound %v), without a restart of either process; %d events published after it confirmed in %.1fs",
		outage, stopTook.Round(time.Millisecond), first503[0].Round(time.Millisecond), first503[1].Round(time.Millisecond), healthy.Seconds(),
		readyAfter[0].Seconds(), readyAfter[1].Seconds(), readyBound, len(after), confirmedIn.Seconds())
}

// TestClusterTopologyConcurrentStart (issue 13): three `keyrelay serve`
// processes started at the same moment on a fresh 3-node cluster all
// become ready within 15 s, and every stream and bucket exists once, with
// replicas 3, as does each shared consumer. (The cluster leaves some of
// the racing creates unanswered; before worker.EnsureCall the processes
// waiting on them sat out whole 20 s start-up attempts: ready after 20 to
// 67 s.)
func TestClusterTopologyConcurrentStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	cl := testenv.StartCluster(t, 3)
	e := newEnv(t, envOptions{cluster: cl, worker: clusterWorkerYAML})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	keyrelayBinary(t) // built before the clock starts
	start := time.Now()
	ps := []*proc{e.spawnWorker("t1"), e.spawnWorker("t2"), e.spawnWorker("t3")}
	const readyBound = 15 * time.Second
	readyAt := waitAllReady(t, ps, readyBound)
	ready := make([]string, len(ps))
	for i, at := range readyAt {
		ready[i] = fmt.Sprintf("%.1fs", at.Sub(start).Seconds())
	}

	// keyrelay's streams and buckets; others may exist (a process's
	// presence bucket), and every one must be there once, at replicas 3.
	want := []string{worker.EventsStream, worker.BulkStream, worker.RetireStream, worker.ConfirmationsStream, worker.DLQStream,
		"KV_" + worker.LedgerBucket, "KV_" + worker.TeamsBucket, "KV_" + worker.RecoveryBucket, "KV_" + quota.BucketDefault,
		"OBJ_" + worker.RecoveryObjects}
	seen := map[string]int{}
	lister := e.js.ListStreams(ctx)
	for info := range lister.Info() {
		seen[info.Config.Name]++
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s: %d replicas, want 3", info.Config.Name, info.Config.Replicas)
		}
		if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: cluster %+v, want a leader and 2 replicas", info.Config.Name, info.Cluster)
		}
	}
	if err := lister.Err(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for name, n := range seen {
		names = append(names, name)
		if n != 1 {
			t.Errorf("stream %s listed %d times", name, n)
		}
	}
	for _, name := range want {
		if seen[name] == 0 {
			t.Errorf("stream %s missing", name)
		}
	}
	sort.Strings(names)
	for stream, durable := range map[string]string{worker.EventsStream: worker.ConsumerName, worker.BulkStream: worker.BulkConsumerName,
		worker.RetireStream: worker.RetireConsumerName} {
		cons, err := e.js.Consumer(ctx, stream, durable)
		if err != nil {
			t.Errorf("consumer %s on %s: %v", durable, stream, err)
			continue
		}
		info := cons.CachedInfo()
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("consumer %s: cluster %+v, want a leader and 2 replicas", durable, info.Cluster)
		}
	}

	evs := publishKeys(ctx, t, e, "team-t", 30, 1)
	e.waitQuiet(ctx, len(evs), time.Minute)
	clusterFigure(t, "3 processes started at once on a fresh cluster: ready %s after the start (bound %v); %d streams, each once with replicas 3: %s; %d events confirmed",
		strings.Join(ready, ", "), readyBound, len(names), strings.Join(names, ", "), len(evs))
}

// waitAllReady waits until every process's /readyz answers 200 and
// returns when each did, failing the test when one exits or is not ready
// within bound.
func waitAllReady(t *testing.T, ps []*proc, bound time.Duration) []time.Time {
	t.Helper()
	start := time.Now()
	at := make([]time.Time, len(ps))
	for left := len(ps); left > 0; {
		for i, p := range ps {
			if !at[i].IsZero() {
				continue
			}
			select {
			case <-p.exited:
				b, _ := os.ReadFile(p.logPath)
				t.Fatalf("%s exited before ready:\n%s", p.name, b)
			default:
			}
			if readyzCode(p) == http.StatusOK {
				at[i] = time.Now()
				left--
			}
		}
		if left > 0 && time.Since(start) > bound {
			for i, p := range ps {
				if at[i].IsZero() {
					b, _ := os.ReadFile(p.logPath)
					t.Errorf("%s not ready after %v:\n%s", p.name, bound, b)
				}
			}
			t.FailNow()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return at
}

// TestDisruptionRecovery checks the recovery figures on a made-up
// timeline.
func TestDisruptionRecovery(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int, seq uint64) storedConfirmation {
		return storedConfirmation{Confirmation: &events.Confirmation{StreamSeq: seq}, at: t0.Add(time.Duration(ms) * time.Millisecond)}
	}
	confs := []storedConfirmation{at(-500, 9), at(100, 10), at(200, 11), at(4000, 12), at(4100, 13), at(9000, 8)}
	d := disruption{at: t0, delivered: 10}
	tests := map[string]struct {
		next                  time.Time
		resumed, gap, settled time.Duration
		perSecond             []int
	}{
		"no next fault": {resumed: 4 * time.Second, gap: 3800 * time.Millisecond, settled: 9 * time.Second, perSecond: []int{2, 0, 0, 0, 1}},
		// The stall is cut at the next fault.
		"next fault during the stall": {next: t0.Add(2 * time.Second), resumed: 2 * time.Second, gap: 1800 * time.Millisecond, settled: 9 * time.Second, perSecond: []int{2}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := d.recovery(confs, tc.next)
			if r.resumed != tc.resumed || r.gap != tc.gap || r.settled != tc.settled || fmt.Sprint(r.perSecond) != fmt.Sprint(tc.perSecond) {
				t.Fatalf("got resumed %v gap %v settled %v per second %v, want %v %v %v %v", r.resumed, r.gap, r.settled, r.perSecond,
					tc.resumed, tc.gap, tc.settled, tc.perSecond)
			}
		})
	}
}
