package benchkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUUse is the CPU time (user + system) spent so far by this process and
// by its children (the Vault and nats-server processes), by command name.
type CPUUse map[string]time.Duration

// clockTick is the unit of /proc/<pid>/stat's utime and stime (USER_HZ,
// 100 on Linux).
const clockTick = 10 * time.Millisecond

// ReadCPU samples CPUUse; on a system without /proc only "bench" is set.
func ReadCPU() CPUUse {
	out := CPUUse{}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["bench"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	eachChild(func(_, comm string, fields []string) {
		if len(fields) < 13 {
			return
		}
		ut, _ := strconv.ParseInt(fields[11], 10, 64)
		st, _ := strconv.ParseInt(fields[12], 10, 64)
		out[comm] += time.Duration(ut+st) * clockTick
	})
	return out
}

// eachChild calls fn for every child process of this one with its pid,
// its command name and the fields of /proc/<pid>/stat after the command
// name (a name may hold spaces).
func eachChild(fn func(pid, comm string, fields []string)) {
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) < 2 || fields[1] != self {
			continue
		}
		fn(filepath.Base(filepath.Dir(f)), s[open+1:end], fields)
	}
}

// PerOp formats the CPU milliseconds spent between a and b per operation,
// by process: each of names (command names; "bench" is this process).
func PerOp(a, b CPUUse, ops int, names ...string) string {
	var parts []string
	for _, name := range names {
		d := b[name] - a[name]
		parts = append(parts, fmt.Sprintf("%s %.3f", strings.TrimSuffix(name, "-server"), float64(d.Microseconds())/1000/float64(ops)))
	}
	return strings.Join(parts, " ")
}
