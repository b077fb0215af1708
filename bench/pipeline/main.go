// Command pipeline benchmarks keyrelay's whole pipeline (publish → worker →
// local provider in its zero-latency in-memory mode → confirmation) against
// a raw JetStream baseline doing the same message work (publish, durable
// pull consume, ack, publish a reply and wait for its PubAck), both on the
// same nats-server process in the same run. It prints events/s for both,
// their ratio, and publish→confirmation latency p50/p99 at a fixed offered
// rate.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyrelay/keyrelay/bench/benchkit"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

func main() {
	n := flag.Int("events", 20000, "events per throughput run")
	keys := flag.Int("keys", 1000, "distinct keys")
	conc := flag.Int("concurrency", 64, "handlers in flight (keyrelay worker and baseline alike)")
	rate := flag.Int("rate", 1000, "offered rate for the latency run, events/s")
	dur := flag.Duration("latency-duration", 10*time.Second, "length of the latency run")
	runs := flag.Int("runs", 3, "throughput runs of each kind (the median is reported)")
	warmup := flag.Int("warmup", 1, "uncounted throughput runs of each kind before the counted ones (a fresh server's first baseline run is 10 to 25% slower than the rest)")
	parts := flag.Int("partitions", 0, "also run the baseline with its stream split into this many partitions, each read by its own filtered consumer, and print that against the plain baseline (0: not)")
	pull := flag.String("partition-pull", "full", "with -partitions: full (each partition consumer pulls a whole batch of -concurrency) or share (the batch is split among them)")
	serverBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	flag.IntVar(&clusterNodes, "cluster", 0, "run on a cluster of this many nats-server processes on loopback, every stream and bucket replicated to each (0: one server)")
	flag.StringVar(&ownershipMode, "ownership", worker.OwnershipClaims, "the worker's ownership mode: claims (a claim per event in the key's ledger entry) or exclusive (the writer lease, an intent per event)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the keyrelay runs to this file")
	memprofile := flag.String("memprofile", "", "write an allocation profile of this process to this file at the end")
	flag.Parse()
	switch *pull {
	case "full":
	case "share":
		sharePulls = true
	default:
		fmt.Fprintln(os.Stderr, "bench: -partition-pull must be full or share")
		os.Exit(2)
	}
	stopProfile := benchkit.StartCPUProfile(*cpuprofile)
	defer stopProfile()
	defer benchkit.WriteHeapProfile(*memprofile)
	// The worker runs in this process: give it the runtime settings
	// `keyrelay serve` runs with.
	app.TuneRuntime()
	if err := run(*n, *keys, *conc, *rate, *dur, *warmup, *runs, *parts, *serverBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stopProfile()
		os.Exit(1)
	}
}

// clusterNodes is the -cluster flag; replicas the replica count of every
// stream and bucket, baseline and keyrelay alike.
var clusterNodes, replicas = 0, 1

// ownershipMode is the worker's ownership mode (-ownership).
var ownershipMode string

func run(n, keys, conc, rate int, dur time.Duration, warmup, runs, parts int, serverBin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var extra []string
	if e := os.Getenv("KEYRELAY_BENCH_SERVER_ARGS"); e != "" {
		extra = strings.Fields(e)
	}
	srv, err := benchkit.StartServers(serverBin, dir, clusterNodes, extra...)
	if err != nil {
		return err
	}
	defer srv.Stop()
	js := srv.JS
	replicas = srv.Replicas
	nc := js.Conn()
	version := nc.ConnectedServerVersion()

	fmt.Printf("keyrelay pipeline benchmark: nats-server %s on %s, %d events over %d keys, concurrency %d, %d CPUs\n",
		version, srv.Shape, n, keys, conc, runtime.NumCPU())
	fmt.Printf("worker ownership: %s\n", ownershipMode)
	if v := worker.CeilingVariant(); v != "" {
		// A keyrelay_ceiling build (bench/ceilings): not keyrelay's figures.
		fmt.Printf("UNSAFE ceiling build: ledger writes skipped: %s\n", v)
	}

	kr, _ := events.NewKeyring("bench", map[string][]byte{"bench": make([]byte, 32)})
	pipe, err := newPipeline(ctx, js, kr, conc)
	if err != nil {
		return err
	}
	defer pipe.stop()

	var base, full, ratios, pratios []float64
	// Runs below 0 warm both sides up (page cache, the file store's
	// blocks, the worker's caches and pools) and are printed, not counted.
	for r := -warmup; r < runs; r++ {
		label := fmt.Sprintf("run %d", r+1)
		if r < 0 {
			label = "warm-up"
		}
		var b float64
		var bcpu, bsys string
		if os.Getenv("KEYRELAY_BENCH_ONLY") != "keyrelay" {
			// With -partitions, the plain and the partitioned baseline
			// take turns going first, each with its own CPU sample.
			plain := func() error {
				c0, s0 := benchkit.ReadCPU(), benchkit.ReadSysIO()
				b, err = baseline(ctx, js, n, conc, r+warmup, 0)
				bcpu = benchkit.PerOp(c0, benchkit.ReadCPU(), n, "nats-server", "bench")
				bsys = benchkit.SysIOPerOp(s0, benchkit.ReadSysIO(), n, "nats-server", "bench")
				return err
			}
			var bp float64
			var pcpu string
			partitioned := func() error {
				c0 := benchkit.ReadCPU()
				bp, err = baseline(ctx, js, n, conc, r+warmup, parts)
				pcpu = benchkit.PerOp(c0, benchkit.ReadCPU(), n, "nats-server", "bench")
				return err
			}
			order := []func() error{plain}
			if parts > 0 {
				order = append(order, partitioned)
				if r%2 != 0 {
					order[0], order[1] = order[1], order[0]
				}
			}
			for _, f := range order {
				if err := f(); err != nil {
					return err
				}
			}
			if parts > 0 {
				fmt.Printf("  %s: baseline %8.0f events/s   over %d filtered partition consumers %8.0f events/s   ratio %.2f   ms CPU per event: baseline %s; partitioned %s\n",
					label, b, parts, bp, bp/b, bcpu, pcpu)
				if r >= 0 {
					pratios = append(pratios, bp/b)
				}
			}
		}
		if os.Getenv("KEYRELAY_BENCH_ONLY") == "baseline" {
			continue // the baselines alone (with -partitions: their comparison)
		}
		// The events are built and sealed before the clock (and the CPU
		// sample) starts: the gateway does that work, not keyrelay.
		msgs, _, err := pipe.mkEvents(ctx, n, keys, "bench-"+strconv.Itoa(r+warmup))
		if err != nil {
			return err
		}
		c1, l1, s1 := benchkit.ReadCPU(), pipe.w.Teams().Lookups.Load(), benchkit.ReadSysIO()
		f, err := benchkit.Throughput(ctx, js, msgs)
		if err != nil {
			return err
		}
		c2, l2 := benchkit.ReadCPU(), pipe.w.Teams().Lookups.Load()
		ksys := benchkit.SysIOPerOp(s1, benchkit.ReadSysIO(), n, "nats-server", "bench")
		fmt.Printf("  %s: baseline %8.0f events/s   keyrelay %8.0f events/s   ratio %.2f   ms CPU per event: baseline %s; keyrelay %s; settings lookups per event %.2f\n",
			label, b, f, f/b, bcpu, benchkit.PerOp(c1, c2, n, "nats-server", "bench"), float64(l2-l1)/float64(n))
		if bsys != "" {
			// One write per stored message is nats-server's file store
			// handing each message to the OS as it stores it.
			fmt.Printf("  %*s  system calls per event (reads, writes): baseline %s; keyrelay %s\n", len(label), "", bsys, ksys)
		}
		if r >= 0 {
			base, full, ratios = append(base, b), append(full, f), append(ratios, f/b)
		}
	}
	if len(pratios) > 0 {
		fmt.Printf("partitioned baseline (median of %d runs): %.2f of the plain baseline\n", len(pratios), benchkit.Median(pratios))
	}
	if os.Getenv("KEYRELAY_BENCH_ONLY") == "baseline" {
		return nil
	}
	if in, msgs := pipe.w.IntentStats(); msgs > 0 {
		fmt.Printf("intents: %d in %d stored messages (%.1f per message)\n", in, msgs, float64(in)/float64(msgs))
	}
	mb, mf := benchkit.Median(base), benchkit.Median(full)
	fmt.Printf("throughput (median of %d runs): raw JetStream baseline %.0f events/s, keyrelay pipeline %.0f events/s, median ratio %.2f\n", runs, mb, mf, benchkit.Median(ratios))

	bl, err := baselineLatency(ctx, js, rate, dur, conc)
	if err != nil {
		return err
	}
	pl, err := pipe.latency(ctx, rate, dur, keys)
	if err != nil {
		return err
	}
	fmt.Printf("latency at %d events/s offered for %v: baseline publish→reply p50 %v p99 %v; keyrelay publish→confirmation p50 %v p99 %v (%d events)\n",
		rate, dur, pct(bl, 50), pct(bl, 99), pct(pl, 50), pct(pl, 99), len(pl))
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i].Round(10 * time.Microsecond)
}

// baseline does the same message work as the pipeline with nothing else:
// a limits stream with file storage, a durable pull consumer with explicit
// acks, and per message a reply published to a second stream (PubAck
// awaited) before the ack.
//
// With parts > 0 the events stream stores each message under one of parts
// partitions of its team and key (a subject transform with partition()),
// and parts durable consumers, each filtered to its partition, share the
// conc handlers: the shape the "partition leases" route of
// docs/architecture.md would give the events stream, measured without
// keyrelay's work.
func baseline(ctx context.Context, js jetstream.JetStream, n, conc, run, parts int) (float64, error) {
	prefix, name := "raw"+strconv.Itoa(run), fmt.Sprintf("RAW%d", run)
	if parts > 0 {
		prefix, name = "rawp"+strconv.Itoa(run), fmt.Sprintf("RAWP%d", run)
	}
	sc := jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute, Replicas: replicas}
	if parts > 0 {
		// prefix.<team>.<key>.key.<type> is stored as
		// prefix.p.<partition>.<team>.<key>.key.<type>.
		sc.SubjectTransform = &jetstream.SubjectTransformConfig{
			Source:      prefix + ".*.*.*.*",
			Destination: fmt.Sprintf("%s.p.{{partition(%d,1,2)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{wildcard(4)}}", prefix, parts),
		}
	}
	if _, err := js.CreateStream(ctx, sc); err != nil {
		return 0, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name + "_REPLY", Subjects: []string{"rawreply" + prefix + ".>"}, Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
		return 0, err
	}
	var filters []string
	if parts == 0 {
		filters = []string{""}
	}
	for p := 0; p < parts; p++ {
		filters = append(filters, fmt.Sprintf("%s.p.%d.>", prefix, p))
	}
	payload := make([]byte, 420) // about the size of a sealed key event
	var done atomic.Int64
	finished := make(chan struct{})
	sem := make(chan struct{}, conc)
	// Why the consumer stopped or a reply failed, for the error when the
	// run does not finish (it once stalled at 394 of 20,000 with no cause
	// shown).
	var lastErr atomic.Value
	for i, f := range filters {
		cons, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "c" + strconv.Itoa(i), FilterSubject: f, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024, AckWait: time.Minute})
		if err != nil {
			return 0, err
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(pullBatch(conc, len(filters))), jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
		if err != nil {
			return 0, err
		}
		defer it.Stop()
		go func() {
			for {
				m, err := it.Next()
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					// A pull request the server dropped shows only as missed
					// heartbeats; the iterator then pulls again by itself. The
					// worker goes on, and pulls with the same short expiry and
					// heartbeat (worker/worker.go), so the baseline does too:
					// stopping here stalled a loaded run at 45,439 of 80,000,
					// and nats.go's 15 s heartbeats cost another run 30 s.
					lastErr.Store(fmt.Sprintf("consumer: %v", err))
					continue
				}
				if err != nil {
					lastErr.Store(fmt.Sprintf("consumer stopped: %v", err))
					return
				}
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					// No message id, as keyrelay's confirmations carry none
					// (their expected last-subject sequence dedupes them).
					r := &nats.Msg{Subject: "rawreply" + prefix + ".x", Data: payload[:200]}
					if _, err := js.PublishMsg(ctx, r); err != nil {
						lastErr.Store(fmt.Sprintf("reply: %v", err))
						_ = m.Nak()
						return
					}
					_ = m.Ack()
					if done.Add(1) == int64(n) {
						close(finished)
					}
				}()
			}
		}()
	}
	start := time.Now()
	if err := publishAsync(js, n, func(i int) *nats.Msg {
		m := &nats.Msg{Subject: fmt.Sprintf("%s.t.k%d.key.created", prefix, i%1000), Data: payload, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, "raw-"+strconv.Itoa(i))
		return m
	}); err != nil {
		return 0, err
	}
	select {
	case <-finished:
	case <-time.After(3 * time.Minute):
		return 0, fmt.Errorf("baseline: only %d of %d messages handled after 3 minutes (last error: %v)", done.Load(), n, lastErr.Load())
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func publishAsync(js jetstream.JetStream, n int, mk func(i int) *nats.Msg) error {
	futs := make([]jetstream.PubAckFuture, 0, 1024)
	for i := 0; i < n; i++ {
		f, err := js.PublishMsgAsync(mk(i))
		if err != nil {
			return err
		}
		futs = append(futs, f)
		if len(futs) == cap(futs) {
			if err := wait(futs); err != nil {
				return err
			}
			futs = futs[:0]
		}
	}
	return wait(futs)
}

func wait(futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		}
	}
	return nil
}

func baselineLatency(ctx context.Context, js jetstream.JetStream, rate int, dur time.Duration, conc int) ([]time.Duration, error) {
	const name = "RAWLAT"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"rawlat.>"}, Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
		return nil, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name + "_REPLY", Subjects: []string{"rawlatreply.>"}, Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024})
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	it, err := cons.Messages(jetstream.PullMaxMessages(conc), jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	sem := make(chan struct{}, conc)
	go func() {
		for {
			m, err := it.Next()
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				continue
			}
			if err != nil {
				return
			}
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				id := m.Headers().Get(jetstream.MsgIDHeader)
				if _, err := js.Publish(ctx, "rawlatreply.x", m.Data()[:200]); err != nil {
					return
				}
				_ = m.Ack()
				mu.Lock()
				lat = append(lat, time.Since(sent[id]))
				mu.Unlock()
			}()
		}
	}()
	payload := make([]byte, 420)
	total := int(float64(rate) * dur.Seconds())
	err = paced(rate, total, func(i int) error {
		id := "l" + strconv.Itoa(i)
		m := &nats.Msg{Subject: "rawlat.t.k.key.created", Data: payload, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, id)
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		_, err := js.PublishMsgAsync(m)
		return err
	})
	if err != nil {
		return nil, err
	}
	return collect(&mu, &lat, total), nil
}

// paced calls fn total times at rate per second, on schedule (no
// coordinated omission: a late tick is sent at once, not skipped).
func paced(rate, total int, fn func(i int) error) error {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; i < total; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// pipeline is a keyrelay worker with an in-memory local provider.
type pipeline struct {
	js     jetstream.JetStream
	kr     *events.Keyring
	cancel context.CancelFunc
	done   chan error
	pub    *client.Publisher
	team   int
	w      *worker.Worker
}

func newPipeline(ctx context.Context, js jetstream.JetStream, kr *events.Keyring, conc int) (*pipeline, error) {
	topo := worker.TopologyConfig{Replicas: replicas, DuplicateWindow: 2 * time.Minute, AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 4 * conc}
	if err := worker.EnsureTopology(ctx, js, topo); err != nil {
		return nil, err
	}
	store, err := local.New(local.Config{})
	if err != nil {
		return nil, err
	}
	reg := providers.NewRegistry()
	reg.Register("local", func(context.Context, providers.Config) (providers.Provider, error) { return store, nil })
	cfg := settings.Default()
	w, err := worker.New(ctx, worker.Config{Concurrency: conc, AckWait: topo.AckWait, ClaimLease: 20 * time.Second, CallTimeout: 10 * time.Second,
		Ownership: ownershipMode},
		worker.Deps{JS: js, Settings: cfg, Registry: reg, Opener: kr, TracerProvider: benchkit.TracerProvider()})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	p := &pipeline{js: js, kr: kr, cancel: cancel, done: make(chan error, 1), pub: client.NewPublisher(js), w: w}
	go func() { p.done <- w.Run(rctx) }()
	for !w.Ready() || (ownershipMode == worker.OwnershipExclusive && !w.HoldsLease()) {
		time.Sleep(5 * time.Millisecond)
	}
	return p, nil
}

func (p *pipeline) stop() { p.cancel(); <-p.done }

func (p *pipeline) mkEvents(ctx context.Context, n, keys int, team string) ([]*nats.Msg, []*events.Event, error) {
	return benchkit.SealedEvents(ctx, p.kr, n, keys, team, func(int) string { return "sk-bench-value-0123456789abcdef" })
}

func (p *pipeline) latency(ctx context.Context, rate int, dur time.Duration, keys int) ([]time.Duration, error) {
	total := int(float64(rate) * dur.Seconds())
	msgs, evs, err := p.mkEvents(ctx, total, keys, "bench-lat")
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	sent := make(map[string]time.Time, total)
	lat := make([]time.Duration, 0, total)
	sub, err := p.js.Conn().Subscribe(events.ConfirmationsPrefix+".bench-lat.>", func(m *nats.Msg) {
		now := time.Now()
		// Subject: keyrelay.confirmations.<team>.<key>.<event_id>
		id := m.Subject[len(events.ConfirmationsPrefix)+len(".bench-lat."):]
		for i := 0; i < len(id); i++ {
			if id[i] == '.' {
				id = id[i+1:]
				break
			}
		}
		mu.Lock()
		if t, ok := sent[id]; ok {
			lat = append(lat, now.Sub(t))
		}
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	err = paced(rate, total, func(i int) error {
		mu.Lock()
		sent[evs[i].ID] = time.Now()
		mu.Unlock()
		_, err := p.js.PublishMsgAsync(msgs[i])
		return err
	})
	if err != nil {
		return nil, err
	}
	return collect(&mu, &lat, total), nil
}

// collect waits up to 30 s for total samples and returns a copy of them.
func collect(mu *sync.Mutex, lat *[]time.Duration, total int) []time.Duration {
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		k := len(*lat)
		mu.Unlock()
		if k >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return append([]time.Duration(nil), (*lat)...)
}

// sharePulls is the -partition-pull flag: "share" splits the handlers'
// pull batch among the partition consumers, "full" (the default) lets
// each pull a whole batch (messages then wait in the client for a
// handler).
var sharePulls bool

// pullBatch is each consumer's pull batch when consumers share conc
// handlers.
func pullBatch(conc, consumers int) int {
	if sharePulls {
		return max(conc/consumers, 2)
	}
	return conc
}
