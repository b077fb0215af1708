package worker_test

import (
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/providertest"
	"github.com/keyrelay/keyrelay/worker"
)

// TestShutdownNeverAcksUnfinishedWrite: a worker stopped while a slow write
// is in flight interrupts it after the grace period and hands the event
// back unacknowledged; another worker then completes it, with one
// confirmation and one provider version.
func TestShutdownNeverAcksUnfinishedWrite(t *testing.T) {
	var faulty *providertest.Faulty
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{"local": func(p providers.Provider) providers.Provider {
		faulty = providertest.NewFaulty(p, providertest.FaultConfig{Latency: 2 * time.Second, Ops: []providertest.Op{providertest.OpPut}})
		return faulty
	}}})
	_, stop := b.startWorker(func(c *worker.Config) { c.ShutdownGrace = 200 * time.Millisecond })
	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-slow")
	b.publish(ev)
	waitFor(t, func() bool { return faulty.Stats().Calls > 0 })
	stop()
	if n := len(b.rawMessages(worker.ConfirmationsStream)); n != 0 {
		t.Fatalf("%d confirmations after an interrupted write", n)
	}
	if _, err := b.stores["local"].Get(b.ctx, name("team-a", "key-1"), ""); err == nil {
		t.Fatal("the interrupted write reached the store")
	}
	faulty.SetConfig(providertest.FaultConfig{})
	b.startWorker(nil)
	cs := b.confirmations(1, 20*time.Second)
	if cs[0].Status != events.StatusStored || cs[0].Attempts < 2 {
		t.Fatalf("after restart: %+v", cs[0])
	}
	vs, _ := b.stores["local"].Versions(b.ctx, name("team-a", "key-1"))
	if len(vs) != 1 {
		t.Fatalf("%d versions", len(vs))
	}
}

// TestWorkerSurvivesServerRestart: the JetStream server restarts under a
// running worker; the worker resumes consuming by itself and handles the
// events published afterwards.
func TestWorkerSurvivesServerRestart(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	first := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-1")
	b.publish(first)
	b.confirmations(1, 20*time.Second)
	b.srv.Restart()
	waitFor(t, func() bool { return b.nc.IsConnected() })
	second := b.keyEvent(events.KeyRotated, "team-a", "key-1", 2, "sk-2")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := b.pub.Publish(b.ctx, second); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("publish after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cs := byEventID(b.confirmations(2, 45*time.Second))
	if cs[second.ID].Status != events.StatusRotated {
		t.Fatalf("after restart: %+v", cs[second.ID])
	}
	if got := b.value("local", name("team-a", "key-1")); got != "sk-2" {
		t.Fatalf("value %q", got)
	}
}
