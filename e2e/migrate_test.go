package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/aws/secretsmanager"
	"github.com/keyrelay/keyrelay/providers/vault"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestMigrateVaultToAWS (issue 11, "a team moves backend"): 1,000 keys of
// one team written through the pipeline to Vault (a real dev server);
// `keyrelay migrate --team T --to aws_secret_manager --set-backend` moves
// them to AWS Secrets Manager (kumo) while 100 rotations are published.
// Afterwards every key is in AWS at its newest value, drift (which reads
// where the ledger points) is clean, the Vault copies stay through the
// grace period and are then deleted by the sweeper of `keyrelay serve`,
// and lookups answer every sampled key from AWS.
func TestMigrateVaultToAWS(t *testing.T) {
	t.Parallel() // no timing bound; its processes get their own variables (setenv)
	for _, name := range []string{vault.Name, secretsmanager.Name} {
		if !slices.Contains(app.Registry().Names(), name) {
			t.Skipf("provider %q not registered", name)
		}
	}
	const keys, rotated = 1000, 100
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	vb := handEditVault(ctx, t)
	ab := handEditAWS(ctx, t)
	team := "mv" + uuid.NewString()[:8]
	token := "e2e-migrate-token-" + uuid.NewString()
	e := newEnv(t, envOptions{system: vault.Name, backendYML: ab.yaml, extraYAML: `
  migration:
    grace: 15s
    sweep_every: 1s
  lookup:
    ttl: 10m
    clients:
      mover:
        team: ` + team + `
        token: ` + token})
	e.startWorker("w1")
	w2 := e.startWorker("w2")

	key := func(k int) string { return fmt.Sprintf("key-%04d", k) }
	name := func(k int) string { return "litellm/" + team + "/" + key(k) }
	newest := map[int]uint64{}
	mk := func(k int, gen uint64) *events.Event {
		typ := events.KeyCreated
		if gen > 1 {
			typ = events.KeyRotated
		}
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key(k), gen, []byte(value(team, key(k), gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		newest[k] = gen
		return ev
	}
	pub := client.NewPublisher(e.js)
	publish := func(evs []*events.Event) {
		if err := publishAll(ctx, pub, evs); err != nil {
			t.Error(err)
		}
	}
	var created []*events.Event
	for k := range keys {
		created = append(created, mk(k, 1))
	}
	publish(created)
	e.waitQuiet(ctx, keys, 3*time.Minute)

	cli := cliRunner(ctx, t, e)
	if out, stderr, code := cli("migrate", "--team", team, "--to", secretsmanager.Name); code == 0 || !strings.Contains(stderr, "--set-backend") {
		t.Fatalf("migrate before the settings move: exit %d, want a refusal naming --set-backend\n%s\n%s", code, out, stderr)
	}

	// The move, with rotations published meanwhile.
	var rotations []*events.Event
	for i := range rotated {
		rotations = append(rotations, mk(i*(keys/rotated), 2))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		publish(rotations)
	}()
	start := time.Now()
	out, stderr, code := cli("migrate", "--team", team, "--to", secretsmanager.Name, "--set-backend", "--concurrency", "16", "--json")
	<-done
	var rep recovery.MigrateReport
	if code != 0 {
		if json.Unmarshal([]byte(out), &rep) == nil {
			for _, r := range rep.Rows {
				if r.Action == recovery.ActionFailed {
					t.Logf("failed: %+v", r)
				}
			}
		}
		t.Fatalf("migrate: exit %d\n%s\n%s", code, tail(out, 3000), tail(stderr, 2000))
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("migrate: %d moved, %d already in AWS (written there by rotations after the settings move), %d failed in %v",
		rep.Moved, rep.Verified, rep.Failed, time.Since(start).Round(time.Millisecond))
	if rep.Moved+rep.Verified != keys || rep.Failed != 0 || rep.DeleteAfter.IsZero() {
		t.Fatalf("migrate: moved %d verified %d skipped %d failed %d, delete after %v", rep.Moved, rep.Verified, rep.Skipped, rep.Failed, rep.DeleteAfter)
	}
	e.waitQuiet(ctx, keys+rotated+1, 2*time.Minute) // + the settings event

	// Every key in AWS at its newest value; drift reads where the ledger
	// points and finds nothing.
	for k := range keys {
		s, err := ab.store.Get(ctx, name(k), "")
		if err != nil || string(s.Value) != value(team, key(k), newest[k]) || !providers.IsOwnedBy(s.Tags, providers.Owner{TeamID: team, KeyID: key(k)}) {
			t.Fatalf("%s in AWS: not at generation %d (%v)", name(k), newest[k], err)
		}
	}
	if out, _, code := cli("drift", "--team", team, "--json"); code != 0 {
		t.Fatalf("drift after the move: exit %d\n%s", code, tail(out, 3000))
	} else {
		var d recovery.Report
		_ = json.Unmarshal([]byte(out), &d)
		for _, r := range d.Rows {
			if r.Key != "" && r.Backend != secretsmanager.Name {
				t.Fatalf("ledger still places %s on %s", r.Key, r.Backend)
			}
		}
	}
	// The Vault copies wait for the grace period (15s from the move),
	// then the sweeper deletes them.
	inVault := 0
	for k := range keys {
		if _, err := vb.store.Get(ctx, name(k), ""); err == nil {
			inVault++
		}
	}
	if time.Now().Before(rep.DeleteAfter) && inVault == 0 {
		t.Fatal("the Vault copies were deleted before the grace period ended")
	}
	t.Logf("Vault copies right after the move: %d of %d", inVault, keys)
	deadline := time.Now().Add(90 * time.Second)
	for {
		left := 0
		for k := range keys {
			if _, err := vb.store.Get(ctx, name(k), ""); err == nil {
				left++
			} else if !errors.Is(err, providers.ErrNotFound) {
				t.Fatal(err)
			}
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Vault copies left 90s after the grace period", left)
		}
		time.Sleep(time.Second)
	}
	t.Logf("Vault copies deleted %v after the move's end (grace 15s)", time.Since(rep.DeleteAfter.Add(-15*time.Second)).Round(time.Second))
	if out, _, code := cli("migrate", "--team", team, "--to", secretsmanager.Name); code != 0 || !strings.Contains(out, "moved 0, already there 1000") {
		t.Fatalf("second migrate: exit %d\n%s", code, tail(out, 500))
	}

	// Lookups answer from AWS (Vault holds nothing of the team any more).
	lc := &lookupclient.HTTP{BaseURL: "http://127.0.0.1:" + strconv.Itoa(w2.lookupPort), Token: token, Client: &http.Client{Timeout: 5 * time.Second}}
	for k := 0; k < keys; k += 37 {
		got, err := lc.GetTeam(ctx, team, key(k))
		if err != nil || got.Value != value(team, key(k), newest[k]) {
			t.Fatalf("lookup %s: %v", key(k), err)
		}
	}
	if strings.Contains(out+stderr, "sk-") {
		t.Fatal("migrate printed a value")
	}
}
