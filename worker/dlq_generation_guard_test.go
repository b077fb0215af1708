package worker_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/providertest"
	"github.com/keyrelay/keyrelay/worker"
)

// TestDLQRetryRefusesOldUngeneratedEventOverNewer: an event published
// without a generation is ordered by its stream sequence, and `dlq retry`
// republishes it at a new, higher one. Retrying such an old dead letter
// after a newer event of the same key was applied must be refused: it
// would otherwise put the old value back over the newer one.
func TestDLQRetryRefusesOldUngeneratedEventOverNewer(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		return providertest.NewFaulty(p, providertest.FaultConfig{Permanent: func(string) bool { return broken.Load() }})
	}}})
	b.startWorker(nil)
	old := b.keyEvent(events.KeyCreated, "team-a", "key-1", 0, "sk-old")
	b.publish(old)
	if cs := b.confirmations(1, 20*time.Second); cs[0].Status != events.StatusFailed {
		t.Fatalf("%+v", cs[0])
	}
	broken.Store(false)
	newer := b.keyEvent(events.KeyRotated, "team-a", "key-1", 0, "sk-new")
	b.publish(newer)
	if cs := byEventID(b.confirmations(2, 20*time.Second)); cs[newer.ID].Status != events.StatusRotated {
		t.Fatalf("%+v", cs[newer.ID])
	}
	dls, _ := worker.ListDeadLetters(b.ctx, b.js, 0)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters", len(dls))
	}
	err := worker.RetryDeadLetter(b.ctx, b.js, dls[0].Seq)
	if err == nil {
		// Let the worker act on it, to show what the retry did.
		time.Sleep(3 * time.Second)
		t.Fatalf("retried over a newer value; the key now holds %q", b.value("local", name("team-a", "key-1")))
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-new" {
		t.Fatalf("value %q, want sk-new", got)
	}
	if dls, _ := worker.ListDeadLetters(b.ctx, b.js, 0); len(dls) != 1 {
		t.Fatalf("the refused entry was removed: %d dead letters", len(dls))
	}
}

// TestDLQRetryRefusesOldUngeneratedEventBehindNewerPublished: the same,
// when the newer event was published but not applied (it failed too): the
// old one must not be republished behind it.
func TestDLQRetryRefusesOldUngeneratedEventBehindNewerPublished(t *testing.T) {
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		return providertest.NewFaulty(p, providertest.FaultConfig{Permanent: func(string) bool { return true }})
	}}})
	b.startWorker(nil)
	old := b.keyEvent(events.KeyCreated, "team-a", "key-1", 0, "sk-old")
	b.publish(old)
	b.confirmations(1, 20*time.Second)
	newer := b.keyEvent(events.KeyRotated, "team-a", "key-1", 0, "sk-new")
	b.publish(newer)
	b.confirmations(2, 20*time.Second)
	dls, _ := worker.ListDeadLetters(b.ctx, b.js, 0)
	if len(dls) != 2 {
		t.Fatalf("%d dead letters", len(dls))
	}
	if err := worker.RetryDeadLetter(b.ctx, b.js, dls[0].Seq); err == nil || !strings.Contains(err.Error(), "published since") {
		t.Fatalf("retry of the older entry: %v", err)
	}
	// The newest one may be retried.
	if err := worker.RetryDeadLetter(b.ctx, b.js, dls[1].Seq); err != nil {
		t.Fatalf("retry of the newest entry: %v", err)
	}
}

// TestDLQRetryUngeneratedEventWithNothingNewer: an event without a
// generation, with nothing newer of its key, is still retried and stored.
func TestDLQRetryUngeneratedEventWithNothingNewer(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		return providertest.NewFaulty(p, providertest.FaultConfig{Permanent: func(string) bool { return broken.Load() }})
	}}})
	b.startWorker(nil)
	other := b.keyEvent(events.KeyCreated, "team-a", "key-other", 0, "sk-other")
	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 0, "sk-1")
	b.publish(ev)
	b.confirmations(1, 20*time.Second)
	broken.Store(false)
	b.publish(other) // another key's newer event does not count
	b.confirmations(2, 20*time.Second)
	dls, _ := worker.ListDeadLetters(b.ctx, b.js, 0)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters", len(dls))
	}
	if err := worker.RetryDeadLetter(b.ctx, b.js, dls[0].Seq); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return byEventID(b.confirmations(2, time.Second))[ev.ID].Status == events.StatusStored })
	if got := b.value("local", name("team-a", "key-1")); got != "sk-1" {
		t.Fatalf("value %q", got)
	}
}
