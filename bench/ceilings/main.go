// Command ceilings measures what the pipeline benchmark would reach with
// fewer ledger writes per event: keyrelay as committed, with the claim's
// KV write skipped, with it replaced by an intent appended to a
// group-committed log, with the commit's skipped, and with both, against the
// raw JetStream baseline of each run. It builds bench/pipeline with the
// keyrelay_ceiling tag (worker/ceiling_unsafe.go: the skips are unsafe and
// exist only in that build), runs it once per variant per round with
// KEYRELAY_CEILING_SKIP set, the variants alternated so the machine's
// drift spreads over all of them, and prints per variant the median ratio
// and the CPU per event of the worker process and of nats-server, each
// divided by the baseline's in the same run.
//
//	go run ./bench/ceilings [-rounds 4] [-- pipeline flags, e.g. -cluster 3]
//
// It is how docs/architecture.md's "what each route reaches" figures are
// made; it is not part of `make bench` (about 2 minutes per round on one
// server, 5 on the cluster).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/keyrelay/keyrelay/bench/benchkit"
)

// intent: the claim's write replaced by an intent appended to a
// group-committed log (ownership.IntentLog), the claimless route's record.
var variants = []string{"none", "claim", "intent", "commit", "both"}

type sample struct{ ratio, worker, server float64 }

func main() {
	rounds := flag.Int("rounds", 4, "rounds; each runs every variant once")
	runs := flag.Int("runs", 2, "counted runs per invocation of bench/pipeline")
	flag.Parse()
	if err := run(*rounds, *runs, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "ceilings:", err)
		os.Exit(1)
	}
}

func run(rounds, runs int, extra []string) error {
	dir, err := os.MkdirTemp("", "keyrelay-ceilings")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "pipeline-ceiling")
	build := exec.Command("go", "build", "-tags", "keyrelay_ceiling", "-o", bin, "./bench/pipeline")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build bench/pipeline with keyrelay_ceiling: %w", err)
	}
	args := append([]string{"-runs", strconv.Itoa(runs), "-latency-duration", "1s"}, extra...)
	fmt.Printf("ledger-write ceilings: bench/pipeline %v, %d rounds, variants alternated\n", args, rounds)
	got := map[string][]sample{}
	for r := 1; r <= rounds; r++ {
		for _, v := range variants {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "KEYRELAY_CEILING_SKIP="+v)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				os.Stderr.Write(out.Bytes())
				return fmt.Errorf("round %d, %s: %w", r, v, err)
			}
			parsed := benchkit.ParsePipelineRuns(out.Bytes())
			for _, pr := range parsed {
				got[v] = append(got[v], sample{ratio: pr.Ratio(), worker: pr.WorkerCPU(), server: pr.ServerCPU()})
				fmt.Printf("  round %d %-6s %s\n", r, v, pr.Line)
			}
			if len(parsed) == 0 {
				os.Stderr.Write(out.Bytes())
				return fmt.Errorf("round %d, %s: no run lines in bench/pipeline's output", r, v)
			}
		}
	}
	fmt.Println("variant  ledger writes  runs  median ratio (min-max)   worker CPU / baseline's   nats-server CPU / baseline's")
	writes := map[string]int{"none": 2, "claim": 1, "intent": 1, "commit": 1, "both": 0}
	for _, v := range variants {
		s := got[v]
		ratios := column(s, func(x sample) float64 { return x.ratio })
		fmt.Printf("%-8s %13d  %4d  %5.2f (%.2f-%.2f)   %23.2f   %28.2f\n", v, writes[v], len(s),
			benchkit.Median(ratios), slices.Min(ratios), slices.Max(ratios),
			benchkit.Median(column(s, func(x sample) float64 { return x.worker })),
			benchkit.Median(column(s, func(x sample) float64 { return x.server })))
	}
	return nil
}

// column is one figure of every sample.
func column(s []sample, f func(sample) float64) []float64 {
	v := make([]float64, len(s))
	for i, x := range s {
		v[i] = f(x)
	}
	return v
}
