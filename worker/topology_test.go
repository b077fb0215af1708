package worker_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestEnsureTopologyUpgradesEarlierStreams: streams and the consumer made
// by the previous release (confirmations with DiscardNewPerSubject, an
// unbounded DLQ, a bounded MaxDeliver) are updated in place to the current
// shape, and a confirmation is still refused a second time.
func TestEnsureTopologyUpgradesEarlierStreams(t *testing.T) {
	b := setup(t, setupOptions{})
	js := b.js
	// Recreate the previous release's shapes.
	for _, name := range []string{worker.ConfirmationsStream, worker.DLQStream} {
		if err := js.DeleteStream(b.ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateStream(b.ctx, jetstream.StreamConfig{Name: worker.ConfirmationsStream, Subjects: []string{events.ConfirmationsPrefix + ".>"},
		MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true, MaxAge: 720 * time.Hour, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(b.ctx, jetstream.StreamConfig{Name: worker.DLQStream, Subjects: []string{events.DLQPrefix + ".>"}, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(b.ctx, worker.EventsStream, jetstream.ConsumerConfig{Durable: worker.ConsumerName,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxDeliver: 10, MaxAckPending: 256}); err != nil {
		t.Fatal(err)
	}
	topo := b.topo
	topo.DLQMaxBytes, topo.DLQMaxMsgs, topo.ConfirmationsMaxBytes, topo.ConfirmationsMaxMsgs = 1<<20, 100, 1<<20, 1000
	if err := worker.EnsureTopology(b.ctx, js, topo); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	cs, _ := js.Stream(b.ctx, worker.ConfirmationsStream)
	ci, _ := cs.Info(b.ctx)
	if ci.Config.Discard != jetstream.DiscardOld || ci.Config.DiscardNewPerSubject || ci.Config.MaxMsgs != 1000 || ci.Config.MaxMsgsPerSubject != 1 {
		t.Fatalf("confirmations after the upgrade: %+v", ci.Config)
	}
	ds, _ := js.Stream(b.ctx, worker.DLQStream)
	di, _ := ds.Info(b.ctx)
	if di.Config.MaxMsgs != 100 || di.Config.MaxBytes != 1<<20 {
		t.Fatalf("DLQ after the upgrade: %+v", di.Config)
	}
	c, _ := js.Consumer(b.ctx, worker.EventsStream, worker.ConsumerName)
	if info, _ := c.Info(b.ctx); info.Config.MaxDeliver != -1 {
		t.Fatalf("consumer MaxDeliver %d, want unlimited", info.Config.MaxDeliver)
	}
	b.startWorker(nil)
	ev := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk")
	b.publish(ev)
	b.waitConfirmed([]*events.Event{ev}, 20*time.Second)
	// The same event again after the dedupe window would be refused: a
	// direct second publish on its subject is refused by the server.
	subj := events.ConfirmationSubject("team-a", "key-1", ev.ID)
	if _, err := js.Publish(b.ctx, subj, []byte(`{}`), jetstream.WithExpectLastSequencePerSubject(0)); err == nil {
		t.Fatal("a second confirmation was accepted")
	}
}
