package outbox_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/internal/testenv"
)

// blackhole forwards TCP to target until Freeze: from then on the
// connections it already forwards swallow everything, in both directions,
// and stay open (a failover that moved the server's address, a silent
// network partition: no RST ever comes), while new connections are
// forwarded as before (they reach the new primary).
type blackhole struct {
	addr, target string
	mu           sync.Mutex
	frozen       []*atomic.Bool
	cur          *atomic.Bool
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{addr: ln.Addr().String(), target: target, cur: new(atomic.Bool)}
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			b.mu.Lock()
			conns = append(conns, c, u)
			frozen := b.cur
			b.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 && !frozen.Load() {
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						if err != io.EOF {
							return
						}
						return
					}
				}
			}
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return b
}

// Freeze black-holes every connection forwarded so far.
func (b *blackhole) Freeze() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cur.Store(true)
	b.cur = new(atomic.Bool)
}

// After a PostgreSQL failover that leaves the relay's connections hanging
// (no reset ever arrives), the relay gives up on them, reconnects and
// publishes again; it does not wait for the kernel's TCP timeout (about
// 15 minutes) while reporting ready.
func TestRelayRecoversFromSilentlyDeadConnection(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	bh := newBlackhole(t, "127.0.0.1:5432")
	r := startRelay(t, testConfig("postgres://postgres@"+bh.addr+"/"+db+"?sslmode=disable&connect_timeout=2"), js, nil)
	testenv.Eventually(t, 10*time.Second, "relay ready", func() bool { return r.Ready() == nil })
	enqueue(t, conn, updated("t1", "k1", 0, 0))
	testenv.Eventually(t, 10*time.Second, "first row sent", func() bool { return count(t, conn, "state = 'sent'") == 1 })

	// The failover: the relay's connections hang, and the server that held
	// its sessions (and their advisory locks) is gone.
	bh.Freeze()
	if _, err := conn.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		enqueue(t, conn, updated("t1", fmt.Sprintf("k%d", i), 0, i+1))
	}
	testenv.Eventually(t, 40*time.Second, "rows sent after the failover", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	if got := readStream(t, js); len(got) != 6 {
		t.Fatalf("stream holds %d events, want 6", len(got))
	}
}
