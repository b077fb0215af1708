package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/worker"
)

// TestPublishToFullStreamIsErrStreamFull: a lane stream at
// streams.events_max_bytes refuses the publish (it discards new messages,
// not accepted ones); Publish's error wraps ErrStreamFull, a PublishAsync
// future's error satisfies IsStreamFull, every event accepted before is
// still stored, and other errors are not taken for a full stream.
func TestPublishToFullStreamIsErrStreamFull(t *testing.T) {
	srv := testenv.StartNATS(t)
	_, js := testenv.ConnectJetStream(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{DuplicateWindow: time.Minute, AckWait: 30 * time.Second,
		MaxAckPending: 100, EventsMaxBytes: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	pub := client.NewPublisher(js)
	ev := func(i int) *events.Event {
		return &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("ev-%d", i), Type: events.KeyUpdated, Time: time.Now().UTC(),
			TeamID: "team-a", KeyID: fmt.Sprintf("key-%d", i), Generation: uint64(i + 1)}
	}
	var accepted int
	var err error
	for accepted = 0; accepted < 10000; accepted++ {
		if _, err = pub.Publish(ctx, ev(accepted)); err != nil {
			break
		}
	}
	if !errors.Is(err, client.ErrStreamFull) || !client.IsStreamFull(err) {
		t.Fatalf("after %d events: %v, want ErrStreamFull", accepted, err)
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("%v does not wrap the server's *jetstream.APIError", err)
	}
	t.Logf("refused after %d events: %v", accepted, err)
	s, err := js.Stream(ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.CachedInfo().State; st.FirstSeq != 1 || st.Msgs != uint64(accepted) {
		t.Fatalf("stream holds %d messages from %d, want every one of the %d accepted from 1", st.Msgs, st.FirstSeq, accepted)
	}
	f, err := pub.PublishAsync(ev(accepted + 1))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Ok():
		t.Fatal("a publish to the full stream was accepted")
	case err := <-f.Err():
		if !client.IsStreamFull(err) {
			t.Fatalf("async publish: %v, want IsStreamFull", err)
		}
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	// Room again (as the workers' trimming makes it): publishing works.
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(uint64(accepted/2))); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, ev(accepted+2)); err != nil {
		t.Fatalf("publish after room was made: %v", err)
	}
	// Not a full stream: no stream for the subject.
	if err := js.DeleteStream(ctx, worker.EventsStream); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, ev(accepted+3)); err == nil || client.IsStreamFull(err) {
		t.Fatalf("publish without a stream: %v, want an error that is not ErrStreamFull", err)
	}
}
