package lookup_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/worker"
)

// TestValuesCachedBeforeTheFollowerIsUpAreNotTrusted: serve starts the
// confirmation follower in a goroutine and opens the listeners at once, so
// lookups are answered (and cached) before the follower's consumer exists.
// The consumer starts at the stream's end, so a confirmation published in
// between is never seen: the cache must not go on serving a value it
// cached before it could see confirmations, fresh, for its whole TTL.
func TestValuesCachedBeforeTheFollowerIsUpAreNotTrusted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := testenv.StartNATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute, AckWait: 5 * time.Second,
		MaxDeliver: 4, MaxAckPending: 16}); err != nil {
		t.Fatal(err)
	}
	var value atomic.Value
	value.Store("sk-before-rotation")
	loader := lookup.LoaderFunc(func(_ context.Context, _ lookup.Scope, name string) (*lookup.Secret, error) {
		return &lookup.Secret{Name: name, Value: []byte(value.Load().(string)), Source: "test"}, nil
	})
	reg := prometheus.NewRegistry()
	svc, err := lookup.New(lookup.Config{TTL: time.Hour}, loader, lookup.NewMetrics(reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	sc := lookup.Scope{Global: true}
	get := func() string {
		t.Helper()
		b, lerr := svc.Lookup(ctx, lookup.HTTP, sc, "keyrelay/team-a/k", nil)
		if lerr != nil {
			t.Fatal(lerr)
		}
		var a struct{ Value string }
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatal(err)
		}
		return a.Value
	}
	// A lookup answered before the follower's consumer exists.
	if v := get(); v != "sk-before-rotation" {
		t.Fatal(v)
	}
	// The key is rotated, and its confirmation published, meanwhile.
	value.Store("sk-after-rotation")
	confirm := func(key, ref string) {
		t.Helper()
		id := fmt.Sprintf("ev-%s-%d", key, time.Now().UnixNano())
		c := events.Confirmation{SpecVersion: events.SpecVersion, EventID: id, EventType: events.KeyRotated, TeamID: "team-a", KeyID: key,
			Generation: 2, Status: events.StatusRotated, SecretRef: ref, Time: time.Now().UTC()}
		b, _ := json.Marshal(c)
		if _, err := js.Publish(ctx, events.ConfirmationSubject("team-a", key, id), b); err != nil {
			t.Fatal(err)
		}
	}
	confirm("k", "keyrelay/team-a/k")

	// Now the follower comes up; wait until it applies a later confirmation.
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	go svc.Follow(fctx, js)
	applied := func() float64 {
		mfs, _ := reg.Gather()
		n := 0.0
		for _, mf := range mfs {
			if mf.GetName() == "keyrelay_lookup_invalidations_total" {
				for _, m := range mf.GetMetric() {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for applied() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the follower applied nothing")
		}
		confirm("other", "keyrelay/team-a/other")
		time.Sleep(50 * time.Millisecond)
	}
	if v := get(); v != "sk-after-rotation" {
		t.Fatalf("after the follower came up the cache still serves the value it held before (%q): the rotation's confirmation was missed", v)
	}
}
