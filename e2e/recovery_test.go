package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestVaultLossDriftRestore (issue 11): 2,000 keys written through the
// pipeline to Vault; Vault is replaced by a new, empty dev server at the
// same address. `keyrelay drift` reports 2,000 missing; a `keyrelay
// restore` is SIGKILLed partway and resumed (--resume, from its
// checkpoint in JetStream) while 200 rotations are
// published live. Afterwards every key holds its newest generation,
// `drift` exits 0, a third restore has nothing to do, and no key has two
// versions written by the same event.
func TestVaultLossDriftRestore(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	if !slices.Contains(app.Registry().Names(), vault.Name) {
		t.Skip("vault provider not registered")
	}
	const keys, rotated = 2000, 200
	v := testenv.StartVault(t, testenv.VaultOptions{})
	u, _ := url.Parse(v.Addr)
	port, _ := strconv.Atoi(u.Port())
	useVaultEnv(t, v)
	e := newEnv(t, envOptions{system: vault.Name})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e.startWorker("w1")
	e.startWorker("w2")
	pub := client.NewPublisher(e.js)
	publish := func(evs []*events.Event) {
		if err := publishAll(ctx, pub, evs); err != nil {
			t.Fatal(err)
		}
	}
	team := func(k int) string { return fmt.Sprintf("team-%d", k%4) }
	key := func(k int) string { return fmt.Sprintf("key-%04d", k) }
	mk := func(k int, gen uint64) *events.Event {
		typ := events.KeyCreated
		if gen > 1 {
			typ = events.KeyRotated
		}
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team(k), key(k), gen, []byte(value(team(k), key(k), gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	var created []*events.Event
	for k := 0; k < keys; k++ {
		created = append(created, mk(k, 1))
	}
	publish(created)
	e.waitQuiet(ctx, keys, 3*time.Minute)

	bin := keyrelayBinary(t)
	cli := func(args ...string) (string, int) {
		cmd := exec.CommandContext(ctx, bin, append([]string{"--config", e.config}, args...)...)
		cmd.Env = environ(t)
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return string(out), 0
	}
	if out, code := cli("drift", "--all"); code != 0 {
		t.Fatalf("drift before the loss: exit %d\n%s", code, tail(out, 2000))
	}

	// Vault is lost: a new, empty dev server at the same address.
	v.Stop()
	testenv.StartVault(t, testenv.VaultOptions{Port: port})
	out, code := cli("drift", "--all", "--json")
	var rep recovery.Report
	if code != recovery.ExitDrift || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("drift after the loss: exit %d\n%s", code, tail(out, 2000))
	}
	missing := 0
	for _, r := range rep.Rows {
		if r.Status == recovery.StatusMissing {
			missing++
		}
	}
	t.Logf("drift after the loss: %d missing of %d keys", missing, keys)
	if missing != keys {
		t.Fatalf("%d missing, want %d", missing, keys)
	}

	// A restore killed partway: once its progress shows keys written, and
	// more than one checkpoint period later (it saves every second), so
	// that the resume has something to skip; at --rate 400 it would need
	// 5 s for the 2,000 keys.
	killed := exec.Command(bin, "--config", e.config, "restore", "--all", "--rate", "400")
	killed.Env = environ(t)
	errPipe, err := killed.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	planned := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		var plan string
		for sc.Scan() {
			if strings.Contains(sc.Text(), "keys to fix") {
				plan = sc.Text()
			}
			var p struct{ Written int }
			if plan != "" && json.Unmarshal(sc.Bytes(), &p) == nil && p.Written >= 200 {
				planned <- plan
				plan = ""
			}
		}
		close(planned)
	}()
	select {
	case line, ok := <-planned:
		if !ok {
			t.Fatal("the restore ended before it planned")
		}
		t.Logf("killed run: %s", line)
	case <-time.After(time.Minute):
		t.Fatal("the restore planned nothing within a minute")
	}
	time.Sleep(1500 * time.Millisecond)
	_ = killed.Process.Signal(syscall.SIGKILL)
	_ = killed.Wait()
	_, code = cli("drift", "--all")
	if code != recovery.ExitDrift {
		t.Fatalf("the killed restore finished before it was killed (drift exit %d): slow it down", code)
	}
	// Run again, with rotations published live.
	var rotations []*events.Event
	for k := 0; k < rotated; k++ {
		rotations = append(rotations, mk(k*(keys/rotated), 2))
	}
	done := make(chan struct{})
	go func() { defer close(done); publish(rotations) }()
	// The killed run saved its checkpoint up to a second before it died;
	// a resume waits until it is older than three save periods.
	time.Sleep(3 * time.Second)
	start := time.Now()
	resume := exec.CommandContext(ctx, bin, "--config", e.config, "restore", "--resume", "--concurrency", "16")
	resume.Env = environ(t)
	var stderr strings.Builder
	resume.Stderr = &stderr
	outb, err := resume.Output()
	out, code = string(outb), 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	<-done
	if code != 0 {
		// The table is long and its tail may not hold the failed rows.
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "failed") {
				t.Log("failed row: " + l)
			}
		}
		t.Fatalf("restore --resume: exit %d\n%s\n%s", code, tail(out, 3000), tail(stderr.String(), 2000))
	}
	if !strings.Contains(stderr.String(), "resuming restore ") {
		t.Fatalf("restore --resume did not resume the killed run:\n%s", tail(stderr.String(), 2000))
	}
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(l, "resuming restore ") {
			t.Log(l)
		}
	}
	t.Logf("restore after the kill: %s (%v)", lastLine(out), time.Since(start).Round(10*time.Millisecond))
	e.waitQuiet(ctx, keys+rotated, 2*time.Minute)
	if out, code := cli("drift", "--all"); code != 0 {
		t.Fatalf("drift after the restore: exit %d\n%s", code, tail(out, 3000))
	}
	if out, code := cli("restore", "--all"); code != 0 || lastLine(out) != "nothing to restore" {
		t.Fatalf("third restore: exit %d\n%s", code, tail(out, 2000))
	}

	store, err := vault.New(ctx, vault.Config{Addr: v.Addr, Token: v.Token}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	newest := map[int]uint64{}
	for k := 0; k < rotated; k++ {
		newest[k*(keys/rotated)] = 2
	}
	for k := 0; k < keys; k++ {
		gen := max(newest[k], 1)
		name := "litellm/" + team(k) + "/" + key(k)
		s, err := store.Get(ctx, name, "")
		if err != nil || string(s.Value) != value(team(k), key(k), gen) {
			t.Errorf("%s: not at generation %d (%v)", name, gen, err)
			continue
		}
		vs, err := store.Versions(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, ver := range vs {
			if ver.IdempotencyKey != "" && seen[ver.IdempotencyKey] {
				t.Errorf("%s: two versions written by event %s", name, ver.IdempotencyKey)
			}
			seen[ver.IdempotencyKey] = true
		}
	}
}

func lastLine(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
