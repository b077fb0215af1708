// Command gatewayjob is what a gateway does to take over the keys a bulk
// rotation job (`keyrelay rotate`) changed: it follows the job's
// confirmations, and for each key confirmed rotated reads the new value
// through keyrelay's lookup API and stores what the gateway keeps of it
// (here: the key's hash and the confirmed generation, as LiteLLM keeps a
// virtual key's hash). It never prints a value.
//
//	go run ./examples/gatewayjob --nats nats://127.0.0.1:4222 \
//	    --job job-20261204T101500-0a1b2c3d --team team-a \
//	    --lookup http://127.0.0.1:9470 --token-env KEYRELAY_LOOKUP_TOKEN
//
// It reads the job's confirmations from the start (the confirmations
// stream keeps them), so it may be started before, during or after the
// job, and stops once it has taken over every key the job planned.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
)

// stored is what the gateway keeps of one virtual key.
type stored struct {
	hash       string // sha256 of the value, hex
	generation uint64
}

func main() {
	natsURL := flag.String("nats", nats.DefaultURL, "NATS URL")
	jobID := flag.String("job", "", "the job to follow")
	team := flag.String("team", "", "the team whose keys the job rotates (its lookup token reads them)")
	lookupURL := flag.String("lookup", "http://127.0.0.1:9470", "keyrelay's lookup API")
	tokenEnv := flag.String("token-env", "KEYRELAY_LOOKUP_TOKEN", "environment variable holding the team's lookup token")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	if *jobID == "" || *team == "" {
		fmt.Fprintln(os.Stderr, "gatewayjob: --job and --team are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, *natsURL, *jobID, *team, *lookupURL, os.Getenv(*tokenEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "gatewayjob:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, natsURL, jobID, team, lookupURL, token string) error {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := jobs.OpenStore(ctx, js)
	if err != nil {
		return err
	}
	job, _, err := store.Get(ctx, jobID)
	if err != nil {
		return fmt.Errorf("job %s: %w", jobID, err)
	}
	lc := &lookupclient.HTTP{BaseURL: lookupURL, Token: token}
	keys := map[string]stored{}
	var rotated, other int
	errDone := errors.New("done")
	// The job's confirmations: every confirmation of the team since the
	// job was created, kept when it carries the job's id.
	start, err := firstSeqSince(ctx, js, job.Created.Add(-time.Minute))
	if err != nil {
		return err
	}
	err = client.FollowConfirmations(ctx, js, start, events.ConfirmationsPrefix+"."+team+".>", func(_, _ uint64, c *events.Confirmation) error {
		if c.JobID != jobID {
			return nil
		}
		switch c.Status {
		case events.StatusRotated:
			// The confirmation never carries the value: read it.
			s, err := lc.Get(ctx, c.KeyID)
			if err != nil {
				return fmt.Errorf("lookup %s: %w", c.KeyID, err)
			}
			if s.Generation < c.Generation {
				// The lookup answered before this process saw the
				// rotation's commit: ask again shortly.
				time.Sleep(100 * time.Millisecond)
				if s, err = lc.Get(ctx, c.KeyID); err != nil {
					return fmt.Errorf("lookup %s: %w", c.KeyID, err)
				}
			}
			sum := sha256.Sum256([]byte(s.Value))
			keys[c.KeyID] = stored{hash: hex.EncodeToString(sum[:]), generation: s.Generation}
			rotated++
			fmt.Printf("%s rotated: generation %d, version %s, hash %s\n", c.KeyID, s.Generation, s.Version, hex.EncodeToString(sum[:8]))
		default:
			// superseded: a newer event of the key came first (the gateway
			// already has it); failed: keyrelay kept the old value.
			other++
			fmt.Printf("%s %s: %s\n", c.KeyID, c.Status, c.Reason)
		}
		if rotated+other >= job.Total {
			return errDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDone) {
		return err
	}
	fmt.Printf("job %s: %d keys taken over, %d not rotated, of %d planned\n", jobID, rotated, other, job.Total)
	if rotated+other < job.Total {
		return fmt.Errorf("stopped before the job's end (%v)", ctx.Err())
	}
	return nil
}

// firstSeqSince is the first confirmations-stream sequence at or after t.
func firstSeqSince(ctx context.Context, js jetstream.JetStream, t time.Time) (uint64, error) {
	s, err := js.Stream(ctx, client.ConfirmationsStream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t})
	if err != nil {
		return 0, err
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return 0, err
	}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err == nil {
			return md.Sequence.Stream, nil
		}
	}
	return info.State.LastSeq + 1, nil
}
