package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/worker"
)

// TestRotateJobCLI: `keyrelay rotate` plans (dry run), then runs a job
// over a team's keys through a worker process; `jobs status --watch`
// follows it to every key rotated, `jobs list` shows it, every key's
// ledger entry holds the job's event, and a keys file narrows a second
// job to the keys it names.
func TestRotateJobCLI(t *testing.T) {
	const keys = 60
	e := newEnv(t, envOptions{})
	e.setLookupTeams([]string{"team-r"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := e.startWorker("w1")
	pub := client.NewPublisher(e.js)
	var created []*events.Event
	for k := 0; k < keys; k++ {
		ev, err := events.NewKeyEvent(ctx, e.keyring, events.KeyCreated, "team-r", fmt.Sprintf("key-%02d", k), 1, []byte(value("team-r", "k", 1)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, ev)
	}
	if err := publishAll(ctx, pub, created); err != nil {
		t.Fatal(err)
	}
	e.waitQuiet(ctx, keys, time.Minute)

	cli := cliRunner(ctx, t, e)
	out, _, code := cli("rotate", "--team", "team-r", "--dry-run")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d keys would be rotated", keys)) {
		t.Fatalf("dry run: exit %d\n%s", code, tail(out, 1000))
	}
	out, stderr, code := cli("rotate", "--team", "team-r", "--rate", "200")
	id := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(id, "job-") {
		t.Fatalf("rotate: exit %d\n%s\n%s", code, out, tail(stderr, 1000))
	}
	out, _, code = cli("jobs", "status", id, "--watch", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var st jobs.Status
	if code != 0 || json.Unmarshal([]byte(lines[len(lines)-1]), &st) != nil {
		t.Fatalf("jobs status: exit %d\n%s", code, tail(out, 1000))
	}
	if st.Rotated != keys || st.Failed != 0 || st.Remaining != 0 || st.Job.State != jobs.StatePublished {
		t.Fatalf("status: %+v", st)
	}
	t.Logf("job %s: rotated %d at %.0f keys/s", id, st.Rotated, st.Rate)
	if out, _, code := cli("jobs", "list"); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "published") {
		t.Fatalf("jobs list: exit %d\n%s", code, out)
	}
	if out, _, code := cli("jobs", "status", id); code != 0 || !strings.Contains(out, fmt.Sprintf("rotated %d, superseded 0, failed 0, remaining 0", keys)) {
		t.Fatalf("jobs status (text): exit %d\n%s", code, out)
	}
	lkv, _ := e.js.KeyValue(ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(lkv)
	for k := 0; k < keys; k++ {
		le, _, err := ledger.Get(ctx, "team-r", fmt.Sprintf("key-%02d", k))
		if err != nil || le.Status != events.StatusRotated || le.Generation <= 1 {
			t.Fatalf("key-%02d after the job: %+v %v", k, le, err)
		}
	}

	// The gateway takes the new values over (examples/gatewayjob): one
	// line per key, with the hash of the value the backend holds.
	gw := exec.CommandContext(ctx, "go", "run", "./examples/gatewayjob", "--nats", e.nats.URL, "--job", id, "--team", "team-r",
		"--lookup", "http://127.0.0.1:"+strconv.Itoa(w.lookupPort), "--token-env", "E2E_LOOKUP_TOKEN", "--timeout", "1m")
	gw.Dir = testenv.RepoRoot()
	gw.Env = append(os.Environ(), "E2E_LOOKUP_TOKEN="+lookupToken("team-r"))
	gwOut, err := gw.CombinedOutput()
	if err != nil || !strings.Contains(string(gwOut), fmt.Sprintf("%d keys taken over, 0 not rotated, of %d planned", keys, keys)) {
		t.Fatalf("examples/gatewayjob: %v\n%s", err, tail(string(gwOut), 2000))
	}
	store, err := local.New(local.Config{Path: e.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < keys; k++ {
		key := fmt.Sprintf("key-%02d", k)
		sec, err := store.Get(ctx, "litellm/team-r/"+key, "")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(sec.Value)
		if !strings.Contains(string(gwOut), key+" rotated: generation ") || !strings.Contains(string(gwOut), "hash "+hex.EncodeToString(sum[:8])+"\n") {
			t.Fatalf("the gateway did not take %s's new value over:\n%s", key, tail(string(gwOut), 2000))
		}
		if strings.Contains(string(gwOut), string(sec.Value)) {
			t.Fatal("examples/gatewayjob printed a value")
		}
	}

	// A keys file: only the keys it names.
	kf := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(kf, []byte("# incident 42\nteam-r key-03\nteam-r/key-07\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = cli("rotate", "--keys-file", kf, "--json")
	var j jobs.Job
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || j.Total != 2 {
		t.Fatalf("rotate --keys-file: exit %d\n%s\n%s", code, out, tail(stderr, 1000))
	}
	if _, _, code := cli("jobs", "status", j.ID, "--watch", "--json"); code != 0 {
		t.Fatalf("second job status: exit %d", code)
	}
	if _, _, code := cli("jobs", "cancel", j.ID); code == 0 {
		t.Error("a published job was cancelled")
	}
}
