package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
)

func readConfirmations(ctx context.Context, t *testing.T, js jetstream.JetStream) []*events.Confirmation {
	t.Helper()
	s, err := js.Stream(ctx, "KEYRELAY_CONFIRMATIONS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int(info.State.Msgs)
	if total == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, "KEYRELAY_CONFIRMATIONS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*events.Confirmation, 0, total)
	for len(out) < total {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var c events.Confirmation
			if err := json.Unmarshal(m.Data(), &c); err != nil {
				t.Fatalf("confirmation is not JSON: %v", err)
			}
			out = append(out, &c)
		}
		if n == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}
