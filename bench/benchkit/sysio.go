package benchkit

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SysIO counts read and write system calls (syscr, syscw of /proc/<pid>/io)
// of this process ("bench") and of its children, by command name.
type SysIO map[string][2]uint64

// ReadSysIO samples SysIO; without /proc it is empty.
func ReadSysIO() SysIO {
	out := SysIO{}
	read := func(pid, name string) {
		b, err := os.ReadFile("/proc/" + pid + "/io")
		if err != nil {
			return
		}
		var v [2]uint64
		for _, l := range strings.Split(string(b), "\n") {
			k, val, ok := strings.Cut(l, ": ")
			if !ok {
				continue
			}
			n, _ := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
			switch k {
			case "syscr":
				v[0] = n
			case "syscw":
				v[1] = n
			}
		}
		o := out[name]
		out[name] = [2]uint64{o[0] + v[0], o[1] + v[1]}
	}
	read(strconv.Itoa(os.Getpid()), "bench")
	eachChild(func(pid, comm string, _ []string) { read(pid, comm) })
	return out
}

// SysIOPerOp formats the read and write system calls between a and b per
// operation, by process.
func SysIOPerOp(a, b SysIO, ops int, names ...string) string {
	var parts []string
	for _, name := range names {
		r := float64(b[name][0]-a[name][0]) / float64(ops)
		w := float64(b[name][1]-a[name][1]) / float64(ops)
		parts = append(parts, fmt.Sprintf("%s r %.2f w %.2f", strings.TrimSuffix(name, "-server"), r, w))
	}
	return strings.Join(parts, ", ")
}
