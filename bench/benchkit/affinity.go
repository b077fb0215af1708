package benchkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Isolation splits the machine's CPUs between a backend server and
// everything else of a benchmark (this process and the nats-servers it
// starts), as a deployment does when the backend runs on its own
// machine. The zero value shares every CPU.
type Isolation struct {
	// Backend is the CPU the backend server is bound to; the rest are
	// this process's and its other children's.
	Backend []int
	// Rest is every other CPU this process may use.
	Rest []int
}

// Enabled reports whether the CPUs are split.
func (i Isolation) Enabled() bool { return len(i.Backend) > 0 }

// String describes the split for a benchmark's header line.
func (i Isolation) String() string {
	if !i.Enabled() {
		return "every process on every CPU"
	}
	return fmt.Sprintf("the backend on CPU %s, nats-server and the bench process on CPU %s", cpuList(i.Backend), cpuList(i.Rest))
}

// ErrTooFewCPUs: the machine cannot give a backend a CPU of its own.
var ErrTooFewCPUs = errors.New("isolating the backend needs 2 CPUs")

// IsolateFirstCPU gives the first CPU this process may use to the backend
// and binds every thread of this process to the others; processes started
// afterwards (nats-server) inherit that. It needs at least two CPUs.
func IsolateFirstCPU() (Isolation, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return Isolation{}, fmt.Errorf("cpu affinity: %w", err)
	}
	var cpus []int
	for c := 0; c < len(set)*64; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return Isolation{}, fmt.Errorf("%w, this process may use %d", ErrTooFewCPUs, len(cpus))
	}
	iso := Isolation{Backend: cpus[:1], Rest: cpus[1:]}
	if err := pinThreads(iso.Rest); err != nil {
		return Isolation{}, err
	}
	return iso, nil
}

// pinThreads binds every thread of this process to cpus. A thread inherits
// its creator's binding, so once every thread listed is bound no new one
// escapes; a thread created while the list was read is caught by the next
// pass.
func pinThreads(cpus []int) error {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("cpu affinity: %w", err)
		}
		fresh := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			// A thread that exited meanwhile is gone: nothing to bind.
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cpu affinity of thread %d: %w", tid, err)
			}
			done[tid] = true
			fresh++
		}
		if fresh == 0 {
			return nil
		}
	}
}

// Command is exec.Command for the backend server: bound to i.Backend
// (through util-linux's taskset, so the server sees only that CPU from its
// first instruction) when the CPUs are split.
func (i Isolation) Command(bin string, args ...string) (*exec.Cmd, error) {
	if !i.Enabled() {
		return exec.Command(bin, args...), nil
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("isolating the backend needs taskset (util-linux): %w", err)
	}
	return exec.Command(ts, append([]string{"--cpu-list", cpuList(i.Backend), bin}, args...)...), nil
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}
