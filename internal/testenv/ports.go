package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Test servers listen on ports chosen below the kernel's ephemeral range,
// each reserved for the life of the test process that chose it.
//
// A port bound to :0 comes from the ephemeral range, and once released it
// can be taken at once by any outgoing connection of any process (the
// tests open thousands): a cluster node then failed to bind its route
// port and the cluster never formed. Below the range no connection takes
// it, but another test process choosing at random could, before the
// server is started (a cluster may start its nodes a minute after choosing
// their ports): so each chosen port is also locked, with flock on a file
// named after it, by the process that chose it until it exits. The lock
// goes with the process, however it ends.
var (
	portsOnce   sync.Once
	portLo      int // first port of the range picked from (0: use :0)
	portHi      int // one past its last
	portLockDir string
	portsMu     sync.Mutex
	portsHeld   = map[int]*os.File{} // this process's reserved ports
)

const portPicks = 500

func portRange() {
	portsOnce.Do(func() {
		ephemeralLo := 32768
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			if f := strings.Fields(string(b)); len(f) == 2 {
				if v, err := strconv.Atoi(f[0]); err == nil {
					ephemeralLo = v
				}
			}
		}
		dir := filepath.Join(os.TempDir(), "keyrelay-test-ports")
		if ephemeralLo > 12000 && os.MkdirAll(dir, 0o777) == nil {
			portLo, portHi, portLockDir = 10000, ephemeralLo, dir
		}
	})
}

// reserve locks port p for this process; false when another process
// holds it.
func reserve(p int) bool {
	f, err := os.OpenFile(filepath.Join(portLockDir, strconv.Itoa(p)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return false
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		f.Close()
		return false
	}
	portsHeld[p] = f // kept open: the lock lasts as long as the process
	return true
}

// listenFree returns a listener on a free loopback port reserved for this
// process: from below the ephemeral range when there is room there (see
// above), never one this process handed out before.
func listenFree(t testing.TB) net.Listener {
	t.Helper()
	portRange()
	portsMu.Lock()
	defer portsMu.Unlock()
	if portLo > 0 {
		for range portPicks {
			p := portLo + rand.IntN(portHi-portLo)
			if portsHeld[p] != nil || !reserve(p) {
				continue
			}
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				continue // in use outside the tests; stays reserved, unused
			}
			return l
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
