package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/vault"
)

// TestPipelineVault is the core end-to-end flow with HashiCorp Vault as the
// backend: a real Vault dev server, AppRole credentials given to three
// `keyrelay serve` processes through LiteLLM's environment variables, 2,000
// events over 200 keys (eight generations each, then exact duplicates
// re-published after the dedupe window and older generations under new
// ids), one worker SIGKILLed midway and restarted. Afterwards every key's
// current Vault version holds its newest value, no event id wrote two
// versions, every stored/rotated confirmation names a version that exists,
// and every event id has exactly one confirmation.
func TestPipelineVault(t *testing.T) {
	if !slices.Contains(app.Registry().Names(), vault.Name) {
		t.Skipf("provider %q is not registered in internal/app.Registry(): add vault.Register(r) there", vault.Name)
	}
	const (
		keys      = 200
		fresh     = 8 // per key: key.created then 7 key.rotated
		dupWindow = 2 * time.Second
		history   = 32
	)
	v := testenv.StartVault(t, testenv.VaultOptions{})
	v.WritePolicy(t, "keyrelay", testenv.KVPolicy("secret"))
	roleID, secretID := v.EnableAppRole(t, testenv.AppRoleOptions{Policies: []string{"keyrelay"}})
	// The workers inherit LiteLLM's variables, as a LiteLLM deployment
	// would pass them.
	for _, k := range []string{"VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE", "HCP_VAULT_TOKEN", "HCP_VAULT_NAMESPACE"} {
		t.Setenv(k, "")
	}
	t.Setenv(vault.EnvAddr, v.Addr)
	t.Setenv(vault.EnvAppRoleRoleID, roleID)
	t.Setenv(vault.EnvAppRoleSecretID, secretID)

	e := newEnv(t, envOptions{dupWindow: dupWindow, backendYML: fmt.Sprintf(`
    hashicorp_vault:
      max_versions: "%d"
      event_history: "%d"`, 2*history, history)})
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	swapped := strings.Replace(string(cfg), "key_management_system: local", "key_management_system: "+vault.Name, 1)
	if swapped == string(cfg) {
		t.Fatal("the harness config no longer names the local backend")
	}
	if err := os.WriteFile(e.config, []byte(swapped), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	w := []*proc{e.startWorker("w1"), e.startWorker("w2"), e.startWorker("w3")}

	pub := client.NewPublisher(e.js)
	rng := rand.New(rand.NewPCG(3, 4))
	type sent struct {
		ev  *events.Event
		raw []byte
	}
	var published []sent
	publishAll := func(evs []*events.Event) {
		futs := make([]jetstream.PubAckFuture, 0, len(evs))
		for _, ev := range evs {
			f, err := pub.PublishAsync(ev)
			if err != nil {
				t.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish: %v", err)
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
	mk := func(team, key string, gen uint64) *events.Event {
		typ := events.KeyRotated
		if gen == 1 {
			typ = events.KeyCreated
		}
		ev, err := events.NewKeyEvent(ctx, e.keyring, typ, team, key, gen, []byte(value(team, key, gen)), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	teamOf := func(k int) string { return fmt.Sprintf("team-%d", k%5) }
	keyOf := func(k int) string { return fmt.Sprintf("key-%03d", k) }

	var phase1 []*events.Event
	for g := uint64(1); g <= fresh; g++ {
		for _, k := range rng.Perm(keys) {
			ev := mk(teamOf(k), keyOf(k), g)
			phase1 = append(phase1, ev)
			b, _ := json.Marshal(ev)
			published = append(published, sent{ev, b})
		}
	}
	start := time.Now()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		for {
			s, err := e.js.Stream(ctx, "KEYRELAY_CONFIRMATIONS")
			if err == nil {
				if info, err := s.Info(ctx); err == nil && info.State.Msgs >= keys*fresh/3 {
					break
				}
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		w[1].stop(syscall.SIGKILL)
		t.Logf("SIGKILLed w2 at %v", time.Since(start).Round(time.Millisecond))
		time.Sleep(500 * time.Millisecond)
		w[1] = e.startWorker("w2-restarted")
	}()
	publishAll(phase1)

	time.Sleep(dupWindow + 500*time.Millisecond)
	exactDups := keys
	for i := 0; i < exactDups; i++ {
		orig := published[rng.IntN(len(published))]
		m := &nats.Msg{Subject: orig.ev.Subject(), Data: orig.raw, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, orig.ev.ID)
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var phase2 []*events.Event
	for i := 0; i < keys; i++ {
		k := rng.IntN(keys)
		ev := mk(teamOf(k), keyOf(k), uint64(1+rng.IntN(fresh-1)))
		ev.ID = uuid.NewString()
		phase2 = append(phase2, ev)
	}
	publishAll(phase2)
	total := len(phase1) + exactDups + len(phase2)
	distinct := len(phase1) + len(phase2)

	<-killed
	e.waitQuiet(ctx, distinct, 5*time.Minute)
	elapsed := time.Since(start)

	confs := e.confirmations(ctx)
	byID := map[string]int{}
	confByID := map[string]*events.Confirmation{}
	statuses := map[events.Status]int{}
	for _, c := range confs {
		byID[c.EventID]++
		confByID[c.EventID] = c
		statuses[c.Status]++
	}
	multi, missing := 0, 0
	for _, n := range byID {
		if n != 1 {
			multi++
		}
	}
	keyOfEvent := map[string]string{}
	for _, s := range published {
		keyOfEvent[s.ev.ID] = s.ev.TeamID + "/" + s.ev.KeyID
	}
	for _, ev := range phase2 {
		keyOfEvent[ev.ID] = ev.TeamID + "/" + ev.KeyID
	}
	for id := range keyOfEvent {
		if byID[id] == 0 {
			missing++
		}
	}

	// Read Vault back through the provider, with the root token.
	store, err := vault.New(ctx, vault.Config{Addr: v.Addr, Token: v.Token}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	eventsOfKey := map[string][]string{}
	for id, tk := range keyOfEvent {
		eventsOfKey[tk] = append(eventsOfKey[tk], id)
	}
	wrong, extra, unrecorded, versionsTotal, writtenThenSuperseded := 0, 0, 0, 0, 0
	for k := 0; k < keys; k++ {
		team, key := teamOf(k), keyOf(k)
		name := "litellm/" + team + "/" + key
		sec, err := store.Get(ctx, name, "")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			wrong++
			continue
		}
		if string(sec.Value) != value(team, key, fresh) {
			wrong++
			t.Errorf("%s: current version %s holds %q, want generation %d", name, sec.Version, sec.Value, fresh)
		}
		if !providers.IsOwnedBy(sec.Tags, providers.Owner{TeamID: team, KeyID: key}) {
			t.Errorf("%s: tags %v", name, sec.Tags)
		}
		vs, err := store.Versions(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		versionsTotal += len(vs)
		seen := map[string]string{}
		have := map[string]bool{}
		values := map[string]string{}
		for _, ver := range vs {
			have[ver.Version] = true
			// Every version holds a distinct generation's value: no event
			// (nor a stale copy of one under a new id) was written twice.
			old, err := store.Get(ctx, name, ver.Version)
			if err != nil {
				t.Errorf("%s: version %s: %v", name, ver.Version, err)
				continue
			}
			if prev, dup := values[string(old.Value)]; dup {
				extra++
				t.Errorf("%s: versions %s and %s hold the same value", name, prev, ver.Version)
			}
			values[string(old.Value)] = ver.Version
			id := ver.IdempotencyKey
			switch {
			case id == "":
				// Written by a worker killed before it recorded the event
				// id, and overwritten by a newer generation before the
				// redelivery could record it (see the value check above).
				unrecorded++
				t.Logf("%s: version %s has no recorded event id", name, ver.Version)
			case seen[id] != "":
				extra++
				t.Errorf("%s: event %s wrote versions %s and %s", name, id, seen[id], ver.Version)
			case keyOfEvent[id] != team+"/"+key:
				extra++
				t.Errorf("%s: version %s from unknown event %q", name, ver.Version, id)
			case confByID[id] != nil && confByID[id].Status == events.StatusSuperseded:
				writtenThenSuperseded++
			}
			seen[id] = ver.Version
		}
		for _, id := range eventsOfKey[team+"/"+key] {
			if c := confByID[id]; c != nil && (c.Status == events.StatusStored || c.Status == events.StatusRotated) {
				if !have[c.ProviderVersion] {
					extra++
					t.Errorf("%s: confirmation of %s names version %q, which does not exist", name, id, c.ProviderVersion)
				} else if seen[id] != c.ProviderVersion {
					t.Errorf("%s: confirmation of %s names version %s, Vault records it for version %q", name, id, c.ProviderVersion, seen[id])
				}
			}
		}
	}

	t.Logf("RESULT backend=%s events_published=%d distinct_ids=%d confirmations=%d ids_with_other_than_one=%d missing=%d "+
		"keys=%d wrong_value=%d extra_versions=%d unrecorded_versions=%d vault_versions=%d written_then_superseded=%d elapsed=%v rate=%.0f events/s statuses=%v",
		vault.Name, total, distinct, len(confs), multi, missing, keys, wrong, extra, unrecorded, versionsTotal, writtenThenSuperseded,
		elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), statuses)
	fmt.Printf("e2e vault: published=%d distinct_ids=%d confirmations=%d wrong_value=%d extra_versions=%d ids_not_exactly_once=%d missing=%d vault_versions=%d statuses=%v\n",
		total, distinct, len(confs), wrong, extra, multi, missing, versionsTotal, statuses)

	if len(confs) != distinct || multi != 0 || missing != 0 {
		t.Errorf("confirmations: got %d for %d distinct ids (%d ids not exactly once, %d missing)", len(confs), distinct, multi, missing)
	}
	if wrong != 0 || extra != 0 {
		t.Errorf("%d keys with a value other than the newest, %d extra versions", wrong, extra)
	}
	if statuses[events.StatusFailed] != 0 || statuses[events.StatusRejected] != 0 {
		t.Errorf("unexpected failures: %v", statuses)
	}
	if statuses[events.StatusSuperseded] < len(phase2)/2 {
		t.Errorf("only %d superseded confirmations for %d stale events", statuses[events.StatusSuperseded], len(phase2))
	}
}
