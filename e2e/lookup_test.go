package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
)

const e2eLookupToken = "e2e-lookup-token-team-a-01"

// TestLookupInvalidationAcrossProcesses runs two `keyrelay serve`
// processes. Instance B caches every key; rotations are handled by
// whichever worker takes them, and the test measures, for each rotation,
// the time from the confirmation's publication to B serving the new value.
// Deletions must turn into 404 on B the same way.
func TestLookupInvalidationAcrossProcesses(t *testing.T) {
	e := newEnv(t, envOptions{extraYAML: `
  lookup:
    ttl: 10m
    clients:
      team-a:
        team: team-a
        token: ` + e2eLookupToken})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e.startWorker("a")
	b := e.startWorker("b")
	pub := client.NewPublisher(e.js)
	lc := &lookupclient.HTTP{BaseURL: "http://127.0.0.1:" + strconv.Itoa(b.lookupPort), Token: e2eLookupToken,
		Client: &http.Client{Timeout: 5 * time.Second}}

	// Confirmations as they are published (core subscription: the
	// earliest moment a confirmation exists).
	confirmed := make(chan time.Time, 1024)
	confirmedID := make(chan string, 1024)
	sub, err := e.nc.Subscribe(events.ConfirmationsPrefix+".team-a.>", func(m *nats.Msg) {
		confirmed <- time.Now()
		confirmedID <- m.Subject
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	gen := uint64(0)
	publish := func(typ events.Type, key, val string) {
		gen++
		var ev *events.Event
		if typ == events.KeyDeleted {
			ev = &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("lk-%s-%d", key, gen), Type: typ, Time: time.Now().UTC(),
				TeamID: "team-a", KeyID: key, Generation: gen}
		} else {
			ev, err = events.NewKeyEvent(ctx, e.keyring, typ, "team-a", key, gen, []byte(val), events.KeyData{})
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	waitConfirmed := func() time.Time {
		select {
		case at := <-confirmed:
			<-confirmedID
			return at
		case <-time.After(30 * time.Second):
			t.Fatal("no confirmation within 30s")
		}
		return time.Time{}
	}

	const keys, rotations = 10, 100
	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		publish(events.KeyCreated, key, "v0-"+key)
		waitConfirmed()
		s, err := lc.Get(ctx, key)
		if err != nil || s.Value != "v0-"+key {
			t.Fatalf("%s: %+v %v", key, s, err)
		}
	}
	var lat []time.Duration
	polls := 0
	for i := range rotations {
		key := fmt.Sprintf("key-%d", i%keys)
		want := fmt.Sprintf("v%d-%s", i+1, key)
		publish(events.KeyRotated, key, want)
		at := waitConfirmed()
		for {
			polls++
			s, err := lc.Get(ctx, key)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if s.Value == want {
				lat = append(lat, time.Since(at))
				break
			}
			if time.Since(at) > 5*time.Second {
				t.Fatalf("%s: instance b still serves the replaced value 5s after the confirmation", key)
			}
		}
	}
	publish(events.KeyDeleted, "key-0", "")
	at := waitConfirmed()
	for {
		_, err := lc.Get(ctx, "key-0")
		if errors.Is(err, lookupclient.ErrNotFound) {
			break
		}
		if time.Since(at) > 5*time.Second {
			t.Fatalf("deleted key still served 5s after its confirmation: %v", err)
		}
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	msg := fmt.Sprintf("lookup invalidation across processes: %d rotations, confirmation -> new value on instance b: p50 %v, p90 %v, p99 %v, max %v (%d lookups polled)",
		len(lat), q(0.5).Round(10*time.Microsecond), q(0.9).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond), polls)
	t.Log(msg)
	fmt.Println(msg)
}
