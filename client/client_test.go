package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/natsconn"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/settings"
)

// confirmationsStream creates the confirmations stream as the worker's
// topology does (one message per event subject, R replicas).
func confirmationsStream(ctx context.Context, t *testing.T, js jetstream.JetStream, replicas int) {
	t.Helper()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: client.ConfirmationsStream, Subjects: []string{events.ConfirmationsPrefix + ".>"},
		Storage: jetstream.FileStorage, Replicas: replicas, MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew,
		DiscardNewPerSubject: true, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
}

// publishConfirmations publishes n confirmations (event ids ev-<team>-<i>)
// asynchronously on the subjects the worker files them under.
func publishConfirmations(ctx context.Context, t *testing.T, js jetstream.JetStream, teams []string, n int) {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, 0, 4096)
	flush := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatalf("publish %s: %v", f.Msg().Subject, err)
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
		futures = futures[:0]
	}
	for i := 0; i < n; i++ {
		team := teams[i%len(teams)]
		c := events.Confirmation{SpecVersion: "1", EventID: fmt.Sprintf("ev-%s-%d", team, i), EventType: events.KeyCreated,
			TeamID: team, KeyID: fmt.Sprintf("key-%d", i), Generation: 1, Status: events.StatusStored, Provider: "local",
			SecretRef: fmt.Sprintf("litellm/%s/key-%d", team, i), ProviderVersion: "1", Attempts: 1, StreamSeq: uint64(i + 1),
			Time: time.Now().UTC()}
		b, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		m := &nats.Msg{Subject: events.ConfirmationSubject(c.TeamID, c.KeyID, c.EventID), Data: b}
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
		if len(futures) == cap(futures) {
			flush()
		}
	}
	flush()
}

// TestListConfirmationsClusterLeaderChanges lists 50,000 confirmations of
// an R3 stream on a 3-node cluster while the stream's leader steps down
// and then the new leader is killed: every confirmation is listed exactly
// once and the listing ends without error.
func TestListConfirmationsClusterLeaderChanges(t *testing.T) {
	const total = 50_000
	c := testenv.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nc, err := natsconn.Connect(c.SeedURL(), settings.NATSConfig{}, "test-confirmations")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	confirmationsStream(ctx, t, js, 3)
	start := time.Now()
	publishConfirmations(ctx, t, js, []string{"team-a", "team-b"}, total)
	t.Logf("published %d confirmations in %v", total, time.Since(start).Round(time.Millisecond))

	seen := make(map[string]int, total)
	killed := -1
	var prev time.Time
	var maxGap time.Duration
	n := 0
	start = time.Now()
	err = client.ListConfirmations(ctx, js, "", func(_ uint64, cf *events.Confirmation) error {
		seen[cf.EventID]++
		n++
		if now := time.Now(); !prev.IsZero() && now.Sub(prev) > maxGap {
			maxGap = now.Sub(prev)
		}
		prev = time.Now()
		switch n {
		case total / 4:
			to, err := c.StepDown(ctx, client.ConfirmationsStream)
			if err != nil {
				return err
			}
			t.Logf("after %d confirmations: stream leader stepped down, %s leads", n, c.Name(to))
		case total / 2:
			leader, err := c.LeaderOf(ctx, client.ConfirmationsStream)
			if err != nil {
				return err
			}
			c.Kill(leader)
			killed = leader
			t.Logf("after %d confirmations: stream leader %s killed", n, c.Name(leader))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("list after %d confirmations: %v", n, err)
	}
	t.Logf("listed %d confirmations in %v, longest wait for the next one %v", n, time.Since(start).Round(time.Millisecond), maxGap.Round(time.Millisecond))
	if killed < 0 {
		t.Fatalf("listing ended after %d confirmations, before the leader was killed", n)
	}
	if len(seen) != total || n != total {
		t.Fatalf("listed %d confirmations, %d distinct, want %d", n, len(seen), total)
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("confirmation %s listed %d times", id, k)
		}
	}
}

// TestListConfirmationsEnds: the listing returns once it has shown what
// the stream held, also when that is nothing, with and without a filter.
func TestListConfirmationsEnds(t *testing.T) {
	srv := testenv.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := natsconn.Connect(srv.URL, settings.NATSConfig{}, "test-confirmations")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	confirmationsStream(ctx, t, js, 1)
	list := func(filter string) []string {
		t.Helper()
		var ids []string
		if err := client.ListConfirmations(ctx, js, filter, func(_ uint64, cf *events.Confirmation) error {
			ids = append(ids, cf.EventID)
			return nil
		}); err != nil {
			t.Fatalf("list %q: %v", filter, err)
		}
		return ids
	}
	if ids := list(""); len(ids) != 0 {
		t.Fatalf("empty stream listed %v", ids)
	}
	publishConfirmations(ctx, t, js, []string{"team-a", "team-b"}, 10)
	tests := map[string]struct {
		filter string
		want   int
		prefix string
	}{
		"all":        {filter: "", want: 10},
		"one team":   {filter: events.ConfirmationsPrefix + ".team-a.>", want: 5, prefix: "ev-team-a-"},
		"no matches": {filter: events.ConfirmationsPrefix + ".team-z.>", want: 0},
		"last only":  {filter: events.ConfirmationsPrefix + ".team-b.key-9.>", want: 1, prefix: "ev-team-b-9"},
		"first only": {filter: events.ConfirmationsPrefix + ".team-a.key-0.>", want: 1, prefix: "ev-team-a-0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ids := list(tc.filter)
			if len(ids) != tc.want {
				t.Fatalf("listed %v, want %d", ids, tc.want)
			}
			for _, id := range ids {
				if !strings.HasPrefix(id, tc.prefix) {
					t.Fatalf("listed %s with filter %s", id, tc.filter)
				}
			}
		})
	}
}
