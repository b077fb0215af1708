package outbox_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/outbox"
	"github.com/keyrelay/keyrelay/worker"
)

// pgAdmin is the PostgreSQL the tests run against (trust auth).
const pgAdmin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func dsnFor(db string) string {
	return "postgres://postgres@127.0.0.1:5432/" + db + "?sslmode=disable"
}

// newDB creates a database with a random name, migrated, dropped at
// cleanup. It returns its name.
func newDB(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "keyrelay_outbox_test_" + hex.EncodeToString(b)
	admin, err := pgx.Connect(ctx, pgAdmin)
	if err != nil {
		t.Skipf("PostgreSQL on 127.0.0.1:5432 not reachable: %v", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := pgx.Connect(ctx, pgAdmin)
		if err != nil {
			t.Logf("drop %s: %v", name, err)
			return
		}
		defer a.Close(context.Background())
		if _, err := a.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	return name
}

// migratedDB is newDB plus the outbox schema.
func migratedDB(t testing.TB) string {
	t.Helper()
	db := newDB(t)
	conn := connect(t, dsnFor(db))
	if _, err := outbox.Migrate(context.Background(), conn, outbox.DefaultSchema); err != nil {
		t.Fatal(err)
	}
	return db
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// startNATS starts a nats-server with keyrelay's topology (2 min
// duplicate window).
func startNATS(t testing.TB) (*testenv.NATS, jetstream.JetStream) {
	t.Helper()
	srv := testenv.StartNATS(t)
	_, js := testenv.ConnectJetStream(t, srv.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{DuplicateWindow: 2 * time.Minute,
		AckWait: 30 * time.Second, MaxDeliver: 5, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	return srv, js
}

// testConfig is a relay configuration with short intervals.
func testConfig(dsn string) outbox.Config {
	return outbox.Config{DSN: dsn, BatchSize: 200, PollInterval: 200 * time.Millisecond,
		RebalanceInterval: 100 * time.Millisecond, StatsInterval: 200 * time.Millisecond,
		InitialBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, PublishTimeout: 2 * time.Second,
		StandbyAfter: time.Second}
}

// startRelay runs a relay until the test ends.
func startRelay(t testing.TB, cfg outbox.Config, js jetstream.JetStream, log *zap.Logger) *outbox.Relay {
	t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	r, err := outbox.NewRelay(cfg, js, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// updated builds a valid key.updated event.
func updated(team, key string, gen uint64, n int) *events.Event {
	return &events.Event{SpecVersion: events.SpecVersion, ID: uuid.NewString(), Type: events.KeyUpdated,
		Time: time.Now().UTC(), TeamID: team, KeyID: key, Generation: gen,
		Data: json.RawMessage(fmt.Sprintf(`{"metadata":{"n":"%d"}}`, n))}
}

// enqueue commits ev in a transaction of its own.
func enqueue(t testing.TB, conn *pgx.Conn, evs ...*events.Event) {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if err := outbox.Enqueue(ctx, tx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// insertRaw inserts a payload without validation (as a gateway in another
// language might) and returns the row's seq.
func insertRaw(t testing.TB, conn *pgx.Conn, payload string) int64 {
	t.Helper()
	var seq int64
	if err := conn.QueryRow(context.Background(), "INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES ($1::jsonb) RETURNING seq", payload).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

type streamed struct {
	seq   uint64
	msgID string
	ev    *events.Event
}

// readStream returns every message of the events stream, in order.
func readStream(t testing.TB, js jetstream.JetStream) []streamed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := info.State.Msgs
	if total == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []streamed
	for uint64(len(out)) < total {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			ev, err := events.Decode(m.Data())
			if err != nil {
				t.Fatalf("stream seq %d: %v", md.Sequence.Stream, err)
			}
			out = append(out, streamed{seq: md.Sequence.Stream, msgID: m.Headers().Get(jetstream.MsgIDHeader), ev: ev})
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d stream messages", len(out), total)
		}
	}
	return out
}

func count(t testing.TB, conn *pgx.Conn, where string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM keyrelay.keyrelay_outbox WHERE "+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// shortDuplicateWindow sets the events stream's duplicate window to one
// second, so a test can show what a copy published after the window does.
func shortDuplicateWindow(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	st, err := js.Stream(ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	scfg := st.CachedInfo().Config
	scfg.Duplicates = time.Second
	if _, err := js.UpdateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
}
