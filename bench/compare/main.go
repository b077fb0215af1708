// Command compare measures a change to keyrelay with the pipeline
// benchmark: it builds bench/pipeline at two versions (a git revision, and
// another revision or the working tree), runs the two builds alternately
// (A B, B A, A B, …, so the machine's drift spreads over both), and prints
// per build the medians of the per-run figures: the ratio to the raw
// JetStream baseline of the same run, the CPU per event of the bench
// process (the worker) and of nats-server each divided by the baseline's,
// and both sides' rates and CPU per event in absolute terms.
//
//	go run ./bench/compare [-a HEAD] [-b REV] [-rounds 6] [-runs 2] [-- pipeline flags, e.g. -cluster 3]
//
// Without -b the second build is the working tree. The per-run ratios of
// one build spread by ±0.05 on a shared 2-CPU machine, so a change of a
// few percent shows first in the CPU per event divided by the baseline's,
// which the two sides of one run share the machine's state for. It is how
// BENCHMARKS.md's before/after figures are made since the eleventh
// session; it is not part of `make bench` (about 40 s per invocation on
// one server, two invocations per round).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/keyrelay/keyrelay/bench/benchkit"
)

func main() {
	a := flag.String("a", "HEAD", "git revision of the first build")
	b := flag.String("b", "", "git revision of the second build (empty: the working tree)")
	rounds := flag.Int("rounds", 6, "rounds; each runs both builds once, in alternating order")
	runs := flag.Int("runs", 2, "counted runs per invocation of bench/pipeline")
	flag.Parse()
	if err := run(*a, *b, *rounds, *runs, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

type build struct {
	name, bin string
	runs      []benchkit.PipelineRun
}

func run(revA, revB string, rounds, runs int, extra []string) error {
	dir, err := os.MkdirTemp("", "keyrelay-compare")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	builds := []*build{{name: revA}, {name: revB}}
	if revB == "" {
		builds[1].name = "working tree"
	}
	for i, bd := range builds {
		bd.bin = filepath.Join(dir, "pipeline-"+string(rune('a'+i)))
		rev := revA
		if i == 1 {
			rev = revB
		}
		if err := buildPipeline(dir, rev, bd.bin); err != nil {
			return fmt.Errorf("build %s: %w", bd.name, err)
		}
	}
	args := append([]string{"-runs", strconv.Itoa(runs), "-latency-duration", "1s"}, extra...)
	fmt.Printf("compare: bench/pipeline %v, A = %s, B = %s, %d rounds, alternated\n", args, builds[0].name, builds[1].name, rounds)
	for r := 0; r < rounds; r++ {
		order := builds
		if r%2 == 1 {
			order = []*build{builds[1], builds[0]}
		}
		for _, bd := range order {
			out, err := exec.Command(bd.bin, args...).CombinedOutput()
			if err != nil {
				os.Stderr.Write(out)
				return fmt.Errorf("round %d, %s: %w", r+1, bd.name, err)
			}
			got := benchkit.ParsePipelineRuns(out)
			if len(got) == 0 {
				os.Stderr.Write(out)
				return fmt.Errorf("round %d, %s: no run lines in bench/pipeline's output", r+1, bd.name)
			}
			for _, pr := range got {
				fmt.Printf("  round %d %s %s\n", r+1, label(bd, builds), strings.TrimSpace(pr.Line))
			}
			bd.runs = append(bd.runs, got...)
		}
	}
	fmt.Println("build  runs  median ratio   worker CPU / baseline's   nats-server CPU / baseline's   keyrelay events/s (ms CPU: nats, bench)   baseline events/s (ms CPU: nats, bench)")
	for _, bd := range builds {
		m := func(f func(benchkit.PipelineRun) float64) float64 {
			v := make([]float64, len(bd.runs))
			for i, pr := range bd.runs {
				v[i] = f(pr)
			}
			return benchkit.Median(v)
		}
		fmt.Printf("%-5s  %4d  %12.3f   %23.3f   %28.3f   %8.0f (%.4f, %.4f)                 %8.0f (%.4f, %.4f)\n", label(bd, builds), len(bd.runs),
			m(benchkit.PipelineRun.Ratio), m(benchkit.PipelineRun.WorkerCPU), m(benchkit.PipelineRun.ServerCPU),
			m(func(p benchkit.PipelineRun) float64 { return p.KeyrelayRate }),
			m(func(p benchkit.PipelineRun) float64 { return p.KeyrelayNATS }), m(func(p benchkit.PipelineRun) float64 { return p.KeyrelayBench }),
			m(func(p benchkit.PipelineRun) float64 { return p.BaselineRate }),
			m(func(p benchkit.PipelineRun) float64 { return p.BaselineNATS }), m(func(p benchkit.PipelineRun) float64 { return p.BaselineBench }))
	}
	return nil
}

func label(bd *build, builds []*build) string {
	if bd == builds[0] {
		return "A"
	}
	return "B"
}

// buildPipeline builds bench/pipeline at rev (empty: the working tree)
// into bin. A revision is checked out in a temporary worktree, removed
// afterwards.
func buildPipeline(dir, rev, bin string) error {
	src := "."
	if rev != "" {
		src = filepath.Join(dir, "src-"+filepath.Base(bin))
		if out, err := exec.Command("git", "worktree", "add", "--detach", src, rev).CombinedOutput(); err != nil {
			return fmt.Errorf("git worktree add %s: %v: %s", rev, err, bytes.TrimSpace(out))
		}
		defer exec.Command("git", "worktree", "remove", "--force", src).Run()
	}
	cmd := exec.Command("go", "build", "-o", bin, "./bench/pipeline")
	cmd.Dir = src
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}
