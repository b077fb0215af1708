package jsread_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/jsread"
	"github.com/keyrelay/keyrelay/internal/testenv"
)

// BenchmarkReadRange reads the same 20,000 messages (about an event's
// size each) with Read and, as the baseline, the way the point-in-time
// replay read them before: an ordered consumer and Fetch(256) with a 2 s
// wait (which recreates its consumer at every fetch), stopping at the
// message with nothing pending after it. Each iteration
// does both, alternating which goes first, and reports both rates and
// their ratio.
func BenchmarkReadRange(b *testing.B) {
	_, js := testenv.StartJetStream(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		b.Fatal(err)
	}
	const n = 20000
	body := make([]byte, 600)
	for i := range n {
		if _, err := js.PublishAsync("s.x", body); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()

	withRead := func() time.Duration {
		start := time.Now()
		got := 0
		if err := jsread.Read(ctx, js, jsread.Config{Stream: "S"}, func(jetstream.Msg, *jetstream.MsgMetadata) bool { got++; return true }); err != nil {
			b.Fatal(err)
		}
		if got != n {
			b.Fatalf("read %d", got)
		}
		return time.Since(start)
	}
	withOrdered := func() time.Duration {
		start := time.Now()
		cons, err := js.OrderedConsumer(ctx, "S", jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < n {
			batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			k := 0
			for m := range batch.Messages() {
				k++
				// As the replay did: stop at the range's last message,
				// without waiting for the fetch to end.
				if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
					break
				}
			}
			if got+k == n {
				got += k
				break
			}
			if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
				b.Fatal(err)
			}
			if k == 0 {
				b.Fatalf("ordered: stopped at %d", got)
			}
			got += k
		}
		return time.Since(start)
	}
	var tr, to time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			tr += withRead()
			to += withOrdered()
		} else {
			to += withOrdered()
			tr += withRead()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(n*b.N)/tr.Seconds(), "jsread-msgs/s")
	b.ReportMetric(float64(n*b.N)/to.Seconds(), "ordered-msgs/s")
	b.ReportMetric(to.Seconds()/tr.Seconds(), "speedup")
}
