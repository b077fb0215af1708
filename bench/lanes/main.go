// Command lanes measures what a running bulk job costs the gateway's own
// events: the publish-to-confirmation latency of interactive events
// published at a steady rate (50/s), first with nothing else running (the
// baseline), then while a bulk job of 50,000 key rotations runs on the
// bulk lane at full speed, against the same backend (a provider taking
// 20 ms per call). It prints both p50/p99 and their ratio (target: the p99
// during the job at most 2x the idle p99), and the job's throughput.
//
// It starts a nats-server (bin/nats-server) on a free loopback port; the
// worker runs in this process with the default lane sizes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/worker"
)

func main() {
	jobKeys := flag.Int("job", 50000, "keys rotated by the bulk job")
	rate := flag.Float64("rate", 50, "interactive events per second")
	phase := flag.Duration("phase", 20*time.Second, "how long interactive events are measured in each phase")
	lat := flag.Duration("latency", 20*time.Millisecond, "provider latency per call")
	conc := flag.Int("concurrency", worker.ConcurrencyDefault, "worker concurrency (each lane)")
	serverBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	flag.Parse()
	app.TuneRuntime()
	if err := run(*jobKeys, *rate, *phase, *lat, *conc, *serverBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// latencies records publish-to-confirmation times of interactive events.
type latencies struct {
	mu   sync.Mutex
	sent map[string]time.Time
	got  []time.Duration
}

func (l *latencies) onConfirmation(m *nats.Msg) {
	// Subject: keyrelay.confirmations.<team>.<key>.<event id>
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.sent[id]; ok {
		l.got = append(l.got, now.Sub(t))
		delete(l.sent, id)
	}
	l.mu.Unlock()
}

func (l *latencies) reset() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.got
	l.got = nil
	return out
}

func pct(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func run(jobKeys int, rate float64, phase, lat time.Duration, conc int, serverBin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench-lanes")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	js, stop, err := benchkit.StartNATS(serverBin, dir)
	if err != nil {
		return err
	}
	defer stop()
	kr, stopWorker, err := benchkit.SlowWorker(ctx, js, lat, conc)
	if err != nil {
		return err
	}
	defer stopWorker()

	lats := &latencies{sent: map[string]time.Time{}}
	sub, err := js.Conn().Subscribe(events.ConfirmationsPrefix+".gw.>", lats.onConfirmation)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	// A separate connection publishes the interactive events, as the
	// gateway would.
	gwConn, err := nats.Connect(js.Conn().ConnectedUrl())
	if err != nil {
		return err
	}
	defer gwConn.Close()
	gw, _ := jetstream.New(gwConn)
	seq := 0
	interactive := func(d time.Duration) error {
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			<-tick.C
			seq++
			ev, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "gw", "k-"+strconv.Itoa(seq), 1, []byte("sk-gateway-value"), events.KeyData{})
			if err != nil {
				return err
			}
			b, _ := ev.Encode()
			m := &nats.Msg{Subject: ev.Subject(), Data: b, Header: nats.Header{jetstream.MsgIDHeader: []string{ev.ID}}}
			lats.mu.Lock()
			lats.sent[ev.ID] = time.Now()
			lats.mu.Unlock()
			if _, err := gw.PublishMsgAsync(m); err != nil {
				return err
			}
		}
		time.Sleep(time.Second) // the last confirmations
		return nil
	}

	fmt.Printf("lanes: interactive events at %.0f/s, %v provider latency, concurrency %d per lane, bulk job of %d keys, nats-server %s, %d CPUs\n",
		rate, lat, conc, jobKeys, js.Conn().ConnectedServerVersion(), runtime.NumCPU())
	if err := interactive(phase); err != nil {
		return err
	}
	idle := lats.reset()

	// The bulk job: sealed before timing, published at full speed.
	gen := uint64(time.Now().UnixMicro())
	msgs := make([]*nats.Msg, jobKeys)
	for i := range msgs {
		ev, err := events.NewKeyEvent(ctx, kr, events.KeyRotated, "bulk", "k-"+strconv.Itoa(i), gen, []byte("sk-bulk-value"), events.KeyData{})
		if err != nil {
			return err
		}
		ev.JobID = "job-bench"
		b, err := ev.Encode()
		if err != nil {
			return err
		}
		msgs[i] = &nats.Msg{Subject: ev.SubjectIn(events.LaneBulk), Data: b, Header: nats.Header{jetstream.MsgIDHeader: []string{ev.ID}}}
	}
	before, err := benchkit.Confirmed(ctx, js)
	if err != nil {
		return err
	}
	jobStart := time.Now()
	pubErr := make(chan error, 1)
	go func() { pubErr <- benchkit.PublishAsync(js, msgs) }()
	if err := interactive(phase); err != nil {
		return err
	}
	during := lats.reset()
	if err := <-pubErr; err != nil {
		return err
	}
	after, err := benchkit.Confirmed(ctx, js)
	if err != nil {
		return err
	}
	jobDone := int(after-before) - len(during)
	jobRate := float64(jobDone) / (time.Since(jobStart) - time.Second).Seconds()

	fmt.Printf("  idle:       %4d interactive events   p50 %6.1f ms   p99 %6.1f ms (baseline)\n", len(idle), ms(pct(idle, .5)), ms(pct(idle, .99)))
	fmt.Printf("  during job: %4d interactive events   p50 %6.1f ms   p99 %6.1f ms   job %.0f events/s (%d of %d confirmed in the phase)\n",
		len(during), ms(pct(during, .5)), ms(pct(during, .99)), jobRate, jobDone, jobKeys)
	fmt.Printf("p99 during the job / idle p99: %.2f (target <= 2)\n", float64(pct(during, .99))/float64(pct(idle, .99)))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
