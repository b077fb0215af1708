package worker_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestTeamsCurrentSeesEverySettingsMessageOnACluster: on a cluster a
// direct get may be answered by a replica that has not yet stored the
// newest messages (measured: about one in ten reads right after a
// publish's acknowledgement, under load). "Settings before keys" needs
// the team's last settings message as of the key event, so Teams reads it
// from the stream's leader. Each round publishes a settings event, then at
// once asks for the team's current settings, as a key event received
// right after it would; every answer must include that message.
func TestTeamsCurrentSeesEverySettingsMessageOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster")
	}
	t.Parallel()
	b := setup(t, setupOptions{cluster: true})
	// Connected to a follower of the events stream: NATS hands a request
	// to a queue member on the requester's own server first, so there a
	// direct get is answered by the follower.
	info, err := b.cluster.StreamInfo(b.ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	follower := -1
	for i := 0; i < b.cluster.Size(); i++ {
		if b.cluster.Name(i) != info.Cluster.Leader {
			follower = i
			break
		}
	}
	nc, err := nats.Connect(b.cluster.Node(follower).URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(b.ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(b.ctx, worker.TeamsBucket)
	if err != nil {
		t.Fatal(err)
	}
	teams := worker.NewTeams(kv, stream, b.log, nc)
	pub := client.NewPublisher(js)
	const team, rounds = "team-l", 600
	stale := 0
	for i := uint64(1); i <= rounds; i++ {
		// Other traffic on the stream keeps the replicas busy (no worker
		// runs, so these are only stored).
		for j := 0; j < 8; j++ {
			if _, err := js.PublishAsync(fmt.Sprintf("%s.team-x.key-%d.key.rotated", events.EventsPrefix, j), []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
		backend := fmt.Sprintf("backend-%d", i)
		seq, err := pub.Publish(b.ctx, b.settingsEvent(team, i, &events.TeamSettings{Backend: backend}))
		if err != nil {
			t.Fatal(err)
		}
		st, err := teams.Current(b.ctx, team, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if st.AppliedSeq < seq || st.Settings == nil || st.Settings.Backend != backend {
			stale++
		}
	}
	if stale > 0 {
		t.Fatalf("%d of %d lookups missed a settings message stored before them", stale, rounds)
	}
}

// TestTeamsCurrentConcurrentLookups: many key events of one team ask for
// its settings at once while its settings keep changing. They share
// lookups (Teams.Lookup), and each answer still includes every settings
// message acknowledged before the event asked (a lookup that started
// before the event was received may miss it: 40 to 60 of 4,800 answers
// did when the sharing ignored when the lookup started).
func TestTeamsCurrentConcurrentLookups(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOptions{})
	stream, err := b.js.Stream(b.ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	teams := worker.NewTeams(b.kv(worker.TeamsBucket), stream, b.log, b.nc)
	if err := teams.Start(b.ctx); err != nil {
		t.Fatal(err)
	}
	// A bounded run of changes: no worker applies them here, so each is
	// applied by the lookups that find it behind (Teams.ApplyThrough).
	const team, callers, changes = "team-c", 16, 300
	var acked atomic.Uint64
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		defer close(stop)
		for gen := uint64(1); gen <= changes; gen++ {
			seq, err := b.pub.Publish(b.ctx, b.settingsEvent(team, gen, &events.TeamSettings{Backend: fmt.Sprintf("backend-%d", gen)}))
			if err != nil {
				pubDone <- err
				return
			}
			acked.Store(seq)
			time.Sleep(2 * time.Millisecond)
		}
		pubDone <- nil
	}()
	var stale, total, timeouts atomic.Int64
	var firstTimeout atomic.Int64 // unix ns of the first of a run of timeouts
	var wg sync.WaitGroup
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for last := false; !last; {
				select {
				case <-stop:
					last = true // one more, after the last change
				default:
				}
				want := acked.Load()
				st, err := teams.Current(b.ctx, team, time.Now())
				if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) && b.ctx.Err() == nil {
					// A request that timed out on a loaded machine (each
					// attempt is bounded to 3 s): the worker retries
					// these in place (infraDoBounded), and so does this
					// caller, as long as it is not every call for 30 s.
					if timeouts.Add(1); firstTimeout.CompareAndSwap(0, time.Now().UnixNano()) ||
						time.Since(time.Unix(0, firstTimeout.Load())) < 30*time.Second {
						continue
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
				firstTimeout.Store(0)
				total.Add(1)
				if st.AppliedSeq < want {
					stale.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	lookups := teams.Lookups.Load()
	t.Logf("%d calls, %d lookups of the last settings message, %d changes, %d attempts timed out and retried", total.Load(), lookups, changes, timeouts.Load())
	if stale.Load() > 0 {
		t.Fatalf("%d of %d answers missed a settings message acknowledged before they were asked", stale.Load(), total.Load())
	}
	if total.Load() < 2*callers || lookups >= total.Load() || lookups == 0 {
		t.Fatalf("%d lookups for %d calls: too few calls, or not shared", lookups, total.Load())
	}
}
