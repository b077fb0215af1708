package benchkit

import (
	"math"
	"testing"
)

func TestParsePipelineRuns(t *testing.T) {
	out := []byte(`keyrelay pipeline benchmark: nats-server 2.15.2 (separate process, file storage), 20000 events over 1000 keys, concurrency 64
  warm-up: baseline    13103 events/s   keyrelay     5257 events/s   ratio 0.40   ms CPU per event: baseline nats 0.033 bench 0.029; keyrelay nats 0.079 bench 0.084; settings lookups per event 0.04
           system calls per event (reads, writes): baseline nats r 0.16 w 2.12, bench r 0.12 w 0.64; keyrelay nats r 0.21 w 4.22, bench r 0.18 w 1.32
  run 1: baseline    14356 events/s   keyrelay     5126 events/s   ratio 0.36   ms CPU per event: baseline nats 0.031 bench 0.027; keyrelay nats 0.084 bench 0.086; settings lookups per event 0.04
         system calls per event (reads, writes): baseline nats r 0.15 w 2.09, bench r 0.11 w 0.58; keyrelay nats r 0.21 w 4.22, bench r 0.19 w 1.21
  run 2: baseline    12574 events/s   keyrelay     5078 events/s   ratio 0.40   ms CPU per event: baseline nats 0.032 bench 0.029; keyrelay nats 0.085 bench 0.088; settings lookups per event 0.04
throughput (median of 2 runs): raw JetStream baseline 14356 events/s, keyrelay pipeline 5126 events/s, median ratio 0.40
`)
	runs := ParsePipelineRuns(out)
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2 (the warm-up is not counted)", len(runs))
	}
	r := runs[0]
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }
	if r.BaselineRate != 14356 || r.KeyrelayRate != 5126 || r.BaselineNATS != 0.031 || r.BaselineBench != 0.027 || r.KeyrelayNATS != 0.084 || r.KeyrelayBench != 0.086 {
		t.Fatalf("run 1 read as %+v", r)
	}
	if !near(r.Ratio(), 5126.0/14356) || !near(r.WorkerCPU(), 0.086/0.027) || !near(r.ServerCPU(), 0.084/0.031) {
		t.Fatalf("run 1: ratio %v, worker %v, server %v", r.Ratio(), r.WorkerCPU(), r.ServerCPU())
	}
	if runs[1].KeyrelayRate != 5078 {
		t.Fatalf("run 2 read as %+v", runs[1])
	}
	if ParsePipelineRuns([]byte("bench: only 394 of 20000 messages\n")) != nil {
		t.Fatal("a failed run's output gave runs")
	}
}
