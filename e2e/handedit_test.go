package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	gsmapi "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/aws/aws-sdk-go-v2/aws"
	sm "github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager/kumofront"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault"
	"github.com/keyrelay/keyrelay/providers/azure/keyvault/kvfake"
	gsm "github.com/keyrelay/keyrelay/providers/google/secretmanager"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/recovery"
)

// handEditBackend is one backend of TestHandEdit: how keyrelay is
// configured for it, a provider on it (read back, deletes), and the hand
// edits another tool would make there, bypassing keyrelay.
type handEditBackend struct {
	system string
	// yaml is the keyrelay.providers section (envOptions.backendYML).
	yaml  string
	store providers.Provider
	// edit writes value as the secret's new current version, keeping
	// keyrelay's ownership tags (as `vault kv put`, `aws secretsmanager
	// put-secret-value` or a console would): the key becomes stale.
	edit func(ctx context.Context, name, value string) error
	// plant replaces the secret by one keyrelay does not own (no
	// managed-by tag) holding value: the key's name becomes unowned.
	plant func(ctx context.Context, name string, owner providers.Owner, value string) error
}

// handEditBackends sets up each listing backend as the other e2e tests
// do: Vault a real dev server, AWS kumo behind kumofront, Google and Azure
// the providers' wire-faithful fakes.
var handEditBackends = map[string]func(ctx context.Context, t *testing.T) handEditBackend{
	"vault":  handEditVault,
	"aws":    handEditAWS,
	"google": handEditGoogle,
	"azure":  handEditAzure,
}

// TestHandEdit (issue 11, "someone edited secrets by hand"): per listing
// backend, 40 keys of one team (10 of them rotated) and 5 of a second team
// are written through the pipeline. Then, directly in the backend, 10
// values are changed (ownership kept), 10 secrets deleted and 5 replaced
// by secrets keyrelay does not own, all holding a sentinel; one key of the
// second team is changed too. `keyrelay drift --team T` (the built binary)
// exits 3 with exactly those 25 rows (10 stale, 10 missing, 5 unowned),
// every other row ok and nothing of the second team; `restore --team T`
// writes exactly the 20 and leaves the 5 foreign secrets as they are
// (drift: exactly 5 unowned); `restore --adopt` writes the 5 (drift exit
// 0, another restore has nothing to do). The second team's edit survives
// until its own restore. Finally every key holds its newest published
// value, owned by it, and no output or worker log holds the sentinel or
// any key's value.
func TestHandEdit(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	for name, setup := range handEditBackends {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			runHandEdit(ctx, t, setup(ctx, t))
		})
	}
}

// The shape of the hand edits over the team's keys (indices 0..handKeys-1).
const (
	handKeys     = 40
	handKeysB    = 5
	handRotateBy = 4 // every 4th key of each team is rotated to generation 2
)

// handExpect is what drift must say of key k of team T after the edits.
func handExpect(k int) recovery.Status {
	switch {
	case k < 10:
		return recovery.StatusStale
	case k < 20:
		return recovery.StatusMissing
	case k < 25:
		return recovery.StatusUnowned
	}
	return recovery.StatusOK
}

func runHandEdit(ctx context.Context, t *testing.T, b handEditBackend) {
	if !slices.Contains(app.Registry().Names(), b.system) {
		t.Skipf("provider %q is not registered in internal/app.Registry()", b.system)
	}
	// kumo's store is shared by the whole test binary: team ids of this run.
	run := uuid.NewString()[:8]
	teamA, teamB := "he"+run+"-a", "he"+run+"-b"
	// Every value planted by hand holds the sentinel; keyrelay must never
	// print it (nor any key's value).
	sentinel := "SENTINEL-" + uuid.NewString()
	e := newEnv(t, envOptions{system: b.system, backendYML: b.yaml})
	w := e.startWorker("w1")

	key := func(k int) string { return fmt.Sprintf("key-%04d", k) }
	name := func(team string, k int) string { return "litellm/" + team + "/" + key(k) }
	owner := func(team string, k int) providers.Owner { return providers.Owner{TeamID: team, KeyID: key(k)} }
	newest := map[[2]string]uint64{} // team, key -> newest published generation

	// 1. The keys, through the pipeline: key.created for all, then
	// key.rotated for every handRotateBy-th.
	var created, rotated []*events.Event
	mk := func(team string, k int, gen uint64) *events.Event {
		typ := events.KeyCreated
		if gen > 1 {
			typ = events.KeyRotated
		}
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key(k), gen, []byte(value(team, key(k), gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		newest[[2]string{team, key(k)}] = gen
		return ev
	}
	for team, n := range map[string]int{teamA: handKeys, teamB: handKeysB} {
		for k := range n {
			created = append(created, mk(team, k, 1))
		}
	}
	for team, n := range map[string]int{teamA: handKeys, teamB: handKeysB} {
		for k := 0; k < n; k += handRotateBy {
			rotated = append(rotated, mk(team, k, 2))
		}
	}
	pub := client.NewPublisher(e.js)
	publish := func(evs []*events.Event) {
		if err := publishAll(ctx, pub, evs); err != nil {
			t.Fatal(err)
		}
	}
	publish(created)
	e.waitQuiet(ctx, len(created), 2*time.Minute)
	publish(rotated)
	e.waitQuiet(ctx, len(created)+len(rotated), 2*time.Minute)
	confs := e.confirmations(ctx)
	byEvent := map[string]*events.Confirmation{}
	for _, c := range confs {
		byEvent[c.EventID] = c
	}
	for _, ev := range append(slices.Clone(created), rotated...) {
		want := events.StatusStored
		if ev.Type == events.KeyRotated {
			want = events.StatusRotated
		}
		if c := byEvent[ev.ID]; c == nil || c.Status != want {
			t.Fatalf("event %s (%s %s g%d): confirmation %+v, want %s", ev.ID, ev.TeamID, ev.KeyID, ev.Generation, c, want)
		}
	}
	if len(confs) != len(created)+len(rotated) {
		t.Fatalf("%d confirmations for %d events", len(confs), len(created)+len(rotated))
	}

	// 2. Hand edits, directly in the backend.
	planted := map[string]string{} // secret name -> the value planted there
	for k := range handKeys {
		n, o := name(teamA, k), owner(teamA, k)
		var err error
		switch handExpect(k) {
		case recovery.StatusStale:
			planted[n] = fmt.Sprintf("sk-edited-%s-%d", sentinel, k)
			err = b.edit(ctx, n, planted[n])
		case recovery.StatusMissing:
			// Half as a console deletes (soft where the backend has it),
			// half for good.
			err = b.store.Delete(ctx, providers.DeleteRequest{Name: n, Owner: o, Force: k%2 == 1})
		case recovery.StatusUnowned:
			planted[n] = fmt.Sprintf("sk-foreign-%s-%d", sentinel, k)
			err = b.plant(ctx, n, o, planted[n])
		}
		if err != nil {
			t.Fatalf("hand edit of %s: %v", n, err)
		}
	}
	// One key of the second team is edited too: no command scoped to
	// team A may report or fix it.
	editedB := name(teamB, 1)
	planted[editedB] = "sk-edited-" + sentinel + "-b"
	if err := b.edit(ctx, editedB, planted[editedB]); err != nil {
		t.Fatalf("hand edit of %s: %v", editedB, err)
	}

	var transcript bytes.Buffer // every output of every command
	bin := keyrelayBinary(t)
	cli := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--config", e.config}, args...)...)
		cmd.Env = environ(t)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		fmt.Fprintf(&transcript, "$ keyrelay %s\n%s%s", strings.Join(args, " "), stdout.String(), stderr.String())
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return stdout.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return stdout.String(), 0
	}
	drift := func(team string) (*recovery.Report, int) {
		t.Helper()
		out, code := cli("drift", "--team", team, "--json")
		var rep recovery.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("drift --team %s --json: exit %d, not JSON (%v):\n%s", team, code, err, tail(out, 3000))
		}
		return &rep, code
	}
	// checkDrift asserts team A's report: one row per key, with the status
	// want gives it, nothing else.
	checkDrift := func(when string, rep *recovery.Report, code int, want func(k int) recovery.Status) {
		t.Helper()
		counts := map[recovery.Status]int{}
		bad := false
		for k := range handKeys {
			counts[want(k)]++
		}
		wantCode := 0
		if counts[recovery.StatusOK] != handKeys {
			wantCode = recovery.ExitDrift
		}
		if code != wantCode {
			t.Errorf("%s: drift exit %d, want %d", when, code, wantCode)
			bad = true
		}
		if len(rep.Rows) != handKeys {
			t.Errorf("%s: %d rows, want %d", when, len(rep.Rows), handKeys)
			bad = true
		}
		seen := map[string]bool{}
		for _, r := range rep.Rows {
			var k int
			if _, err := fmt.Sscanf(r.Key, "key-%04d", &k); err != nil || r.Team != teamA || k >= handKeys || seen[r.Key] {
				t.Errorf("%s: unexpected row %+v", when, r)
				bad = true
				continue
			}
			seen[r.Key] = true
			if r.Status != want(k) || r.Backend != b.system || r.SecretRef != name(teamA, k) || r.Generation != newest[[2]string{teamA, r.Key}] {
				t.Errorf("%s: row %+v, want status %s, backend %s, secret %s, generation %d", when, r, want(k), b.system, name(teamA, k),
					newest[[2]string{teamA, r.Key}])
				bad = true
			}
		}
		wantSummary := []recovery.SummaryRow{{Team: teamA, Backend: b.system, Counts: counts}}
		if !slices.EqualFunc(rep.Summary, wantSummary, func(a, b recovery.SummaryRow) bool {
			return a.Team == b.Team && a.Backend == b.Backend && maps.Equal(a.Counts, b.Counts)
		}) {
			t.Errorf("%s: summary %+v, want %+v", when, rep.Summary, wantSummary)
			bad = true
		}
		if len(rep.Unlisted) != 0 {
			t.Errorf("%s: %v not searched for orphans; %s can list", when, rep.Unlisted, b.system)
			bad = true
		}
		if bad {
			t.Fatalf("%s: drift rows:\n%s", when, rowsText(rep.Rows))
		}
	}
	// holds reports whether name's current value is want, owned as owned
	// says (by o, or by no one when o is zero); never printing a value.
	holds := func(n string, o providers.Owner, want string) error {
		s, err := b.store.Get(ctx, n, "")
		if err != nil {
			return err
		}
		defer clear(s.Value)
		switch {
		case string(s.Value) != want:
			return errors.New("the value is not the expected one")
		case o != (providers.Owner{}) && !providers.IsOwnedBy(s.Tags, o):
			return fmt.Errorf("not owned by %s/%s: tags %v", o.TeamID, o.KeyID, s.Tags)
		case o == (providers.Owner{}) && s.Tags[providers.ManagedByTag] != "":
			return fmt.Errorf("the foreign secret was taken over: tags %v", s.Tags)
		}
		return nil
	}

	// 3. Drift finds exactly the 25, and nothing of team B.
	rep, code := drift(teamA)
	checkDrift("after the hand edits", rep, code, handExpect)
	if repB, code := drift(teamB); code != recovery.ExitDrift || repB.Drifted() != 1 || len(repB.Rows) != handKeysB {
		t.Fatalf("drift --team %s: exit %d, %d drifted of %d rows, want 3, 1 of %d:\n%s", teamB, code, repB.Drifted(), len(repB.Rows), handKeysB, rowsText(repB.Rows))
	}
	// The human table: the summary per team and backend, then the rows
	// that are not ok.
	human, code := cli("drift", "--team", teamA)
	if code != recovery.ExitDrift {
		t.Errorf("drift (table): exit %d, want %d", code, recovery.ExitDrift)
	}
	checkDriftTable(t, human, teamA, b.system, handKeys, func(k int) string { return name(teamA, k) }, newest)

	// 4. Restore writes the 20 and leaves the 5 foreign secrets alone.
	out, code := cli("restore", "--team", teamA, "--json")
	var rrep recovery.RestoreReport
	if err := json.Unmarshal([]byte(out), &rrep); err != nil || code != 0 {
		t.Fatalf("restore: exit %d (%v):\n%s", code, err, tail(out, 4000))
	}
	checkRestore(t, &rrep, teamA, func(k int) (string, bool) {
		switch s := handExpect(k); s {
		case recovery.StatusStale, recovery.StatusMissing:
			return recovery.ActionWritten, true
		case recovery.StatusUnowned:
			return "", false // left alone: not written, at most skipped
		}
		return "", true // ok: not in the report at all
	})
	if rrep.Written != 20 || rrep.Failed != 0 || rrep.Deleted != 0 {
		t.Errorf("restore: written %d, deleted %d, skipped %d, failed %d; want 20 written, none failed or deleted",
			rrep.Written, rrep.Deleted, rrep.Skipped, rrep.Failed)
	}
	for k := 20; k < 25; k++ {
		if err := holds(name(teamA, k), providers.Owner{}, planted[name(teamA, k)]); err != nil {
			t.Errorf("%s after a restore without --adopt: %v", name(teamA, k), err)
		}
	}
	afterRestore := func(k int) recovery.Status {
		if handExpect(k) == recovery.StatusUnowned {
			return recovery.StatusUnowned
		}
		return recovery.StatusOK
	}
	rep, code = drift(teamA)
	checkDrift("after the restore", rep, code, afterRestore)
	// Run again without --adopt, it still leaves them alone.
	if out, code := cli("restore", "--team", teamA); code != 0 ||
		(lastLine(out) != "nothing to restore" && !strings.HasPrefix(lastLine(out), "written 0, deleted 0,")) {
		t.Errorf("a second restore without --adopt: exit %d, want 0 and nothing written:\n%s", code, tail(out, 3000))
	}
	for k := 20; k < 25; k++ {
		if err := holds(name(teamA, k), providers.Owner{}, planted[name(teamA, k)]); err != nil {
			t.Errorf("%s after a second restore without --adopt: %v", name(teamA, k), err)
		}
	}

	// 5. --adopt writes the 5; then nothing is left to do.
	out, code = cli("restore", "--team", teamA, "--adopt")
	if code != 0 || lastLine(out) != "written 5, deleted 0, skipped 0, failed 0" {
		t.Fatalf("restore --adopt: exit %d:\n%s", code, tail(out, 3000))
	}
	for k := 20; k < 25; k++ {
		if !hasRow(out, "written", "unowned", teamA, key(k), b.system, name(teamA, k)) {
			t.Errorf("restore --adopt: no written row for %s:\n%s", key(k), out)
		}
	}
	rep, code = drift(teamA)
	checkDrift("after the restore --adopt", rep, code, func(int) recovery.Status { return recovery.StatusOK })
	if out, code := cli("drift", "--team", teamA); code != 0 || lastLine(out) != "no drift" {
		t.Errorf("drift (table) after the restore --adopt: exit %d:\n%s", code, tail(out, 2000))
	}
	if out, code := cli("restore", "--team", teamA); code != 0 || lastLine(out) != "nothing to restore" {
		t.Errorf("a second restore: exit %d:\n%s", code, tail(out, 2000))
	}

	// Team B was not touched by any of it: its edit is still there, until
	// its own restore.
	if err := holds(editedB, owner(teamB, 1), planted[editedB]); err != nil {
		t.Errorf("%s (team B) after team A's restores: %v", editedB, err)
	}
	if out, code := cli("restore", "--team", teamB); code != 0 || lastLine(out) != "written 1, deleted 0, skipped 0, failed 0" ||
		!hasRow(out, "written", "stale", teamB, key(1), b.system, editedB) {
		t.Errorf("restore --team %s: exit %d:\n%s", teamB, code, tail(out, 2000))
	}
	if out, code := cli("drift", "--all"); code != 0 || lastLine(out) != "no drift" {
		t.Errorf("drift --all at the end: exit %d:\n%s", code, tail(out, 3000))
	}

	// 6. Every key holds its newest published value, owned by it.
	for tk, gen := range newest {
		var k int
		fmt.Sscanf(tk[1], "key-%04d", &k)
		if err := holds(name(tk[0], k), owner(tk[0], k), value(tk[0], tk[1], gen)); err != nil {
			t.Errorf("%s: not at its newest generation %d: %v", name(tk[0], k), gen, err)
		}
	}
	// Nothing printed or logged holds a planted or published value.
	w.stop(syscall.SIGTERM) // flush the worker's log
	logs, err := os.ReadFile(w.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{"the commands' output": transcript.String(), "the worker's log": string(logs)} {
		if strings.Contains(text, sentinel) {
			t.Errorf("%s holds the sentinel", what)
		}
		for _, team := range []string{teamA, teamB} {
			if strings.Contains(text, "sk-"+team) {
				t.Errorf("%s holds a value of team %s", what, team)
			}
		}
	}
	if t.Failed() {
		t.Logf("transcript:\n%s", tail(transcript.String(), 20000))
	}
}

// checkDriftTable checks drift's human output for team on backend with
// keys keys edited as handExpect says: the summary, then exactly the rows
// that are not ok.
func checkDriftTable(t *testing.T, out, team, backend string, keys int, name func(int) string, newest map[[2]string]uint64) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	head := []string{"TEAM", "BACKEND"}
	counts := map[recovery.Status]int{}
	for k := range keys {
		counts[handExpect(k)]++
	}
	summary := []string{team, backend}
	for _, s := range recovery.Statuses {
		head = append(head, strings.ToUpper(string(s)))
		summary = append(summary, fmt.Sprint(counts[s]))
	}
	var want []string
	for k := range keys {
		if s := handExpect(k); s != recovery.StatusOK {
			want = append(want, strings.Join([]string{string(s), team, fmt.Sprintf("key-%04d", k), backend, name(k),
				fmt.Sprint(newest[[2]string{team, fmt.Sprintf("key-%04d", k)}])}, " "))
		}
	}
	var got []string
	ok := len(lines) == 4+len(want) && slices.Equal(strings.Fields(lines[0]), head) && slices.Equal(strings.Fields(lines[1]), summary) &&
		lines[2] == "" && slices.Equal(strings.Fields(lines[3]), []string{"STATUS", "TEAM", "KEY", "BACKEND", "SECRET", "GENERATION", "DETAIL"})
	if ok {
		for _, l := range lines[4:] {
			if f := strings.Fields(l); len(f) > 6 {
				got = append(got, strings.Join(f[:6], " "))
			}
		}
		sort.Strings(got)
		sort.Strings(want)
		ok = slices.Equal(got, want)
	}
	if !ok {
		t.Errorf("drift table: want the summary %v, then these %d rows:\n%s\ngot:\n%s", summary, len(want), strings.Join(want, "\n"), tail(out, 4000))
	}
}

// checkRestore checks restore's JSON report for team: action(k) says what
// it must have done with key k (ok false: nothing but leave it as it is).
// Rows not named in the report must be drift rows left alone.
func checkRestore(t *testing.T, rep *recovery.RestoreReport, team string, action func(k int) (string, bool)) {
	t.Helper()
	bad := false
	acted := map[int]recovery.RestoreRow{}
	for _, r := range rep.Rows {
		var k int
		if _, err := fmt.Sscanf(r.Key, "key-%04d", &k); err != nil || r.Team != team || k >= handKeys {
			t.Errorf("restore: a row outside the scope: %+v", r)
			bad = true
			continue
		}
		acted[k] = r
	}
	for k := range handKeys {
		r, in := acted[k]
		want, must := action(k)
		switch {
		case must && want == "" && in:
			t.Errorf("restore: touched %s, which was ok: %+v", r.Key, r)
			bad = true
		case must && want != "" && (!in || r.Action != want || r.Status != handExpect(k)):
			t.Errorf("restore: key-%04d: %+v, want %s (it was %s)", k, r, want, handExpect(k))
			bad = true
		case !must && in && r.Action != recovery.ActionSkipped:
			t.Errorf("restore without --adopt: %s %s, want it left alone (skipped or absent)", r.Key, r.Action)
			bad = true
		case !must && !in && !slices.ContainsFunc(rep.Drift.Rows, func(d recovery.Row) bool {
			return d.Team == team && d.Key == fmt.Sprintf("key-%04d", k) && d.Status == handExpect(k)
		}):
			t.Errorf("restore: key-%04d, left alone, is not reported as %s", k, handExpect(k))
			bad = true
		}
	}
	if bad {
		var b strings.Builder
		for _, r := range rep.Rows {
			fmt.Fprintf(&b, "%s\t%s\t%s/%s\t%s\n", r.Action, r.Status, r.Team, r.Key, r.Why)
		}
		t.Fatalf("restore rows:\n%sof the drift rows:\n%s", b.String(), rowsText(rep.Drift.Rows))
	}
}

// rowsText renders drift rows for a failure message (they hold no value).
func rowsText(rows []recovery.Row) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%s\t%s/%s\t%s\t%s\tg%d\t%s\n", r.Status, r.Team, r.Key, r.Backend, r.SecretRef, r.Generation, r.Detail)
	}
	return b.String()
}

// hasRow reports whether restore's table has the row action, status,
// team, key, backend, secret.
func hasRow(out string, cells ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= len(cells) && slices.Equal(f[:len(cells)], cells) {
			return true
		}
	}
	return false
}

func handEditVault(ctx context.Context, t *testing.T) handEditBackend {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	useVaultEnv(t, v)
	store, err := vault.New(ctx, vault.Config{Addr: v.Addr, Token: v.Token}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	root := v.Client(t)
	// As LiteLLM or `vault kv put` writes: no cas, no custom_metadata (the
	// secret's metadata, with keyrelay's ownership, stays).
	write := func(ctx context.Context, name, value string) error {
		_, err := root.Logical().WriteWithContext(ctx, "secret/data/"+name, map[string]any{"data": map[string]any{"key": value}})
		return err
	}
	return handEditBackend{system: vault.Name, store: store, edit: write,
		plant: func(ctx context.Context, name string, _ providers.Owner, value string) error {
			// `vault kv metadata delete`, then a write: a secret without
			// keyrelay's metadata.
			if _, err := root.Logical().DeleteWithContext(ctx, "secret/metadata/"+name); err != nil {
				return err
			}
			return write(ctx, name, value)
		}}
}

func handEditAWS(ctx context.Context, t *testing.T) handEditBackend {
	front := kumofront.Start(t)
	p, err := secretsmanager.Factory(ctx, providers.Config{Options: front.Options(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(providers.Closer).Close() })
	raw := front.Client()
	return handEditBackend{system: secretsmanager.Name, store: p, yaml: fmt.Sprintf(`
    aws_secret_manager:
      endpoint: %s
      write_tps: "1000"
      control_tps: "1000"`, front.URL),
		// put-secret-value: a new AWSCURRENT; the secret's tags stay.
		edit: func(ctx context.Context, name, value string) error {
			_, err := raw.PutSecretValue(ctx, &sm.PutSecretValueInput{SecretId: aws.String(secretsmanager.SecretID(name)), SecretString: aws.String(value)})
			return err
		},
		// delete-secret --force-delete-without-recovery, then
		// create-secret without tags.
		plant: func(ctx context.Context, name string, o providers.Owner, value string) error {
			if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: o, Force: true}); err != nil {
				return err
			}
			_, err := raw.CreateSecret(ctx, &sm.CreateSecretInput{Name: aws.String(secretsmanager.SecretID(name)), SecretString: aws.String(value)})
			return err
		}}
}

func handEditGoogle(ctx context.Context, t *testing.T) handEditBackend {
	fake := smfake.Start(t)
	const project = "keyrelay-e2e-handedit"
	setenv(t, "GOOGLE_SECRET_MANAGER_PROJECT_ID", project)
	store, err := gsm.New(ctx, gsm.Config{Project: project, Endpoint: fake.Addr(), Insecure: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	raw, err := gsmapi.NewClient(ctx, option.WithEndpoint(fake.Addr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	// gcloud secrets versions add: a new latest version; the secret's
	// annotations (keyrelay's ownership) stay.
	addVersion := func(ctx context.Context, name, value string) error {
		_, err := raw.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: store.SecretName(name),
			Payload: &secretmanagerpb.SecretPayload{Data: []byte(value)}})
		return err
	}
	return handEditBackend{system: gsm.Name, store: store, edit: addVersion, yaml: `
    google_secret_manager:
      endpoint: ` + fake.Addr() + `
      insecure: "true"
      superseded_grace: "0"
      secret_writes_per_second: "1000"
      project_writes_per_minute: "600000"
      project_reads_per_minute: "600000"
      project_access_per_minute: "6000000"`,
		// gcloud secrets delete, then create without annotations.
		plant: func(ctx context.Context, name string, o providers.Owner, value string) error {
			if err := store.Delete(ctx, providers.DeleteRequest{Name: name, Owner: o}); err != nil {
				return err
			}
			if _, err := raw.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/" + project, SecretId: gsm.SecretID(name),
				Secret: &secretmanagerpb.Secret{Replication: &secretmanagerpb.Replication{
					Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}},
			}); err != nil {
				return err
			}
			return addVersion(ctx, name, value)
		}}
}

// staticToken is a fixed bearer token for the raw Azure client.
type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func handEditAzure(ctx context.Context, t *testing.T) handEditBackend {
	srv := kvfake.New()
	t.Cleanup(srv.Close)
	srv.ClientID = "11111111-2222-3333-4444-555555555555"
	srv.ClientSecret = "e2e-client-secret"
	srv.Token = "e2e-handedit-raw-token" // the raw client's, besides the issued ones
	ca, err := srv.WriteCABundle(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AZURE_KEY_VAULT_URI": srv.URL, "AZURE_TENANT_ID": kvfake.DefaultTenant,
		"AZURE_CLIENT_ID": srv.ClientID, "AZURE_CLIENT_SECRET": srv.ClientSecret}
	for k, v := range env {
		setenv(t, k, v)
	}
	opts := map[string]string{"vault_url": srv.URL, "ca_bundle": ca, "authority_host": srv.URL,
		"disable_instance_discovery": "true", "disable_challenge_resource_verification": "true"}
	p, err := keyvault.Factory(ctx, providers.Config{Options: opts, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.(providers.Closer).Close() })
	raw, err := azsecrets.NewClient(srv.URL, staticToken(srv.Token), &azsecrets.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: srv.Client(), Retry: policy.RetryOptions{MaxRetries: -1}},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	set := func(ctx context.Context, name, value string, tags map[string]*string) error {
		_, err := raw.SetSecret(ctx, keyvault.KVName(name), azsecrets.SetSecretParameters{Value: &value, Tags: tags}, nil)
		return err
	}
	return handEditBackend{system: keyvault.Name, store: p, yaml: `
    azure_key_vault:
      ca_bundle: ` + ca + `
      authority_host: ` + srv.URL + `
      disable_instance_discovery: "true"
      disable_challenge_resource_verification: "true"`,
		// az keyvault secret set --tags with keyrelay's ownership tags
		// (Key Vault's tags belong to a version).
		edit: func(ctx context.Context, name, value string) error {
			cur, err := raw.GetSecret(ctx, keyvault.KVName(name), "", nil)
			if err != nil {
				return err
			}
			tags := map[string]*string{}
			for _, k := range []string{providers.ManagedByTag, providers.TeamTag, providers.KeyTag} {
				tags[k] = cur.Tags[k]
			}
			return set(ctx, name, value, tags)
		},
		// az keyvault secret set without tags: a new current version
		// keyrelay does not own.
		plant: func(ctx context.Context, name string, _ providers.Owner, value string) error {
			return set(ctx, name, value, nil)
		}}
}
