package jsread_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/jsread"
	"github.com/keyrelay/keyrelay/internal/testenv"
)

func stream(t *testing.T, js jetstream.JetStream, replicas int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: replicas}); err != nil {
		t.Fatal(err)
	}
}

// publish stores n messages, alternating subjects s.a and s.b, each
// carrying its index.
func publish(t *testing.T, js jetstream.JetStream, from, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := from; i < from+n; i++ {
		subj := "s.a"
		if i%2 == 1 {
			subj = "s.b"
		}
		if _, err := js.Publish(ctx, subj, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// read collects the indexes read, failing on a sequence out of order.
func read(ctx context.Context, t *testing.T, js jetstream.JetStream, cfg jsread.Config, each func(n int) bool) ([]int, error) {
	t.Helper()
	var got []int
	var last uint64
	err := jsread.Read(ctx, js, cfg, func(m jetstream.Msg, md *jetstream.MsgMetadata) bool {
		if md.Sequence.Stream <= last {
			t.Errorf("sequence %d after %d", md.Sequence.Stream, last)
		}
		last = md.Sequence.Stream
		i, err := strconv.Atoi(string(m.Data()))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, i)
		if each != nil {
			return each(len(got))
		}
		return true
	})
	return got, err
}

func wantRange(t *testing.T, got []int, from, step, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("read %d messages, want %d", len(got), n)
	}
	for k, i := range got {
		if want := from + k*step; i != want {
			t.Fatalf("message %d is %d, want %d", k, i, want)
		}
	}
}

func TestReadRanges(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	stream(t, js, 1)
	publish(t, js, 0, 1000)
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	publish(t, js, 1000, 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct {
		name              string
		cfg               jsread.Config
		from, step, count int
		stopAt            int // fn returns false at this message (0: never)
	}{
		{name: "all", cfg: jsread.Config{Stream: "S"}, from: 0, step: 1, count: 1010},
		{name: "small batches", cfg: jsread.Config{Stream: "S", Batch: 7}, from: 0, step: 1, count: 1010},
		{name: "filtered", cfg: jsread.Config{Stream: "S", FilterSubjects: []string{"s.b"}}, from: 1, step: 2, count: 505},
		{name: "two filters", cfg: jsread.Config{Stream: "S", FilterSubjects: []string{"s.a", "s.b"}}, from: 0, step: 1, count: 1010},
		{name: "from a sequence", cfg: jsread.Config{Stream: "S", StartSeq: 901}, from: 900, step: 1, count: 110},
		{name: "from a time", cfg: jsread.Config{Stream: "S", StartTime: mid}, from: 1000, step: 1, count: 10},
		{name: "stopped by fn", cfg: jsread.Config{Stream: "S"}, from: 0, step: 1, count: 300, stopAt: 300},
		{name: "nothing matches", cfg: jsread.Config{Stream: "S", FilterSubjects: []string{"s.c"}}, count: 0},
		{name: "after the end", cfg: jsread.Config{Stream: "S", StartSeq: 5000}, count: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := read(ctx, t, js, tc.cfg, func(n int) bool { return tc.stopAt == 0 || n < tc.stopAt })
			if err != nil {
				t.Fatal(err)
			}
			wantRange(t, got, tc.from, tc.step, tc.count)
		})
	}

	// Messages stored while the read runs are read too.
	got, err := read(ctx, t, js, jsread.Config{Stream: "S", Batch: 100}, func(n int) bool {
		if n == 50 {
			publish(t, js, 1010, 300)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	wantRange(t, got, 0, 1, 1310)

	if _, err := read(ctx, t, js, jsread.Config{Stream: "NOPE", Stall: 200 * time.Millisecond, GiveUp: time.Second}, nil); !errors.Is(err, jsread.ErrStalled) {
		t.Errorf("a stream that does not exist: %v, want ErrStalled", err)
	}
	if _, err := read(ctx, t, js, jsread.Config{Stream: "S", StartSeq: 1, StartTime: mid}, nil); err == nil {
		t.Error("both starts: no error")
	}
}

// A read during which its server goes away fails after GiveUp, long
// before its context ends, instead of returning what it had
// read as if it were the whole range.
func TestReadFailsWhenTheServerIsGone(t *testing.T) {
	srv, js := testenv.StartJetStream(t)
	stream(t, js, 1)
	publish(t, js, 0, 500)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := read(ctx, t, js, jsread.Config{Stream: "S", Batch: 50, Stall: 500 * time.Millisecond, GiveUp: 2 * time.Second}, func(n int) bool {
		if n == 100 {
			srv.Stop()
		}
		return true
	})
	switch {
	case err == nil:
		t.Fatalf("read %d of 500 messages and no error", len(got))
	case ctx.Err() != nil:
		t.Fatalf("waited out the context: %v", err)
	}
	t.Logf("after %d messages: %v", len(got), err)
}

// On a 3-node cluster at replicas 3, the node leading the stream is
// SIGKILLed in the middle of a read (and, in the second round, started
// again at once): the read goes on where it stopped, on a new consumer,
// and gives every message once, in order.
func TestReadAcrossALostLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster")
	}
	c, js := testenv.StartClusterJetStream(t, 3)
	stream(t, js, 3)
	const n = 2000
	publish(t, js, 0, n)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for round := range 2 {
		var killed int
		got, err := read(ctx, t, js, jsread.Config{Stream: "S", Batch: 100}, func(k int) bool {
			if k == n/2 {
				leader, err := c.LeaderOf(ctx, "S")
				if err != nil {
					t.Fatal(err)
				}
				killed = leader
				c.Kill(leader)
				if round == 1 {
					c.Start(leader)
				}
			}
			return true
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		wantRange(t, got, 0, 1, n)
		if !c.Running(killed) {
			c.Start(killed)
		}
		hctx, hcancel := context.WithTimeout(ctx, time.Minute)
		if err := c.WaitHealthy(hctx); err != nil {
			t.Fatal(err)
		}
		hcancel()
		t.Log(fmt.Sprintf("round %d: %d messages read across the loss of node %s", round, len(got), c.Name(killed)))
	}
}
