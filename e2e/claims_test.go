package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/worker"
)

// TestKilledWorkerClaimsDoNotStall (issue 10, point 4): two `keyrelay serve`
// processes under load; one is SIGKILLed while it holds claims and a
// replacement is started at once. The keys it held wait for their lease
// without holding anyone's slots: the other keys are confirmed at more than
// half the rate of before the kill, and the held keys are written again
// within the lease.
func TestKilledWorkerClaimsDoNotStall(t *testing.T) {
	const lease = 8 * time.Second
	e := newEnv(t, envOptions{worker: `
    concurrency: 16
    ack_wait: 12s
    claim_lease: 8s
    call_timeout: 2s
    retry_initial: 20ms
    retry_max: 500ms
    shutdown_grace: 3s`})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w1, w2 := e.startWorker("w1"), e.startWorker("w2")
	_ = w1
	const keys, gens = 1000, 16
	rng := rand.New(rand.NewPCG(7, 8))
	var all []*events.Event
	newest := map[string]string{}
	for g := uint64(1); g <= gens; g++ {
		for _, k := range rng.Perm(keys) {
			typ := events.KeyRotated
			if g == 1 {
				typ = events.KeyCreated
			}
			key := fmt.Sprintf("key-%04d", k)
			ev, err := events.NewKeyEvent(ctx, e.keyring, typ, "team-k", key, g, []byte(value("team-k", key, g)), events.KeyData{})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, ev)
			newest[key] = value("team-k", key, g)
		}
	}
	pub := client.NewPublisher(e.js)
	go func() {
		for _, ev := range all {
			if _, err := pub.PublishAsync(ev); err != nil {
				return
			}
		}
	}()
	// Kill w2 once a third is confirmed, and read which keys it held.
	for {
		s, err := e.js.Stream(ctx, "KEYRELAY_CONFIRMATIONS")
		if err == nil {
			if info, err := s.Info(ctx); err == nil && info.State.Msgs >= uint64(len(all)/3) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := w2.cmd.Process.Pid
	w2.stop(syscall.SIGKILL)
	killed := time.Now()
	kv, err := e.js.KeyValue(ctx, worker.LedgerBucket)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	marker := "-" + strconv.Itoa(pid) + "-"
	if err := worker.NewLedger(kv).All(ctx, func(_ string, le *worker.LedgerEntry, _ uint64) error {
		if le.Claim.Active(killed) && strings.Contains(le.Claim.Worker, marker) {
			held[le.Claim.EventID] = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	heldKeys := map[string]bool{}
	for _, ev := range all {
		if held[ev.ID] {
			heldKeys[ev.KeyID] = true
		}
	}
	if len(heldKeys) == 0 {
		t.Fatal("the killed worker held no claims: the test proves nothing")
	}
	// As an orchestrator would, start a replacement at once: capacity comes
	// back, the dead worker's claims do not (they run to their lease).
	e.startWorker("w2-restarted")
	e.waitQuiet(ctx, len(all), 4*time.Minute)
	confs := e.confirmations(ctx)

	byKey := map[string]string{}
	for _, ev := range all {
		byKey[ev.ID] = ev.KeyID
	}
	rate := func(from, to time.Time, keep func(key string) bool) float64 {
		n := 0
		for _, c := range confs {
			if !c.Time.Before(from) && c.Time.Before(to) && keep(byKey[c.EventID]) {
				n++
			}
		}
		return float64(n) / to.Sub(from).Seconds()
	}
	free := func(k string) bool { return !heldKeys[k] }
	before := rate(killed.Add(-2*time.Second), killed, free)
	after := rate(killed, killed.Add(lease), free)
	// When did each held key get its next confirmation after the kill?
	var resumed []time.Duration
	for key := range heldKeys {
		first := time.Time{}
		for _, c := range confs {
			if byKey[c.EventID] == key && c.Time.After(killed) && (first.IsZero() || c.Time.Before(first)) {
				first = c.Time
			}
		}
		if !first.IsZero() {
			resumed = append(resumed, first.Sub(killed))
		}
	}
	sort.Slice(resumed, func(i, j int) bool { return resumed[i] < resumed[j] })
	t.Logf("SIGKILLed w2 holding %d claims; other keys: %.0f confirmations/s in the 2 s before, %.0f/s in the %v lease after (ratio %.2f); "+
		"held keys' next confirmation after the kill: first %v, last %v",
		len(heldKeys), before, after, lease, after/before, first(resumed), last(resumed))
	if after < before/2 {
		t.Errorf("other keys slowed to %.2f of their rate while the dead worker's claims ran out", after/before)
	}
	if len(resumed) > 0 && last(resumed) > lease+5*time.Second {
		t.Errorf("a held key waited %v, longer than its lease (%v)", last(resumed), lease)
	}
	counts := map[string]int{}
	for _, c := range confs {
		counts[c.EventID]++
		if c.Status == events.StatusFailed || c.Status == events.StatusRejected {
			t.Errorf("%s: %s %s", byKey[c.EventID], c.Status, c.Reason)
		}
	}
	for _, ev := range all {
		if counts[ev.ID] != 1 {
			t.Errorf("event %s has %d confirmations", ev.ID, counts[ev.ID])
		}
	}
	store, err := local.New(local.Config{Path: e.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for key, v := range newest {
		s, err := store.Get(ctx, "litellm/team-k/"+key, "")
		if err != nil || string(s.Value) != v {
			t.Errorf("%s: not at its newest value (%v)", key, err)
		}
	}
}

func first(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[0].Round(10 * time.Millisecond)
}

func last(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)-1].Round(10 * time.Millisecond)
}
