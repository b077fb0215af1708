package benchkit

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// allowed reads the Cpus_allowed_list line of a /proc status file.
func allowed(t *testing.T, status []byte) string {
	t.Helper()
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list in %q", status)
	return ""
}

// expand reads a CPU list such as "0-3,5".
func expand(t *testing.T, list string) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			t.Fatalf("cpu list %q", list)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				t.Fatalf("cpu list %q", list)
			}
		}
		for c := a; c <= b; c++ {
			out[c] = true
		}
	}
	return out
}

// TestIsolateFirstCPU: every thread of this process, those started before
// and after, leaves the backend's CPU to it, and the backend's command runs
// on that CPU alone.
func TestIsolateFirstCPU(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs")
	}
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	// Leave the test binary as it was for whatever runs after.
	t.Cleanup(func() {
		set := before
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, e := range tasks {
			if tid, err := strconv.Atoi(e.Name()); err == nil {
				_ = unix.SchedSetaffinity(tid, &set)
			}
		}
	})

	iso, err := IsolateFirstCPU()
	if err != nil {
		t.Fatal(err)
	}
	if len(iso.Backend) != 1 || len(iso.Rest) == 0 || iso.Rest[0] == iso.Backend[0] {
		t.Fatalf("split %+v", iso)
	}
	backend := strconv.Itoa(iso.Backend[0])

	// Threads made after the split, busy at once so the runtime starts more.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil {
				t.Error(err)
				return
			}
			if set.IsSet(iso.Backend[0]) {
				t.Errorf("a thread made after the split may run on the backend's CPU %d", iso.Backend[0])
			}
		}()
	}
	wg.Wait()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/status")
		if err != nil {
			continue // exited meanwhile
		}
		if cpus := expand(t, allowed(t, b)); cpus[iso.Backend[0]] {
			t.Errorf("thread %s may run on the backend's CPU: %s", e.Name(), allowed(t, b))
		}
	}

	cmd, err := iso.Command("cat", "/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := allowed(t, out); got != backend {
		t.Errorf("backend command on CPUs %q, want %q", got, backend)
	}
	if got := iso.String(); !strings.Contains(got, "CPU "+backend) {
		t.Errorf("String() = %q", got)
	}
	if got := (Isolation{}).String(); got != "every process on every CPU" {
		t.Errorf("zero String() = %q", got)
	}
}
