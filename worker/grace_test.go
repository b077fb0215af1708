package worker_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// TestGracePeriodRetiresThePreviousVersion: a rotation with a grace period
// keeps the previous version readable, recorded in the ledger for the
// lookup API, until the grace period ends; then it is retired, also when
// the worker that wrote the rotation stopped before that and another one
// started after. Without a grace period the previous version is kept by
// default, and retired when the team's retire_previous_after says so.
func TestGracePeriodRetiresThePreviousVersion(t *testing.T) {
	rec := &priorityLog{}
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { return &priorityRecorder{Provider: p, log: rec} },
	}})
	_, stop := b.startWorker(nil)
	ref := name("team-a", "k1")
	rotate := func(key string, gen uint64, value string, grace int64) *events.Event {
		ev, err := events.NewKeyEvent(b.ctx, b.kr, events.KeyRotated, "team-a", key, gen, []byte(value), events.KeyData{GracePeriodSeconds: grace})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	b.publish(b.keyEvent(events.KeyCreated, "team-a", "k1", 1, "v1"))
	b.confirmations(1, 30*time.Second)
	le, _, err := b.ledgerGet("team-a", "k1")
	if err != nil {
		t.Fatal(err)
	}
	v1 := le.ProviderVersion

	const grace = 3
	start := time.Now()
	b.publish(rotate("k1", 2, "v2", grace))
	b.confirmations(2, 30*time.Second)
	le, _, err = b.ledgerGet("team-a", "k1")
	if err != nil {
		t.Fatal(err)
	}
	if le.Previous == nil || le.Previous.Version != v1 || le.Previous.SecretRef != ref ||
		le.Previous.Until.Before(start.Add(grace*time.Second)) || le.Previous.Until.After(time.Now().Add(grace*time.Second)) {
		t.Fatalf("ledger previous %+v, want version %s until now+%ds", le.Previous, v1, grace)
	}
	if s, err := b.stores["local"].Get(b.ctx, ref, v1); err != nil || string(s.Value) != "v1" {
		t.Fatalf("previous version during the grace period: %v", err)
	}
	// The worker stops during the grace period; another starts after it.
	stop()
	time.Sleep(time.Until(le.Previous.Until) + 200*time.Millisecond)
	if _, err := b.stores["local"].Get(b.ctx, ref, v1); err != nil {
		t.Fatalf("retired with no worker running: %v", err)
	}
	b.startWorker(nil)
	waitFor(t, func() bool {
		_, err := b.stores["local"].Get(b.ctx, ref, v1)
		return errors.Is(err, providers.ErrNotFound)
	})
	if got := b.value("local", ref); got != "v2" {
		t.Fatalf("current value %q after the retirement, want v2", got)
	}

	// No grace period: kept (the default, retire_previous_after: keep).
	b.publish(rotate("k1", 3, "v3", 0))
	b.confirmations(3, 30*time.Second)
	le, _, _ = b.ledgerGet("team-a", "k1")
	if le.Previous != nil {
		t.Fatalf("ledger previous %+v after a rotation without grace, want none", le.Previous)
	}
	v2, v3 := versionOf(t, b, ref, "v2"), le.ProviderVersion
	time.Sleep(time.Second)
	if _, err := b.stores["local"].Get(b.ctx, ref, v2); err != nil {
		t.Fatalf("previous version without a grace period: %v, want kept", err)
	}

	// The team retires previous versions at once.
	b.publish(b.settingsEvent("team-a", 1, &events.TeamSettings{RetirePreviousAfter: "0s"}))
	b.confirmations(4, 30*time.Second)
	b.publish(rotate("k1", 4, "v4", 0))
	b.confirmations(5, 30*time.Second)
	waitFor(t, func() bool {
		_, err := b.stores["local"].Get(b.ctx, ref, v3)
		return errors.Is(err, providers.ErrNotFound)
	})
	if _, err := b.stores["local"].Get(b.ctx, ref, v2); err != nil {
		t.Fatalf("v2, kept before the team's setting, is gone: %v", err)
	}
	if got := b.value("local", ref); got != "v4" {
		t.Fatalf("current value %q, want v4", got)
	}
	// One retirement each, none left scheduled (work queue).
	s, err := b.js.Stream(b.ctx, worker.RetireStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 || info.State.LastSeq != 2 {
		t.Fatalf("retirement stream: %d left, %d scheduled; want 0 and 2", info.State.Msgs, info.State.LastSeq)
	}
	// The gateway's writes ran as interactive calls, the retirements as
	// bulk ones: they take only the provider quota the gateway leaves.
	puts, retires := rec.seen()
	if len(puts) < 4 || slices.ContainsFunc(puts, func(p providers.Priority) bool { return p != providers.PriorityInteractive }) {
		t.Errorf("the key events' writes ran at priorities %v, want all interactive", puts)
	}
	if len(retires) != 2 || slices.ContainsFunc(retires, func(p providers.Priority) bool { return p != providers.PriorityBulk }) {
		t.Errorf("the retirements ran at priorities %v, want 2, bulk", retires)
	}
}

// versionOf finds the version of ref holding value.
func versionOf(t *testing.T, b *bundle, ref, value string) string {
	t.Helper()
	vs, err := b.stores["local"].Versions(b.ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if s, err := b.stores["local"].Get(b.ctx, ref, v.Version); err == nil && string(s.Value) == value {
			return v.Version
		}
	}
	t.Fatalf("no version of %s holds %q", ref, value)
	return ""
}

func (b *bundle) ledgerGet(team, key string) (*worker.LedgerEntry, uint64, error) {
	kv, err := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	if err != nil {
		return nil, 0, err
	}
	return worker.NewLedger(kv).Get(b.ctx, team, key)
}

// priorityLog holds the priorities of the calls a backend got, from
// every instance of it.
type priorityLog struct {
	mu            sync.Mutex
	puts, retires []providers.Priority
}

func (l *priorityLog) add(ctx context.Context, to *[]providers.Priority) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*to = append(*to, providers.PriorityOf(ctx))
}

func (l *priorityLog) seen() (puts, retires []providers.Priority) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.puts), slices.Clone(l.retires)
}

// priorityRecorder records the priority of a backend's writes and
// retirements in log.
type priorityRecorder struct {
	providers.Provider
	log *priorityLog
}

func (p *priorityRecorder) Unwrap() providers.Provider { return p.Provider }

func (p *priorityRecorder) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	p.log.add(ctx, &p.log.puts)
	return p.Provider.Put(ctx, req)
}

func (p *priorityRecorder) Retire(ctx context.Context, req providers.RetireRequest) error {
	p.log.add(ctx, &p.log.retires)
	rt, ok := providers.AsRetirer(p.Provider)
	if !ok {
		return errors.New("the wrapped backend cannot retire")
	}
	return rt.Retire(ctx, req)
}
