package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/outbox"
)

// buildKeyrelay builds cmd/keyrelay into a temporary directory (a fresh
// build, never a stale bin/keyrelay).
func buildKeyrelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keyrelay")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/keyrelay")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build keyrelay: %v\n%s", err, out)
	}
	return bin
}

type relayProc struct {
	t      *testing.T
	bin    string
	args   []string
	logDir string
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	starts int
}

func (p *relayProc) start() {
	p.t.Helper()
	p.starts++
	log, err := os.Create(filepath.Join(p.logDir, fmt.Sprintf("%s-%d.log", p.name, p.starts)))
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	cmd, exited := p.cmd, make(chan struct{})
	p.exited = exited
	go func() { _ = cmd.Wait(); log.Close(); close(exited) }()
}

func (p *relayProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// 5,000 gateway transactions (10% rolled back) while two relay processes
// run, one of them SIGKILLed at random points three times and restarted.
// Every committed row must be in the stream exactly once, no rolled-back
// row at all, and each key's generations must increase in stream order.
func TestCrashRecovery5000Transactions(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	t.Parallel()
	db := migratedDB(t) // skips without PostgreSQL
	bin := buildKeyrelay(t)
	srv, js := startNATS(t)
	logDir := t.TempDir()
	args := []string{"outbox", "relay", "--nats-url", srv.URL, "--dsn", dsnFor(db), "--poll", "200ms",
		"--batch", "200", "--listen", "off", "--log-level", "warn", "--max-backoff", "500ms", "--publish-timeout", "3s"}
	a := &relayProc{t: t, bin: bin, args: args, logDir: logDir, name: "relay-a"}
	b := &relayProc{t: t, bin: bin, args: args, logDir: logDir, name: "relay-b"}
	a.start()
	b.start()
	var mu sync.Mutex // a is restarted by the killer goroutine
	t.Cleanup(func() { mu.Lock(); defer mu.Unlock(); a.kill(); b.kill() })

	const (
		txns    = 5000
		writers = 8
		keys    = 200
	)
	type result struct {
		committed, rolledBack []string // event ids
		committedTx, rbTx     int
	}
	results := make([]result, writers)
	var wg sync.WaitGroup
	ctx := context.Background()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, dsnFor(db))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close(ctx)
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			res := &results[w]
			for i := 0; i < txns/writers; i++ {
				// Each key belongs to one writer, so a key's transactions
				// never overlap (as when the gateway locks the key's row).
				key := fmt.Sprintf("key-%d", w+writers*rng.IntN(keys/writers))
				tx, err := conn.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				var ids []string
				for r := 0; r < 1+rng.IntN(2); r++ {
					ev := updated(fmt.Sprintf("team-%d", w%3), key, 0, i)
					if err := outbox.Enqueue(ctx, tx, ev); err != nil {
						t.Error(err)
						return
					}
					ids = append(ids, ev.ID)
				}
				if rng.IntN(20) == 0 {
					time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond) // in flight a while
				}
				if rng.IntN(10) == 0 {
					if err := tx.Rollback(ctx); err != nil {
						t.Error(err)
						return
					}
					res.rolledBack = append(res.rolledBack, ids...)
					res.rbTx++
				} else {
					if err := tx.Commit(ctx); err != nil {
						t.Error(err)
						return
					}
					res.committed = append(res.committed, ids...)
					res.committedTx++
				}
				time.Sleep(time.Duration(rng.IntN(6000)) * time.Microsecond)
			}
		}()
	}
	// Kill relay A three times at random points while the writers run.
	killed := make(chan []time.Duration)
	go func() {
		var at []time.Duration
		start := time.Now()
		for k := 0; k < 3; k++ {
			time.Sleep(time.Duration(300+rand.IntN(900)) * time.Millisecond)
			mu.Lock()
			a.kill()
			at = append(at, time.Since(start).Round(time.Millisecond))
			mu.Unlock()
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			mu.Lock()
			a.start()
			mu.Unlock()
		}
		killed <- at
	}()
	wg.Wait()
	killsAt := <-killed
	if t.Failed() {
		return
	}
	conn := connect(t, dsnFor(db))
	testenv.Eventually(t, 60*time.Second, "every committed row sent", func() bool { return count(t, conn, "state <> 'sent'") == 0 })

	var committed, rolledBack []string
	var committedTx, rbTx int
	for _, r := range results {
		committed, rolledBack = append(committed, r.committed...), append(rolledBack, r.rolledBack...)
		committedTx, rbTx = committedTx+r.committedTx, rbTx+r.rbTx
	}
	rowSeq := map[string]uint64{}
	rows, err := conn.Query(ctx, "SELECT event_id, seq FROM keyrelay.keyrelay_outbox")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var s int64
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		rowSeq[id] = uint64(s)
	}
	rows.Close()

	got := readStream(t, js)
	seen := map[string]int{}
	last := map[string]uint64{}
	orderViolations, genMismatch := 0, 0
	for _, s := range got {
		seen[s.ev.ID]++
		k := s.ev.TeamID + "/" + s.ev.KeyID
		if s.ev.Generation <= last[k] {
			orderViolations++
		}
		last[k] = s.ev.Generation
		if s.ev.Generation != rowSeq[s.ev.ID] || s.msgID != s.ev.ID {
			genMismatch++
		}
	}
	missing, dup, rbFound := 0, 0, 0
	for _, id := range committed {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	for _, id := range rolledBack {
		if seen[id] > 0 {
			rbFound++
		}
	}
	summary := fmt.Sprintf("outbox crash test: %d transactions (%d committed, %d rolled back), %d committed rows, %d rolled-back rows; "+
		"relay A SIGKILLed at %v; stream: %d messages, %d distinct event ids; missing %d, duplicated %d, rolled-back present %d, "+
		"per-key order violations %d, generation/msg-id mismatches %d",
		committedTx+rbTx, committedTx, rbTx, len(committed), len(rolledBack), killsAt, len(got), len(seen), missing, dup, rbFound,
		orderViolations, genMismatch)
	t.Log(summary)
	fmt.Println(summary)
	if committedTx+rbTx != txns || missing != 0 || dup != 0 || rbFound != 0 || orderViolations != 0 || genMismatch != 0 || len(got) != len(committed) {
		t.Fatal("outbox guarantees violated (relay logs in " + logDir + ")")
	}
}
