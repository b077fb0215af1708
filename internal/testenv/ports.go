package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Test servers listen on ports chosen below the kernel's ephemeral range.
// A port bound to :0 comes from that range, and once released it can be
// taken at once by any outgoing connection of any process (the tests open
// thousands): a cluster node then failed to bind its route port and the
// cluster never formed. Below the range only another test choosing the
// same port at random in the same moment can take it.
var (
	portsOnce    sync.Once
	portLo       int // first port of the range picked from (0: use :0)
	portHi       int // one past its last
	portsPickMu  sync.Mutex
	portsHanded  = map[int]bool{}
	portsRetries = 200
)

func portRange() (lo, hi int) {
	portsOnce.Do(func() {
		ephemeralLo := 32768
		if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
			if f := strings.Fields(string(b)); len(f) == 2 {
				if v, err := strconv.Atoi(f[0]); err == nil {
					ephemeralLo = v
				}
			}
		}
		if ephemeralLo > 12000 {
			portLo, portHi = 10000, ephemeralLo
		}
	})
	return portLo, portHi
}

// listenFree returns a listener on a free loopback port, from below the
// ephemeral range when there is room there, never one this process handed
// out before.
func listenFree(t testing.TB) net.Listener {
	t.Helper()
	lo, hi := portRange()
	portsPickMu.Lock()
	defer portsPickMu.Unlock()
	if lo > 0 {
		for range portsRetries {
			p := lo + rand.IntN(hi-lo)
			if portsHanded[p] {
				continue
			}
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				continue
			}
			portsHanded[p] = true
			return l
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	portsHanded[l.Addr().(*net.TCPAddr).Port] = true
	return l
}
