package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// retirementBody is a retirement message as the worker stores it.
func retirementBody(t *testing.T, team, key, backend, ref, version, eventID string, due time.Time) []byte {
	t.Helper()
	b, err := json.Marshal(worker.Retirement{TeamID: team, KeyID: key, Backend: backend, SecretRef: ref, Version: version, EventID: eventID, Due: due})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rotated creates key (value v1) and rotates it to v2 with a grace
// period, and returns the version v1 got. n counts the confirmations
// published so far and is advanced.
func (b *bundle) rotated(team, key string, grace int64, n *int) string {
	b.t.Helper()
	b.publish(b.keyEvent(events.KeyCreated, team, key, 1, key+"-v1"))
	*n++
	b.confirmations(*n, 30*time.Second)
	le, _, err := b.ledgerGet(team, key)
	if err != nil {
		b.t.Fatal(err)
	}
	ev, err := events.NewKeyEvent(b.ctx, b.kr, events.KeyRotated, team, key, 2, []byte(key+"-v2"), events.KeyData{GracePeriodSeconds: grace})
	if err != nil {
		b.t.Fatal(err)
	}
	b.publish(ev)
	*n++
	b.confirmations(*n, 30*time.Second)
	return le.ProviderVersion
}

// retireState reads the retirement stream's messages by subject and the
// retirement consumer's pending acks.
func (b *bundle) retireState() (subjects []string, ackPending int) {
	b.t.Helper()
	for _, m := range b.rawMessages(worker.RetireStream) {
		subjects = append(subjects, m.Subject)
	}
	c, err := b.js.Consumer(b.ctx, worker.RetireStream, worker.RetireConsumerName)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := c.Info(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	return subjects, info.NumAckPending
}

func (b *bundle) gone(backend, ref, version string) bool {
	_, err := b.stores[backend].Get(b.ctx, ref, version)
	return errors.Is(err, providers.ErrNotFound)
}

// waitWithin waits up to d for cond.
func waitWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRetireFarFutureHoldsNoSlot: retirements with long grace periods
// wait in the stream as message schedules, not in the retirement
// consumer's pending set, so they cannot use up its MaxAckPending (shrunk
// to 2 here): a retirement due now, of another team, runs at once after
// two due in an hour.
func TestRetireFarFutureHoldsNoSlot(t *testing.T) {
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.RetireMaxAckPending = 2 }})
	b.startWorker(nil)
	n := 0
	far1 := b.rotated("team-a", "k1", 3600, &n)
	far2 := b.rotated("team-a", "k2", 3600, &n)
	b.publish(b.settingsEvent("team-b", 1, &events.TeamSettings{RetirePreviousAfter: "0s"}))
	n++
	b.confirmations(n, 30*time.Second)
	// Both far-future retirements are scheduled, and delivered in the old
	// design, before this one is.
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	now := b.rotated("team-b", "k3", 0, &n)
	waitWithin(t, 10*time.Second, "the due retirement behind two far-future ones", func() bool { return b.gone("local", name("team-b", "k3"), now) })
	t.Logf("retired %v after the rotation", time.Since(start))
	for _, v := range []struct{ key, version string }{{"k1", far1}, {"k2", far2}} {
		if b.gone("local", name("team-a", v.key), v.version) {
			t.Errorf("%s: previous version retired during its grace period", v.key)
		}
	}
	subjects, pending := b.retireState()
	if pending != 0 || len(subjects) != 2 || !strings.HasPrefix(subjects[0], worker.RetirePrefix+".at.team-a.k1.") ||
		!strings.HasPrefix(subjects[1], worker.RetirePrefix+".at.team-a.k2.") {
		t.Fatalf("retirement stream holds %v, consumer %d pending; want the two schedules and none pending", subjects, pending)
	}
}

// TestRetireLegacyFarFutureRescheduled: retirements stored by an earlier
// version under keyrelay.retire.<team>.<key> are still taken; one not due
// soon becomes a message schedule and leaves the pending set, so it does
// not block a due one either.
func TestRetireLegacyFarFutureRescheduled(t *testing.T) {
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.RetireMaxAckPending = 2 }})
	for i, key := range []string{"old1", "old2"} {
		b.publishRaw(worker.RetirePrefix+".team-a."+key,
			retirementBody(t, "team-a", key, "local", name("team-a", key), "1", "evt-old-"+key, time.Now().Add(time.Duration(i+1)*time.Hour)))
	}
	b.startWorker(nil)
	n := 0
	b.publish(b.settingsEvent("team-b", 1, &events.TeamSettings{RetirePreviousAfter: "0s"}))
	n++
	b.confirmations(n, 30*time.Second)
	now := b.rotated("team-b", "k3", 0, &n)
	waitWithin(t, 10*time.Second, "the due retirement behind two stored far-future ones", func() bool { return b.gone("local", name("team-b", "k3"), now) })
	waitWithin(t, 5*time.Second, "the stored retirements rescheduled", func() bool {
		subjects, pending := b.retireState()
		slices.Sort(subjects)
		return pending == 0 && slices.Equal(subjects, []string{worker.RetirePrefix + ".at.team-a.old1.evt-old-old1", worker.RetirePrefix + ".at.team-a.old2.evt-old-old2"})
	})
}

// TestRetireScheduleFires: a retirement due after the horizon is a
// message schedule that the server fires when it is due; the worker then
// retires the version, and nothing is left in the stream (the schedule
// is removed when it fires, the fired message when it is acked).
func TestRetireScheduleFires(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	n := 0
	const grace = 12 // more than the horizon (10 s)
	start := time.Now()
	v1 := b.rotated("team-a", "k1", grace, &n)
	subjects, _ := b.retireState()
	if len(subjects) != 1 || !strings.HasPrefix(subjects[0], worker.RetirePrefix+".at.team-a.k1.") {
		t.Fatalf("retirement stream holds %v, want one schedule", subjects)
	}
	waitWithin(t, 30*time.Second, "the scheduled retirement", func() bool { return b.gone("local", name("team-a", "k1"), v1) })
	if d := time.Since(start); d < grace*time.Second {
		t.Fatalf("retired after %v, before the grace period (%ds) ended", d, grace)
	}
	waitWithin(t, 5*time.Second, "an empty retirement stream", func() bool {
		subjects, pending := b.retireState()
		return len(subjects) == 0 && pending == 0
	})
}

// TestRetireRefusesWhatItCannotTrust: a retirement is acted on only when
// its body names the team and key of its subject, with valid ids, and a
// backend this process knows. Anything else is terminated at once
// (counted, logged), never redelivered, and nothing is retired: here
// team-b's previous version, which a forged message on team-a's subject
// names, stays.
func TestRetireRefusesWhatItCannotTrust(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	n := 0
	victim := b.rotated("team-b", "k9", 0, &n) // no grace period: kept
	ref := name("team-b", "k9")
	past := time.Now().Add(-time.Minute)
	for _, m := range []struct {
		subj string
		body []byte
	}{
		{worker.RetirePrefix + ".team-a.k1", retirementBody(t, "team-b", "k9", "local", ref, victim, "evt-1", past)},     // another key's subject (stored by an earlier version)
		{worker.RetirePrefix + ".due.team-a.k1", retirementBody(t, "team-b", "k9", "local", ref, victim, "evt-2", past)}, // another team's
		{worker.RetirePrefix + ".due.team-b.k8", retirementBody(t, "team-b", "k9", "local", ref, victim, "evt-3", past)}, // another key's
		{worker.RetirePrefix + ".team-b.k9", retirementBody(t, "team-b", "k9", "local", ref, victim, "evt 4", past)},     // bad event id
		{worker.RetirePrefix + ".team-b.k9", retirementBody(t, "team-b", "k9", "local", ref, "", "evt-5", past)},         // no version
		{worker.RetirePrefix + ".due.team-b.k7", []byte(`{"team_id":"team-b"`)},                                          // not JSON
		{worker.RetirePrefix + ".due.team-b.k9", retirementBody(t, "team-b", "k9", "local", ref, victim, "evt-6",
			time.Date(9999, 12, 31, 23, 59, 59, 5e8, time.UTC))}, // due beyond any schedule
	} {
		b.publishRaw(m.subj, m.body)
	}
	time.Sleep(2 * time.Second)
	if b.gone("local", ref, victim) {
		t.Fatal("a forged retirement retired team-b's previous version")
	}
	invalid := b.metrics.Retirements.WithLabelValues("invalid")
	waitWithin(t, 5*time.Second, "seven refusals", func() bool { return testutil.ToFloat64(invalid) == 7 })
	if subjects, pending := b.retireState(); len(subjects) != 0 || pending != 0 {
		t.Fatalf("retirement stream holds %v, %d pending; want the refused messages gone", subjects, pending)
	}
	if got := testutil.ToFloat64(invalid); got != 7 {
		t.Fatalf("%v refusals counted, want 7 (each once: never redelivered)", got)
	}
}

// TestRetireUnopenableBackendTerminated: a retirement whose backend is
// unknown (removed from the configuration) or cannot be opened is not
// transient: it is terminated once, logged and counted, not redelivered
// in a loop.
func TestRetireUnopenableBackendTerminated(t *testing.T) {
	b := setup(t, setupOptions{})
	b.reg.Register("broken", func(context.Context, providers.Config) (providers.Provider, error) {
		return nil, errors.New("no address configured")
	})
	b.startWorker(nil)
	past := time.Now().Add(-time.Minute)
	b.publishRaw(worker.RetirePrefix+".due.team-a.k1", retirementBody(t, "team-a", "k1", "gone", "ref", "1", "evt-1", past))
	b.publishRaw(worker.RetirePrefix+".due.team-a.k2", retirementBody(t, "team-a", "k2", "broken", "ref", "1", "evt-2", past))
	time.Sleep(2 * time.Second)
	if c := strings.Count(b.logs.String(), "retirements: retrying"); c != 0 {
		t.Fatalf("%d retries logged in 2s, want none", c)
	}
	unknown := b.metrics.Retirements.WithLabelValues("unknown_backend")
	if got := testutil.ToFloat64(unknown); got != 2 {
		t.Fatalf("%v terminations counted, want 2", got)
	}
	if subjects, pending := b.retireState(); len(subjects) != 0 || pending != 0 {
		t.Fatalf("retirement stream holds %v, %d pending; want them terminated", subjects, pending)
	}
	if !strings.Contains(b.logs.String(), "no address configured") || !strings.Contains(b.logs.String(), "backend is not configured") {
		t.Fatalf("the reasons are not logged:\n%s", tail(b.logs.String(), 3000))
	}
}

// hungRetirer never answers a retirement before its deadline.
type hungRetirer struct{ providers.Provider }

func (p *hungRetirer) Unwrap() providers.Provider { return p.Provider }

func (p *hungRetirer) Retire(ctx context.Context, _ providers.RetireRequest) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestRetireHungBackendLeavesSlots: a backend whose retirements hang
// takes at most its share of the retirement slots; another backend's due
// retirement runs at once.
func TestRetireHungBackendLeavesSlots(t *testing.T) {
	b := setup(t, setupOptions{topo: func(c *worker.TopologyConfig) { c.AckWait = 30 * time.Second }, backends: []string{"other"}, wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { return &hungRetirer{Provider: p} },
	}})
	b.startWorker(func(c *worker.Config) { c.CallTimeout, c.ClaimLease = 15*time.Second, 20*time.Second })
	past := time.Now().Add(-time.Minute)
	for i := range 8 {
		key := "hung" + itoa(uint64(i))
		b.publishRaw(worker.RetirePrefix+".due.team-a."+key, retirementBody(t, "team-a", key, "local", "ref-"+key, "1", "evt-"+key, past))
	}
	time.Sleep(500 * time.Millisecond) // the hung retirements are taken first
	n := 0
	b.publish(b.settingsEvent("team-b", 1, &events.TeamSettings{Backend: "other", RetirePreviousAfter: "0s"}))
	n++
	b.confirmations(n, 30*time.Second)
	v1 := b.rotated("team-b", "k1", 0, &n)
	waitWithin(t, 8*time.Second, "the other backend's retirement", func() bool { return b.gone("other", name("team-b", "k1"), v1) })
}

// TestRetireTopologyUpgrade: a deployment whose retirement stream and
// consumer were made by an earlier version (no message schedules, no
// filter) is upgraded in place by EnsureTopology, and the retirements it
// holds are still carried out: a due one is retired, a far-future one
// becomes a message schedule.
func TestRetireTopologyUpgrade(t *testing.T) {
	b := setup(t, setupOptions{})
	// The secret to retire is written before any worker retires anything.
	_, stop := b.startWorker(nil)
	n := 0
	v1 := b.rotated("team-a", "k1", 0, &n) // kept: no grace, no retire_previous_after
	stop()
	if err := b.js.DeleteStream(b.ctx, worker.RetireStream); err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.CreateStream(b.ctx, jetstream.StreamConfig{Name: worker.RetireStream, Subjects: []string{worker.RetirePrefix + ".>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Duplicates: time.Minute, MaxMsgSize: 16384}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.CreateOrUpdateConsumer(b.ctx, worker.RetireStream, jetstream.ConsumerConfig{Durable: worker.RetireConsumerName,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy, AckWait: b.topo.AckWait, MaxDeliver: -1, MaxAckPending: 10000}); err != nil {
		t.Fatal(err)
	}
	past, later := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	b.publishRaw(worker.RetirePrefix+".team-a.k1", retirementBody(t, "team-a", "k1", "local", name("team-a", "k1"), v1, "evt-due", past))
	b.publishRaw(worker.RetirePrefix+".team-a.k2", retirementBody(t, "team-a", "k2", "local", name("team-a", "k2"), "1", "evt-later", later))

	if err := worker.EnsureTopology(b.ctx, b.js, b.topo); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	s, err := b.js.Stream(b.ctx, worker.RetireStream)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; !cfg.AllowMsgSchedules || !cfg.AllowRollup {
		t.Fatalf("upgraded stream: schedules %v, roll-ups %v; want both", cfg.AllowMsgSchedules, cfg.AllowRollup)
	}
	b.startWorker(nil)
	waitWithin(t, 5*time.Second, "the stored due retirement", func() bool { return b.gone("local", name("team-a", "k1"), v1) })
	waitWithin(t, 5*time.Second, "the stored far-future retirement rescheduled", func() bool {
		subjects, pending := b.retireState()
		return pending == 0 && slices.Equal(subjects, []string{worker.RetirePrefix + ".at.team-a.k2.evt-later"})
	})
}
