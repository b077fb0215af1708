package worker_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestClaimLeaseExpiriesCounted: a claim left behind by a stopped worker
// is taken over once its lease ran out, and that is counted
// (keyrelay_claim_lease_expiries_total); a released claim is not.
func TestClaimLeaseExpiriesCounted(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	const team, key = "team-x", "key-x"
	b.publish(b.keyEvent(events.KeyCreated, team, key, 1, "sk-gen-1"))
	b.confirmations(1, 30*time.Second)
	if n := testutil.ToFloat64(b.metrics.ClaimExpiries); n != 0 {
		t.Fatalf("%v expiries after a plain write", n)
	}
	kv, _ := b.js.KeyValue(b.ctx, worker.LedgerBucket)
	ledger := worker.NewLedger(kv)
	le, rev, err := ledger.Get(b.ctx, team, key)
	if err != nil || le == nil {
		t.Fatalf("ledger: %+v %v", le, err)
	}
	le.Claim = &worker.Claim{EventID: uuid.NewString(), Generation: 9, Worker: "stopped", Until: time.Now().Add(-time.Second)}
	if _, err := ledger.Put(b.ctx, team, key, le, rev); err != nil {
		t.Fatal(err)
	}
	b.publish(b.keyEvent(events.KeyRotated, team, key, 2, "sk-gen-2"))
	if c := b.confirmations(2, 30*time.Second); c[1].Status != events.StatusRotated {
		t.Fatalf("rotation over an expired claim: %+v", c[1])
	}
	if n := testutil.ToFloat64(b.metrics.ClaimExpiries); n != 1 {
		t.Fatalf("%v expiries counted, want 1", n)
	}
}

// TestOldestUnackedAge: the age of a consumer's oldest unacknowledged
// message is read from the first stream message after its ack floor,
// whichever later messages were acknowledged, and is 0 once none is
// pending.
func TestOldestUnackedAge(t *testing.T) {
	b := setup(t, setupOptions{})
	s, err := b.js.CreateStream(b.ctx, jetstream.StreamConfig{Name: "AGE_TEST", Subjects: []string{"age.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"age.a", "age.b", "age.c"} {
		if _, err := b.js.Publish(b.ctx, subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	published := time.Now()
	c, err := s.CreateConsumer(b.ctx, jetstream.ConsumerConfig{Durable: "age", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 3 {
		t.Fatalf("fetched %d", len(msgs))
	}
	age := func() time.Duration {
		t.Helper()
		info, err := c.Info(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		d, err := worker.OldestUnackedAge(b.ctx, b.js, info, published.Add(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// The first and the third acknowledged: the second is the oldest open.
	for _, i := range []int{0, 2} {
		if err := msgs[i].DoubleAck(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	md, _ := msgs[1].Metadata()
	if got, want := age(), published.Add(10*time.Second).Sub(md.Timestamp); got != want {
		t.Fatalf("age %v, want %v (the second message's)", got, want)
	}
	if err := msgs[1].DoubleAck(b.ctx); err != nil {
		t.Fatal(err)
	}
	if got := age(); got != 0 {
		t.Fatalf("age %v with nothing pending", got)
	}
}
