// Command latency measures the pipeline against a slow backend: a provider
// that takes a fixed latency per call (the in-memory local store behind a
// sleep), 5,000 events over distinct keys, and reports the confirmed rate
// against the most the worker's concurrency allows at that latency
// (concurrency / latency). A worker that holds its slots only while a
// provider call is in flight reaches close to it; one that serializes
// anything per call, or waits on its own infrastructure, does not.
//
// It starts a nats-server (bin/nats-server) on a free loopback port.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/internal/app"
)

func main() {
	n := flag.Int("events", 5000, "events per run, each on its own key")
	conc := flag.Int("concurrency", 64, "worker concurrency")
	lat := flag.Duration("latency", 50*time.Millisecond, "provider latency per call")
	runs := flag.Int("runs", 3, "runs (the median is reported)")
	serverBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	stopProfile := benchkit.StartCPUProfile(*cpuprofile)
	defer stopProfile()
	app.TuneRuntime()
	if err := run(*n, *conc, *lat, *runs, *serverBin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stopProfile()
		os.Exit(1)
	}
}

func run(n, conc int, lat time.Duration, runs int, serverBin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench-latency")
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
	ceiling := float64(conc) / lat.Seconds()
	fmt.Printf("keyrelay against a slow backend: %v per provider call, concurrency %d, %d events on distinct keys per run, nats-server %s, %d CPUs\n",
		lat, conc, n, js.Conn().ConnectedServerVersion(), runtime.NumCPU())
	var rates, ratios []float64
	for r := 0; r < runs; r++ {
		msgs, _, err := benchkit.SealedEvents(ctx, kr, n, n, "bench-"+strconv.Itoa(r), func(int) string { return "sk-bench-value-0123456789abcdef" })
		if err != nil {
			return err
		}
		f, err := benchkit.Throughput(ctx, js, msgs)
		if err != nil {
			return err
		}
		fmt.Printf("  run %d: %6.0f events/s   concurrency/latency %6.0f events/s   ratio %.2f\n", r+1, f, ceiling, f/ceiling)
		rates, ratios = append(rates, f), append(ratios, f/ceiling)
	}
	fmt.Printf("throughput (median of %d runs): %.0f events/s against concurrency/latency %.0f, median ratio %.2f (target >= 0.9)\n",
		runs, benchkit.Median(rates), ceiling, benchkit.Median(ratios))
	return nil
}
