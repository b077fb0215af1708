// Command outbox benchmarks the PostgreSQL outbox relay: rows committed to
// keyrelay_outbox are drained by `keyrelay outbox relay`'s Relay (in this
// process) to JetStream, timed from the relay's start (every row already
// committed) to the last PubAck and to the last row marked sent. The
// baseline, measured in the same run on the same nats-server, is a bare
// loop publishing the same encoded rows (same subjects, sizes and
// Nats-Msg-Id) to a stream of the same configuration with async PubAcks
// and no PostgreSQL. It prints rows/s for both and their ratio.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/bench/benchkit"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/outbox"
	"github.com/keyrelay/keyrelay/worker"
)

func main() {
	n := flag.Int("rows", 20000, "outbox rows per run")
	keys := flag.Int("keys", 1000, "distinct keys")
	runs := flag.Int("runs", 3, "runs of each kind (the median is reported)")
	batch := flag.Int("batch", outbox.DefaultBatchSize, "relay batch size")
	relays := flag.Int("relays", 1, "relays draining the outbox at once")
	serverBin := flag.String("nats-server", "bin/nats-server", "nats-server binary")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process to this file")
	pgAdmin := flag.String("pg", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "PostgreSQL admin DSN (a scratch database is created and dropped)")
	flag.Parse()
	stopProfile := benchkit.StartCPUProfile(*cpuprofile)
	defer stopProfile()
	if err := run(*n, *keys, *runs, *batch, *relays, *serverBin, *pgAdmin); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stopProfile()
		os.Exit(1)
	}
}

func run(n, keys, runs, batch, relays int, serverBin, pgAdmin string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keyrelay-bench-outbox")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	js, stopNATS, err := benchkit.StartNATS(serverBin, dir)
	if err != nil {
		return err
	}
	defer stopNATS()
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{DuplicateWindow: 2 * time.Minute, AckWait: time.Minute, MaxDeliver: 5, MaxAckPending: 1000}); err != nil {
		return err
	}
	dsn, drop, err := scratchDB(ctx, pgAdmin)
	if err != nil {
		return err
	}
	defer drop()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := outbox.Migrate(ctx, conn, outbox.DefaultSchema); err != nil {
		return err
	}
	var pgVersion string
	_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion)
	fmt.Printf("keyrelay outbox benchmark: nats-server %s (separate process, file storage), PostgreSQL %s, %d rows over %d keys, batch %d, %d relay(s), %d CPUs\n",
		js.Conn().ConnectedServerVersion(), pgVersion, n, keys, batch, relays, runtime.NumCPU())

	var base, acked, marked, ratios []float64
	for r := 0; r < runs; r++ {
		payloads := makePayloads(n, keys, r)
		b, err := baseline(ctx, js, payloads, r)
		if err != nil {
			return err
		}
		a, m, err := relayRun(ctx, conn, js, dsn, payloads, batch, relays)
		if err != nil {
			return err
		}
		fmt.Printf("  run %d: baseline %8.0f rows/s   relay %8.0f rows/s to last PubAck (%8.0f rows/s to last row marked sent)   ratio %.2f\n", r+1, b, a, m, a/b)
		base, acked, marked, ratios = append(base, b), append(acked, a), append(marked, m), append(ratios, a/b)
	}
	fmt.Printf("throughput (median of %d runs): bare JetStream publish loop %.0f rows/s, outbox relay %.0f rows/s commit→PubAck (%.0f rows/s →marked sent), median ratio %.2f\n",
		runs, benchkit.Median(base), benchkit.Median(acked), benchkit.Median(marked), benchkit.Median(ratios))
	return nil
}

// makePayloads builds key.updated events (generation empty, as most
// gateways leave it), encoded.
func makePayloads(n, keys, run int) []string {
	out := make([]string, n)
	now := time.Now().UTC()
	for i := range out {
		ev := &events.Event{SpecVersion: events.SpecVersion, ID: uuid.NewString(), Type: events.KeyUpdated, Time: now,
			TeamID: fmt.Sprintf("team-%d", i%7), KeyID: fmt.Sprintf("key-%d-%d", run, i%keys),
			Data: json.RawMessage(fmt.Sprintf(`{"metadata":{"owner":"user-%d","budget":"%d"}}`, i%97, i))}
		b, err := ev.Encode()
		if err != nil {
			panic(err)
		}
		out[i] = string(b)
	}
	return out
}

// baseline publishes the rows as they are (plus the generation the relay
// would set) to a stream configured like KEYRELAY_EVENTS, 1024 PubAcks in
// flight.
func baseline(ctx context.Context, js jetstream.JetStream, payloads []string, run int) (float64, error) {
	name := fmt.Sprintf("RAW%d", run)
	prefix := fmt.Sprintf("raw%d", run)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, MaxMsgSize: events.MaxEventBytes + 4096}); err != nil {
		return 0, err
	}
	msgs := make([]*nats.Msg, len(payloads))
	for i, p := range payloads {
		ev, err := events.Decode([]byte(p))
		if err != nil {
			return 0, err
		}
		ev.Generation = uint64(i + 1)
		b, err := ev.Encode()
		if err != nil {
			return 0, err
		}
		m := &nats.Msg{Subject: prefix + strings.TrimPrefix(ev.Subject(), "keyrelay"), Data: b, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, ev.ID)
		msgs[i] = m
	}
	start := time.Now()
	if err := benchkit.PublishAsync(js, msgs); err != nil {
		return 0, err
	}
	return float64(len(msgs)) / time.Since(start).Seconds(), nil
}

// relayRun commits the rows (100 per transaction, untimed), then starts
// the relay(s) and times the drain.
func relayRun(ctx context.Context, conn *pgx.Conn, js jetstream.JetStream, dsn string, payloads []string, batch, relays int) (toAck, toMarked float64, err error) {
	for i := 0; i < len(payloads); i += 100 {
		b := &pgx.Batch{}
		for _, p := range payloads[i:min(i+100, len(payloads))] {
			b.Queue("INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES ($1::jsonb)", p)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			return 0, 0, err
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return 0, 0, err
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, 0, err
		}
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE keyrelay.keyrelay_outbox"); err != nil {
		return 0, 0, err
	}
	st, err := js.Stream(ctx, worker.EventsStream)
	if err != nil {
		return 0, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	want := info.State.Msgs + uint64(len(payloads))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, relays)
	cfg := outbox.Config{DSN: dsn, BatchSize: batch, PollInterval: 50 * time.Millisecond, StatsInterval: time.Minute, PruneInterval: time.Hour}
	start := time.Now()
	for i := 0; i < relays; i++ {
		r, err := outbox.NewRelay(cfg, js, nil, nil)
		if err != nil {
			return 0, 0, err
		}
		go func() { _ = r.Run(rctx); done <- struct{}{} }()
	}
	defer func() {
		cancel()
		for i := 0; i < relays; i++ {
			<-done
		}
	}()
	var ackedAt time.Duration
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if ackedAt == 0 {
			info, err := st.Info(ctx)
			if err != nil {
				return 0, 0, err
			}
			if info.State.Msgs >= want {
				ackedAt = time.Since(start)
			}
		}
		if ackedAt != 0 {
			var pending int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM keyrelay.keyrelay_outbox WHERE state = 'pending'").Scan(&pending); err != nil {
				return 0, 0, err
			}
			if pending == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("relay did not drain %d rows in 5 minutes", len(payloads))
		}
		time.Sleep(2 * time.Millisecond)
	}
	marked := time.Since(start)
	n := float64(len(payloads))
	return n / ackedAt.Seconds(), n / marked.Seconds(), nil
}

func scratchDB(ctx context.Context, admin string) (string, func(), error) {
	a, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	defer a.Close(ctx)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "keyrelay_bench_outbox_" + hex.EncodeToString(b)
	if _, err := a.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, err
	}
	cfg, err := pgx.ParseConfig(admin)
	if err != nil {
		return "", nil, err
	}
	cfg.Database = name
	dsn := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if a, err := pgx.Connect(ctx, admin); err == nil {
			_, _ = a.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = a.Close(ctx)
		}
	}
	return dsn, drop, nil
}
