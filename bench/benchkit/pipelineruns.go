package benchkit

import (
	"bufio"
	"bytes"
	"regexp"
	"strconv"
)

// PipelineRun is one counted run of bench/pipeline, as its output line
// gives it: both sides' rates and CPU time per event.
type PipelineRun struct {
	BaselineRate, KeyrelayRate float64 // events/s
	// Milliseconds of CPU per event of nats-server and of the bench
	// process, on each side.
	BaselineNATS, BaselineBench float64
	KeyrelayNATS, KeyrelayBench float64
	Line                        string
}

// Ratio is keyrelay's rate over the baseline's.
func (r PipelineRun) Ratio() float64 { return r.KeyrelayRate / r.BaselineRate }

// WorkerCPU is the bench process's CPU per keyrelay event (the worker and
// the publisher) over its CPU per baseline message.
func (r PipelineRun) WorkerCPU() float64 { return r.KeyrelayBench / r.BaselineBench }

// ServerCPU is nats-server's CPU per keyrelay event over its CPU per
// baseline message.
func (r PipelineRun) ServerCPU() float64 { return r.KeyrelayNATS / r.BaselineNATS }

// pipelineRunLine matches a counted run ("run N:", not "warm-up:").
var pipelineRunLine = regexp.MustCompile(`run \d+: baseline\s+(\d+) events/s\s+keyrelay\s+(\d+) events/s\s+ratio [\d.]+\s+ms CPU per event: baseline nats ([\d.]+) bench ([\d.]+); keyrelay nats ([\d.]+) bench ([\d.]+)`)

// ParsePipelineRuns returns the counted runs in bench/pipeline's output.
func ParsePipelineRuns(out []byte) []PipelineRun {
	var runs []PipelineRun
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := pipelineRunLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var f [6]float64
		for i := range f {
			f[i], _ = strconv.ParseFloat(m[i+1], 64) // the pattern admits numbers only
		}
		runs = append(runs, PipelineRun{BaselineRate: f[0], KeyrelayRate: f[1], BaselineNATS: f[2], BaselineBench: f[3],
			KeyrelayNATS: f[4], KeyrelayBench: f[5], Line: sc.Text()})
	}
	return runs
}
