package worker_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestDLQRetryRefusesUnsealedOriginal: an entry that holds the original
// of a valid event whose value is plaintext (stored by a version before
// the DLQ redacted such values, or written into the DLQ stream by someone
// else) is not proven sealed. `dlq retry` must refuse it, as it refuses a
// redacted entry, rather than publish the plaintext value into the events
// stream again.
func TestDLQRetryRefusesUnsealedOriginal(t *testing.T) {
	const sentinel = "sk-SENTINEL-dlq-retry-plain"
	b := setup(t, setupOptions{})
	ev := rawKeyEvent(t, "old-plain", "team-a", "key-plain",
		`{"alg":"plaintext","ct":"`+base64.StdEncoding.EncodeToString([]byte(sentinel))+`"}`)
	data, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: events.DLQSubject("team-a", "key-plain"), Data: data, Header: nats.Header{}}
	m.Header.Set(worker.HdrSubject, ev.Subject())
	m.Header.Set(worker.HdrEventID, ev.ID)
	m.Header.Set(worker.HdrStatus, string(events.StatusFailed))
	m.Header.Set(worker.HdrStreamSeq, "7")
	ack, err := b.js.PublishMsg(b.ctx, m, jetstream.WithExpectStream(worker.DLQStream))
	if err != nil {
		t.Fatal(err)
	}
	before := b.lastSeq(worker.StreamOf(events.LaneInteractive))
	err = worker.RetryDeadLetter(b.ctx, b.js, ack.Sequence)
	if after := b.lastSeq(worker.StreamOf(events.LaneInteractive)); after != before {
		t.Errorf("the plaintext value was published into the events stream again (%d messages)", after-before)
	}
	if err == nil || !strings.Contains(err.Error(), "not sealed") {
		t.Fatalf("retry: %v, want refused (not sealed)", err)
	}
	if strings.Contains(err.Error(), sentinel) || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte(sentinel))) {
		t.Fatal("the refusal quotes the value")
	}
}
