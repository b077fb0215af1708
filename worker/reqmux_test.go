package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/internal/testenv"
)

// TestRequestMsg checks each way a bounded request ends, against a real
// nats-server: a reply, no responders, a request nobody answers (bounded
// by the caller's deadline), a caller that gives up, and many requests at
// once each getting its own reply.
func TestRequestMsg(t *testing.T) {
	_, js := testenv.StartJetStream(t)
	nc := js.Conn()
	ctx := context.Background()

	// An echo service, and one that never answers.
	echo, err := nc.Subscribe("svc.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Unsubscribe()
	silent, err := nc.Subscribe("svc.silent", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	for name, c := range map[string]struct {
		subject string
		ctx     func() (context.Context, context.CancelFunc)
		want    error // nil: the echoed reply
	}{
		"reply":         {subject: "svc.echo", ctx: func() (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }},
		"no responders": {subject: "svc.nobody", ctx: func() (context.Context, context.CancelFunc) { return context.WithCancel(ctx) }, want: nats.ErrNoResponders},
		"caller deadline": {subject: "svc.silent", want: context.DeadlineExceeded,
			ctx: func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 200*time.Millisecond) }},
		"caller cancels": {subject: "svc.silent", want: context.Canceled,
			ctx: func() (context.Context, context.CancelFunc) {
				c, cancel := context.WithCancel(ctx)
				time.AfterFunc(100*time.Millisecond, cancel)
				return c, cancel
			}},
		"already ended": {subject: "svc.echo", want: context.Canceled,
			ctx: func() (context.Context, context.CancelFunc) {
				c, cancel := context.WithCancel(ctx)
				cancel()
				return c, cancel
			}},
	} {
		t.Run(name, func(t *testing.T) {
			rctx, cancel := c.ctx()
			defer cancel()
			start := time.Now()
			r, err := requestMsg(rctx, nc, &nats.Msg{Subject: c.subject, Data: []byte("ping")})
			if c.want == nil {
				if err != nil || string(r.Data) != "ping" {
					t.Fatalf("reply %v, err %v; want the echo", r, err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("ended after %v: the caller's context did not bound it", el)
			}
		})
	}

	t.Run("lost request ends at the attempt bound", func(t *testing.T) {
		start := time.Now()
		_, err := requestMsg(ctx, nc, &nats.Msg{Subject: "svc.silent"})
		if !errors.Is(err, nats.ErrTimeout) || !isInfraTransient(err) {
			t.Fatalf("err %v, want nats.ErrTimeout (transient)", err)
		}
		if el := time.Since(start); el < infraAttemptTimeout-100*time.Millisecond || el > infraAttemptTimeout+2*time.Second {
			t.Fatalf("ended after %v, want about %v", el, infraAttemptTimeout)
		}
	})

	t.Run("concurrent requests get their own replies", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				want := []byte{byte(i), byte(i >> 8)}
				r, err := requestMsg(ctx, nc, &nats.Msg{Subject: "svc.echo", Data: want})
				if err != nil {
					errs <- err
					return
				}
				if string(r.Data) != string(want) {
					errs <- errors.New("a reply went to another request")
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		mux, _ := muxFor(nc)
		mux.mu.Lock()
		left := len(mux.wait)
		mux.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d requests still registered after every reply", left)
		}
	})

	t.Run("jetstream publish through it", func(t *testing.T) {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "REQMUX", Subjects: []string{"reqmux.>"}}); err != nil {
			t.Fatal(err)
		}
		m := &nats.Msg{Subject: "reqmux.a", Data: []byte("x"), Header: nats.Header{hdrExpectedLastSubjSeq: {"0"}}}
		pa, err := jsPublish(ctx, nc, m)
		if err != nil || pa.seq != 1 {
			t.Fatalf("first publish: %+v %v", pa, err)
		}
		m = &nats.Msg{Subject: "reqmux.a", Data: []byte("y"), Header: nats.Header{hdrExpectedLastSubjSeq: {"0"}}}
		if _, err := jsPublish(ctx, nc, m); !isWrongLastSequence(err) {
			t.Fatalf("second publish expecting an empty subject: %v, want a wrong-last-sequence refusal", err)
		}
	})

	t.Run("a new connection gets a mux of its own", func(t *testing.T) {
		nc2, err := nats.Connect(nc.ConnectedUrl())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := requestMsg(ctx, nc2, &nats.Msg{Subject: "svc.echo", Data: []byte("ping")}); err != nil {
			t.Fatal(err)
		}
		nc2.Close()
		if _, err := requestMsg(ctx, nc2, &nats.Msg{Subject: "svc.echo"}); err == nil {
			t.Fatal("a request on a closed connection succeeded")
		}
	})
}

// BenchmarkRequest prices one bounded request on the event's path, 64 in
// flight against a real nats-server echo service: before (a context per
// attempt, and nats.go's request with a context) and after (requestMsg).
func BenchmarkRequest(b *testing.B) {
	_, js := testenv.StartJetStream(b)
	nc := js.Conn()
	sub, err := nc.Subscribe("svc.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx := context.Background()
	data := make([]byte, 400)
	for _, c := range []struct {
		name string
		req  func() error
	}{
		{"context-per-attempt", func() error {
			actx, cancel := context.WithTimeout(ctx, infraAttemptTimeout)
			defer cancel()
			_, err := nc.RequestMsgWithContext(actx, &nats.Msg{Subject: "svc.echo", Data: data})
			return err
		}},
		{"requestMsg", func() error {
			_, err := requestMsg(ctx, nc, &nats.Msg{Subject: "svc.echo", Data: data})
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(32) // 64 goroutines on 2 CPUs
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.req(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
