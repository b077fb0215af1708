package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/jobs"
	"github.com/keyrelay/keyrelay/outbox"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// statusEnv is a `keyrelay serve` running in process against natsURL,
// with the configuration file the commands read.
type statusEnv struct {
	cfg string
	js  jetstream.JetStream
	kr  *events.Keyring
}

func startServeFor(t *testing.T, ctx context.Context, natsURL string, replicas int) *statusEnv {
	t.Helper()
	cfg, _, kr := commandConfig(t, natsURL, fmt.Sprintf("  streams:\n    replicas: %d\n  http:\n    addr: 127.0.0.1:0\n  lookup:\n    addr: off\n", replicas))
	c, _, err := settings.Load(cfg, os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ready, done := make(chan struct{}, 1), make(chan error, 1)
	go func() {
		done <- app.Serve(runCtx, c, zap.NewNop(), app.ServeOptions{OnReady: func(string) { ready <- struct{}{} }})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-ctx.Done():
		t.Fatal("serve not ready")
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return &statusEnv{cfg: cfg, js: js, kr: kr}
}

func (e *statusEnv) status(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	cmd := statusCmd(&globals{configPath: e.cfg})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("status %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

func (e *statusEnv) statusJSON(t *testing.T, ctx context.Context, args ...string) *statusReport {
	t.Helper()
	out := e.status(t, ctx, append([]string{"--json"}, args...)...)
	var r statusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	return &r
}

// TestStatusCommand runs `keyrelay status` next to a serve on a real
// nats-server: the live worker with its version and lanes, every stream
// with its leader, the three consumers, the DLQ's depth after an invalid
// event, a running job's progress, the outbox's pending rows (when
// PostgreSQL is at hand), in JSON and as text.
func TestStatusCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := testenv.StartNATS(t)
	e := startServeFor(t, ctx, srv.URL, 1)

	ev, err := events.NewKeyEvent(ctx, e.kr, events.KeyCreated, "team-a", "key-1", 1, []byte("sk-status"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewPublisher(e.js).Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, "keyrelay.events.team-a.key-2.key.created", []byte(`{"not":"an event"}`)); err != nil {
		t.Fatal(err)
	}
	store, err := jobs.EnsureStore(ctx, e.js, 1)
	if err != nil {
		t.Fatal(err)
	}
	job := &jobs.Job{ID: jobs.NewID(time.Now()), Total: 4, Cursor: 1, State: jobs.StateRunning, Created: time.Now().UTC(), Updated: time.Now().UTC(), Holder: "rotator-1"}
	if err := store.Create(ctx, job, []jobs.Target{{Team: "team-a", Key: "key-1", Generation: 2, EventID: "e-job-1"}}); err != nil {
		t.Fatal(err)
	}
	done := &jobs.Job{ID: jobs.NewID(time.Now().Add(-time.Hour)), Total: 1, Cursor: 1, State: jobs.StatePublished, Created: time.Now().Add(-time.Hour).UTC()}
	if err := store.Create(ctx, done, nil); err != nil {
		t.Fatal(err)
	}

	var r *statusReport
	for deadline := time.Now().Add(30 * time.Second); ; {
		r = e.statusJSON(t, ctx)
		if r.DLQDepth == 1 && len(r.Workers) == 1 && r.Workers[0].Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the dead letter and the worker: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.NATS.Server == "" || r.NATS.Version == "" || r.NATS.JetStream == nil || r.NATS.JetStream.Streams == 0 {
		t.Errorf("nats: %+v", r.NATS)
	}
	w := r.Workers[0]
	if w.Version == "" || w.Host == "" || w.PID == 0 || !w.Ready || w.Started.IsZero() || w.SeenSeconds > app.PresenceTTL.Seconds() ||
		!slices.Equal(w.Lanes, []string{"interactive", "bulk", "retire"}) || w.Concurrency == 0 {
		t.Errorf("worker: %+v", w)
	}
	names := map[string]streamStatus{}
	for _, s := range r.Streams {
		names[s.Name] = s
	}
	for _, want := range []string{worker.EventsStream, worker.BulkStream, worker.ConfirmationsStream, worker.DLQStream, worker.RetireStream,
		"KV_" + worker.LedgerBucket, "KV_" + app.WorkersBucket, "KV_" + jobs.Bucket} {
		s, ok := names[want]
		if !ok {
			t.Errorf("stream %s not shown", want)
		} else if s.Leader == "" {
			t.Errorf("stream %s without a leader: %+v", want, s)
		}
	}
	if names[worker.EventsStream].Messages != 2 {
		t.Errorf("events stream: %+v", names[worker.EventsStream])
	}
	var lanes []string
	for _, c := range r.Consumers {
		lanes = append(lanes, c.Lane+"/"+c.Name)
		if c.Stream != worker.RetireStream && c.Stream != worker.ParkedStream && c.OldestUnackedSeconds == nil {
			t.Errorf("consumer %s: no oldest unacked age", c.Name)
		}
	}
	if !slices.Equal(lanes, []string{"interactive/keyrelay-workers", "bulk/keyrelay-bulk", "retire/keyrelay-retire",
		"interactive-parked/keyrelay-parked", "bulk-parked/keyrelay-parked-bulk"}) {
		t.Errorf("consumers: %v", lanes)
	}
	if len(r.Jobs) != 1 || r.Jobs[0].ID != job.ID || r.Jobs[0].Published != 1 || r.Jobs[0].Total != 4 || r.Jobs[0].Holder != "rotator-1" {
		t.Errorf("jobs: %+v", r.Jobs)
	}
	if !slices.ContainsFunc(r.Problems, func(p string) bool { return strings.Contains(p, "DLQ holds 1 dead letter (keyrelay dlq list)") }) {
		t.Errorf("problems: %q", r.Problems)
	}
	if r.Outbox != nil || len(r.Errors) != 0 {
		t.Errorf("outbox %+v, errors %v", r.Outbox, r.Errors)
	}

	// A claims-mode worker holds a claims request; no lease was taken.
	if l := r.Lease; l == nil || l.Taken || len(l.Requests) != 1 {
		t.Errorf("writer lease: %+v", l)
	}

	text := e.status(t, ctx)
	for _, want := range []string{"NATS: connected to " + r.NATS.Server, "KEYRELAY_EVENTS", "keyrelay-workers      interactive ", "keyrelay-parked-bulk  bulk-parked",
		"keyrelay-retire", "DLQ: 1 dead letter\n", "WORKERS: 1 live", w.ID, w.Version, "interactive 32, bulk 32, retire",
		job.ID, "1/4 (25%)", "rotator-1", "PROBLEMS: 1", "OUTBOX: not read (--outbox-dsn",
		"WRITER LEASE: never taken", "claims requests (the holder claims keys while any stands): "} {
		if !strings.Contains(text, want) {
			t.Errorf("the text lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, done.ID) {
		t.Errorf("a published job is listed as running:\n%s", text)
	}
	t.Logf("keyrelay status:\n%s", text)

	// A lease whose holder stopped renewing it long ago is a problem.
	okv, err := e.js.KeyValue(ctx, worker.OwnershipBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := okv.Put(ctx, worker.WriterLeaseKey, []byte(`{"holder":"w-gone","nonce":1,"ttl_ms":1}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	r = e.statusJSON(t, ctx)
	if l := r.Lease; l == nil || !l.Taken || l.Holder != "w-gone" || !slices.ContainsFunc(r.Problems, func(p string) bool {
		return strings.Contains(p, "the writer lease of w-gone was last renewed")
	}) {
		t.Errorf("a stale lease: %+v, problems %q", r.Lease, r.Problems)
	}
	if text := e.status(t, ctx); !strings.Contains(text, "WRITER LEASE: held by w-gone, renewed") {
		t.Errorf("the text lacks the lease's holder:\n%s", text)
	}
	if _, err := okv.Put(ctx, worker.WriterLeaseKey, []byte(`{"holder":"","nonce":1,"ttl_ms":1}`)); err != nil {
		t.Fatal(err)
	}

	// An unreachable outbox is an error in its place; the rest is shown,
	// and the command exits 1.
	out, err := runCommand(ctx, statusCmd(&globals{configPath: e.cfg}), "--json", "--outbox-dsn", "postgres://keyrelay@127.0.0.1:1/none?connect_timeout=2")
	wantPartialFailure(t, "status, unreachable outbox", err, out)
	r = &statusReport{}
	if err := json.Unmarshal([]byte(out), r); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if r.Errors["outbox"] == "" || len(r.Workers) != 1 || r.Outbox != nil {
		t.Errorf("unreachable outbox: errors %v, outbox %+v", r.Errors, r.Outbox)
	}
	if dsn := outboxDB(t, ctx); dsn != "" {
		pg, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close(context.Background())
		if _, err := outbox.Migrate(ctx, pg, outbox.DefaultSchema); err != nil {
			t.Fatal(err)
		}
		oe, err := events.NewKeyEvent(ctx, nil, events.KeyDeleted, "team-a", "key-9", 7, nil, events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Enqueue(ctx, pg, oe); err != nil {
			t.Fatal(err)
		}
		r = e.statusJSON(t, ctx, "--outbox-dsn", dsn)
		if r.Outbox == nil || r.Outbox.Pending != 1 || r.Outbox.OldestPendingSeconds <= 0 || r.Errors["outbox"] != "" {
			t.Errorf("outbox: %+v, errors %v", r.Outbox, r.Errors)
		}
	}
}

// outboxDB creates a database on the local PostgreSQL for the test and
// returns its DSN ("" when no PostgreSQL answers on 127.0.0.1:5432).
// migratedOutbox is outboxDB with the outbox migrated in it and a
// connection to it (closed when the test ends); the test is skipped
// without PostgreSQL.
func migratedOutbox(t *testing.T, ctx context.Context) (string, *pgx.Conn) {
	t.Helper()
	dsn := outboxDB(t, ctx)
	if dsn == "" {
		t.Skip("no PostgreSQL")
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := outbox.Migrate(ctx, conn, outbox.DefaultSchema); err != nil {
		t.Fatal(err)
	}
	return dsn, conn
}

func outboxDB(t *testing.T, ctx context.Context) string {
	t.Helper()
	const admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable&connect_timeout=2"
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Logf("no PostgreSQL, the outbox part is not run: %v", err)
		return ""
	}
	defer conn.Close(context.Background())
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "keyrelay_status_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, admin); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(ctx)
		}
	})
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}

// TestStatusOnACluster: on a 3-node cluster, every keyrelay stream shows
// its leader and its two replicas, and each node the streams it holds; a
// stopped node shows as an offline replica among the problems.
func TestStatusOnACluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := testenv.StartCluster(t, 3)
	e := startServeFor(t, ctx, cl.SeedURL(), 3)
	r := e.statusJSON(t, ctx)
	if len(r.NATS.Nodes) != 3 || len(r.NATS.Known) < 3 {
		t.Fatalf("nodes %+v, known servers %v", r.NATS.Nodes, r.NATS.Known)
	}
	for _, s := range r.Streams {
		if s.Leader == "" || len(s.Replicas) != 2 {
			t.Errorf("stream %s: leader %q, replicas %+v", s.Name, s.Leader, s.Replicas)
		}
	}
	for _, n := range r.NATS.Nodes {
		if n.Holds != len(r.Streams) || n.Offline {
			t.Errorf("node %+v holds %d streams", n, len(r.Streams))
		}
	}
	// Stop a node that leads no stream the status reads through: the
	// others report it offline (after the leader notices).
	ev, err := events.NewKeyEvent(ctx, e.kr, events.KeyCreated, "team-a", "key-1", 1, []byte("sk-cluster"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewPublisher(e.js).Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	leader, err := cl.LeaderOf(ctx, worker.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	victim := (leader + 1) % 3
	cl.Stop(victim)
	for deadline := time.Now().Add(time.Minute); ; {
		r = e.statusJSON(t, ctx)
		if slices.ContainsFunc(r.Problems, func(p string) bool {
			return strings.HasPrefix(p, "node "+cl.Name(victim)+" is offline: it holds replicas of ")
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped node %s is not among the problems: %q", cl.Name(victim), r.Problems)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("keyrelay status with %s stopped:\n%s", cl.Name(victim), e.status(t, ctx))
}

// TestStatusLaneStreamFull: with no worker running, the events stream
// fills to streams.events_max_bytes and refuses the next event; `status`
// shows the stream's cap and says that publishes are refused.
func TestStatusLaneStreamFull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := testenv.StartNATS(t)
	cfg, _, kr := commandConfig(t, srv.URL, "  streams:\n    events_max_bytes: 65536\n")
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := worker.EnsureTopology(ctx, js, worker.TopologyConfig{Replicas: 1, DuplicateWindow: time.Minute, EventsMaxBytes: 64 << 10,
		AckWait: 5 * time.Second, MaxAckPending: 1024}); err != nil {
		t.Fatal(err)
	}
	pub := client.NewPublisher(js)
	for i := 0; ; i++ {
		ev, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "team-a", fmt.Sprintf("key-%d", i), 1, []byte("sk-full"), events.KeyData{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err = pub.Publish(ctx, ev); errors.Is(err, client.ErrStreamFull) {
			break
		} else if err != nil || i > 5000 {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	e := &statusEnv{cfg: cfg, js: js, kr: kr}
	r := e.statusJSON(t, ctx)
	i := slices.IndexFunc(r.Streams, func(s streamStatus) bool { return s.Name == worker.EventsStream })
	if i < 0 || r.Streams[i].MaxBytes != 64<<10 {
		t.Fatalf("streams: %+v", r.Streams)
	}
	if !slices.ContainsFunc(r.Problems, func(p string) bool {
		return strings.Contains(p, "stream KEYRELAY_EVENTS is full") && strings.Contains(p, "publishes to it are refused")
	}) {
		t.Errorf("problems: %q", r.Problems)
	}
	if slices.ContainsFunc(r.Problems, func(p string) bool { return strings.Contains(p, worker.BulkStream) }) {
		t.Errorf("the empty bulk lane is a problem: %q", r.Problems)
	}
}
