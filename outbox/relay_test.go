package outbox_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/outbox"
)

func TestMigrateIdempotentAndConcurrent(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	var wg sync.WaitGroup
	results := make([][]int, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := connect(t, dsnFor(db))
			results[i], errs[i] = outbox.Migrate(context.Background(), conn, outbox.DefaultSchema)
		}()
	}
	wg.Wait()
	applied := 0
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("migrate %d: %v", i, errs[i])
		}
		applied += len(results[i])
	}
	ms, _ := outbox.Migrations()
	if applied != len(ms) {
		t.Fatalf("concurrent migrates applied %d migrations in total, want %d", applied, len(ms))
	}
	again, err := outbox.Migrate(context.Background(), connect(t, dsnFor(db)), outbox.DefaultSchema)
	if err != nil || len(again) != 0 {
		t.Fatalf("second migrate: applied %v, err %v", again, err)
	}
	// Another schema in the same database is independent.
	other, err := outbox.Migrate(context.Background(), connect(t, dsnFor(db)), "gateway_outbox")
	if err != nil || len(other) != len(ms) {
		t.Fatalf("migrate schema gateway_outbox: applied %v, err %v", other, err)
	}
	if _, err := outbox.Migrate(context.Background(), connect(t, dsnFor(db)), "Bad-Name"); err == nil {
		t.Fatal("migrate accepted an invalid schema name")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		cfg  outbox.Config
		want string
	}{
		"defaults":      {cfg: outbox.Config{DSN: "postgres://x"}},
		"no dsn":        {cfg: outbox.Config{}, want: "dsn"},
		"bad schema":    {cfg: outbox.Config{DSN: "x", Schema: "a.b"}, want: "schema"},
		"huge batch":    {cfg: outbox.Config{DSN: "x", BatchSize: 100000}, want: "batch"},
		"negative poll": {cfg: outbox.Config{DSN: "x", PollInterval: -1}, want: "negative"},
		"backoff order": {cfg: outbox.Config{DSN: "x", InitialBackoff: time.Minute, MaxBackoff: time.Second}, want: "backoff"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// A transaction still in flight holds back every row committed after it
// started; once it commits its row goes first.
func TestInFlightTransactionNotSkipped(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	startRelay(t, testConfig(dsnFor(db)), js, nil)
	ctx := context.Background()
	open := connect(t, dsnFor(db))
	conn := connect(t, dsnFor(db))

	tx, err := open.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := updated("team1", "k1", 0, 0)
	if err := outbox.Enqueue(ctx, tx, first); err != nil {
		t.Fatal(err)
	}
	later := []*events.Event{updated("team1", "k2", 0, 1), updated("team1", "k1", 0, 2), updated("team2", "k3", 0, 3)}
	for _, ev := range later {
		enqueue(t, conn, ev)
	}
	// Several notifications and polls pass; nothing may be published.
	time.Sleep(1200 * time.Millisecond)
	if got := readStream(t, js); len(got) != 0 {
		t.Fatalf("%d events published while an earlier transaction was open", len(got))
	}
	if n := count(t, conn, "state = 'pending'"); n != len(later) {
		t.Fatalf("pending = %d, want %d", n, len(later))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "all rows sent", func() bool { return count(t, conn, "state <> 'sent'") == 0 })
	got := readStream(t, js)
	if len(got) != 4 {
		t.Fatalf("stream holds %d events, want 4", len(got))
	}
	if got[0].ev.ID != first.ID {
		t.Fatalf("first event in the stream is %s, want the long transaction's %s", got[0].ev.ID, first.ID)
	}
	// Across keys the relay pipelines; per key it keeps order.
	pos := map[string]int{}
	for i, s := range got {
		pos[s.ev.ID] = i
	}
	for _, ev := range later {
		if _, ok := pos[ev.ID]; !ok {
			t.Fatalf("event %s missing from the stream", ev.ID)
		}
	}
	if pos[first.ID] > pos[later[1].ID] {
		t.Fatalf("key k1: the later event was published first")
	}
}

// Rows that can never be published are marked failed with a reason and
// do not hold back later rows, of their key or any other. No secret value
// reaches the reason column or the logs.
func TestFailedRowsMarkedWithReason(t *testing.T) {
	t.Parallel()
	const sentinel = "sk-SENTINEL-a8f3c1d9e7b2"
	b64 := base64.StdEncoding.EncodeToString([]byte(sentinel))
	db := migratedDB(t)
	_, js := startNATS(t)
	core, logs := observer.New(zap.DebugLevel)
	conn := connect(t, dsnFor(db))

	now := time.Now().UTC().Format(time.RFC3339Nano)
	env := func(id, typ, key, data string) string {
		return fmt.Sprintf(`{"spec_version":"1.0","id":%q,"type":%q,"time":%q,"team_id":"t1","key_id":%q,"data":%s}`, id, typ, now, key, data)
	}
	plain := fmt.Sprintf(`{"value":{"alg":"plaintext","ct":%q}}`, b64)

	kr, err := events.NewKeyring("k1", map[string][]byte{"k1": make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := events.NewKeyEvent(context.Background(), kr, events.KeyCreated, "t1", "k1", 0, []byte(sentinel), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(context.Background(), conn, sealed); !errors.Is(err, outbox.ErrGenerationRequired) {
		t.Fatalf("Enqueue of a sealed event without generation: %v, want ErrGenerationRequired", err)
	}
	sealedJSON, _ := sealed.Encode()

	okFirst := uuid.NewString()
	okLast := uuid.NewString()
	rows := []struct {
		name, payload, reason string // reason "" = published
	}{
		{"valid plaintext", env(okFirst, "key.created", "k1", plain), ""},
		{"unknown data field", env(uuid.NewString(), "key.created", "k1",
			fmt.Sprintf(`{"value":{"alg":"plaintext","ct":%q},"secret":%q}`, b64, sentinel)), "data"},
		{"bad id", env("bad.id", "key.deleted", "k1", "{}"), "invalid event: id"},
		{"unknown type", env(uuid.NewString(), "key.exploded", "k1", plain), "type"},
		{"too large", env(uuid.NewString(), "key.updated", "k1",
			fmt.Sprintf(`{"metadata":{"big":%q}}`, strings.Repeat("x", events.MaxEventBytes))), "larger than"},
		{"sealed without generation", string(sealedJSON), "generation is empty"},
		{"valid after failures", fmt.Sprintf(`{"spec_version":"1.0","id":%q,"type":"key.deleted","time":%q,"team_id":"t1","key_id":"k1"}`, okLast, now), ""},
	}
	seqs := make([]int64, len(rows))
	for i, r := range rows {
		seqs[i] = insertRaw(t, conn, r.payload)
	}
	startRelay(t, testConfig(dsnFor(db)), js, zap.New(core))
	testenv.Eventually(t, 10*time.Second, "no pending rows", func() bool { return count(t, conn, "state = 'pending'") == 0 })

	for i, r := range rows {
		var state, lastErr string
		if err := conn.QueryRow(context.Background(), "SELECT state, COALESCE(last_error, '') FROM keyrelay.keyrelay_outbox WHERE seq = $1", seqs[i]).Scan(&state, &lastErr); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(lastErr, sentinel) || strings.Contains(lastErr, b64) {
			t.Errorf("%s: last_error holds the secret value: %q", r.name, lastErr)
		}
		switch {
		case r.reason == "" && state != "sent":
			t.Errorf("%s: state %s (%s), want sent", r.name, state, lastErr)
		case r.reason != "" && (state != "failed" || !strings.Contains(lastErr, r.reason)):
			t.Errorf("%s: state %s, reason %q; want failed with a reason containing %q", r.name, state, lastErr, r.reason)
		default:
			t.Logf("%s: %s %s", r.name, state, lastErr)
		}
	}
	got := readStream(t, js)
	if len(got) != 2 || got[0].ev.ID != okFirst || got[1].ev.ID != okLast {
		t.Fatalf("stream holds %d events, want the two valid ones in order", len(got))
	}
	if logs.Len() == 0 {
		t.Fatal("no logs captured")
	}
	for _, e := range logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, sentinel) || strings.Contains(line, b64) {
			t.Fatalf("log line holds the secret value: %s", line)
		}
	}
	st, err := outbox.ReadStatus(context.Background(), conn, outbox.DefaultSchema, 10)
	if err != nil {
		t.Fatal(err)
	}
	if st.Failed != 5 || st.Sent != 2 || st.Pending != 0 || len(st.FailedRows) != 5 {
		t.Fatalf("status: %+v", st)
	}
}

// Generations left empty are set to the row's seq; a generation drawn
// from NextGeneration before sealing is kept, and the sealed value opens.
func TestGenerationFromSequence(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	ctx := context.Background()
	kr, _ := events.NewKeyring("k1", map[string][]byte{"k1": make([]byte, 32)})

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := outbox.NextGeneration(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	created, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "t1", "k1", gen, []byte("sk-value"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Enqueue(ctx, tx, created); err != nil {
		t.Fatal(err)
	}
	upd := updated("t1", "k1", 0, 1)
	if err := outbox.Enqueue(ctx, tx, upd); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	other := updated("t1", "k2", 0, 2)
	enqueue(t, conn, other)
	startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 10*time.Second, "all rows sent", func() bool { return count(t, conn, "state <> 'sent'") == 0 })

	seqOf := map[string]uint64{}
	rows, _ := conn.Query(ctx, "SELECT event_id, seq FROM keyrelay.keyrelay_outbox")
	for rows.Next() {
		var id string
		var s int64
		_ = rows.Scan(&id, &s)
		seqOf[id] = uint64(s)
	}
	rows.Close()
	got := readStream(t, js)
	if len(got) != 3 {
		t.Fatalf("stream holds %d events, want 3", len(got))
	}
	for _, s := range got {
		switch s.ev.ID {
		case created.ID:
			if s.ev.Generation != gen {
				t.Fatalf("sealed event generation %d, want %d", s.ev.Generation, gen)
			}
			kd, _ := s.ev.KeyData()
			v, err := kr.Open(ctx, kd.Value, events.BindingOf(s.ev))
			if err != nil || string(v) != "sk-value" {
				t.Fatalf("open the published value: %v", err)
			}
		default:
			if s.ev.Generation != seqOf[s.ev.ID] {
				t.Fatalf("event %s generation %d, want its row seq %d", s.ev.ID, s.ev.Generation, seqOf[s.ev.ID])
			}
		}
		if s.msgID != s.ev.ID {
			t.Fatalf("Nats-Msg-Id %q, want the event id %q", s.msgID, s.ev.ID)
		}
	}
	if got[0].ev.Generation >= got[1].ev.Generation {
		t.Fatalf("k1 generations not increasing: %d then %d", got[0].ev.Generation, got[1].ev.Generation)
	}
}

func TestNATSDownThenUp(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	srv, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	r := startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 10*time.Second, "relay ready", func() bool { return r.Ready() == nil })

	srv.Stop()
	const n = 50
	for i := 0; i < n; i++ {
		enqueue(t, conn, updated("t1", fmt.Sprintf("k%d", i%5), 0, i))
	}
	testenv.Eventually(t, 10*time.Second, "relay not ready", func() bool { return r.Ready() != nil })
	t.Logf("NATS down: %v", r.Ready())
	time.Sleep(time.Second)
	if p := count(t, conn, "state = 'pending'"); p != n {
		t.Fatalf("pending = %d while NATS is down, want %d", p, n)
	}
	srv.Restart()
	testenv.Eventually(t, 20*time.Second, "all rows sent", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	testenv.Eventually(t, 5*time.Second, "relay ready", func() bool { return r.Ready() == nil })
	got := readStream(t, js)
	ids := map[string]int{}
	for _, s := range got {
		ids[s.ev.ID]++
	}
	if len(got) != n || len(ids) != n {
		t.Fatalf("stream holds %d events (%d distinct), want %d", len(got), len(ids), n)
	}
}

func TestPostgresLostThenRestored(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	px := testenv.NewTCPProxy(t, "127.0.0.1:5432")
	r := startRelay(t, testConfig("postgres://postgres@"+px.Addr+"/"+db+"?sslmode=disable&connect_timeout=2"), js, nil)
	testenv.Eventually(t, 10*time.Second, "relay ready", func() bool { return r.Ready() == nil })
	enqueue(t, conn, updated("t1", "k1", 0, 0))
	testenv.Eventually(t, 10*time.Second, "first row sent", func() bool { return count(t, conn, "state = 'sent'") == 1 })

	px.Down()
	testenv.Eventually(t, 10*time.Second, "relay not ready", func() bool { return r.Ready() != nil })
	t.Logf("PostgreSQL unreachable: %v", r.Ready())
	for i := 0; i < 20; i++ {
		enqueue(t, conn, updated("t1", fmt.Sprintf("k%d", i%3), 0, i))
	}
	time.Sleep(500 * time.Millisecond)
	if r.Ready() == nil {
		t.Fatal("relay ready while PostgreSQL is unreachable")
	}
	px.Up(t)
	testenv.Eventually(t, 15*time.Second, "relay ready again", func() bool { return r.Ready() == nil })
	testenv.Eventually(t, 15*time.Second, "all rows sent", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	if got := readStream(t, js); len(got) != 21 {
		t.Fatalf("stream holds %d events, want 21", len(got))
	}
}

func TestPruneSentRows(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	cfg := testConfig(dsnFor(db))
	cfg.Retention, cfg.PruneInterval = 300*time.Millisecond, 100*time.Millisecond
	for i := 0; i < 10; i++ {
		enqueue(t, conn, updated("t1", "k1", 0, i))
	}
	insertRaw(t, conn, `{"spec_version":"1.0","id":"broken"}`)
	startRelay(t, cfg, js, nil)
	testenv.Eventually(t, 10*time.Second, "rows sent", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	testenv.Eventually(t, 10*time.Second, "sent rows pruned", func() bool { return count(t, conn, "true") == 1 })
	if n := count(t, conn, "state = 'failed'"); n != 1 {
		t.Fatalf("failed rows = %d after pruning, want 1 (failed rows are kept)", n)
	}
	if got := readStream(t, js); len(got) != 10 {
		t.Fatalf("stream holds %d events, want 10", len(got))
	}
}

// LISTEN/NOTIFY wakes the relay long before the poll interval. Not
// parallel: the relay's xmin horizon is cluster-wide, so another test's
// open transaction would hold the row back and blur the measurement.
func TestNotifyWakeup(t *testing.T) {
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	cfg := testConfig(dsnFor(db))
	cfg.PollInterval, cfg.RebalanceInterval = 5*time.Second, 5*time.Second
	r := startRelay(t, cfg, js, nil)
	testenv.Eventually(t, 10*time.Second, "relay holds partitions", func() bool { return r.Partitions() == outbox.Partitions })
	time.Sleep(300 * time.Millisecond) // the relay is waiting now
	var lat []time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		enqueue(t, conn, updated("t1", "k1", 0, i))
		testenv.Eventually(t, 10*time.Second, "row sent", func() bool { return count(t, conn, "state = 'sent'") == i+1 })
		lat = append(lat, time.Since(start))
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("commit → marked sent with LISTEN/NOTIFY: %v (poll interval %v)", lat, cfg.PollInterval)
	sorted := slices.Clone(lat)
	slices.Sort(sorted)
	if med := sorted[len(sorted)/2]; med > cfg.PollInterval/5 {
		t.Fatalf("median wake-up %v, poll interval %v: notification not used", med, cfg.PollInterval)
	}
}

// Two relays split the partitions and together publish every row once.
func TestTwoRelaysSharePartitions(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	a := startRelay(t, testConfig(dsnFor(db)), js, nil)
	b := startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 10*time.Second, "partitions split", func() bool {
		return a.Partitions() == outbox.Partitions/2 && b.Partitions() == outbox.Partitions/2
	})
	const n = 400
	for i := 0; i < n; i++ {
		enqueue(t, conn, updated("t1", fmt.Sprintf("k%d", i%40), 0, i))
	}
	testenv.Eventually(t, 20*time.Second, "rows sent", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	got := readStream(t, js)
	last := map[string]uint64{}
	for _, s := range got {
		if s.ev.Generation <= last[s.ev.KeyID] {
			t.Fatalf("key %s: generation %d after %d", s.ev.KeyID, s.ev.Generation, last[s.ev.KeyID])
		}
		last[s.ev.KeyID] = s.ev.Generation
	}
	if len(got) != n {
		t.Fatalf("stream holds %d events, want %d", len(got), n)
	}
	b2, _ := json.Marshal(map[string]int{"a": a.Partitions(), "b": b.Partitions()})
	t.Logf("partitions %s", b2)
}

// The plain SQL INSERT of the README works as it is.
func TestPlainSQLInsert(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	if _, err := conn.Exec(context.Background(), `INSERT INTO keyrelay.keyrelay_outbox (payload) VALUES (jsonb_build_object(
		'spec_version', '1.0', 'id', gen_random_uuid()::text, 'type', 'key.deleted',
		'time', to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'team_id', 'team-a', 'key_id', 'key-123'))`); err != nil {
		t.Fatal(err)
	}
	startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 10*time.Second, "row sent", func() bool { return count(t, conn, "state = 'sent'") == 1 })
	got := readStream(t, js)
	if len(got) != 1 || got[0].ev.Type != events.KeyDeleted || got[0].ev.Generation == 0 {
		t.Fatalf("stream: %+v", got)
	}
}

// A relay that died between PubAck and marking leaves the row pending; the
// next relay publishes it again and the stream drops the copy.
func TestRepublishWithinDuplicateWindowIsDropped(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	_, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	ev := updated("t1", "k1", 0, 1)
	enqueue(t, conn, ev)
	var seq int64
	if err := conn.QueryRow(context.Background(), "SELECT seq FROM keyrelay.keyrelay_outbox WHERE event_id = $1", ev.ID).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	// What the dead relay published: the same event, generation filled.
	ev.Generation = uint64(seq)
	if _, err := client.NewPublisher(js).Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r, err := outbox.NewRelay(testConfig(dsnFor(db)), js, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 10*time.Second, "row sent", func() bool { return count(t, conn, "state = 'sent'") == 1 })
	if got := readStream(t, js); len(got) != 1 {
		t.Fatalf("stream holds %d copies, want 1", len(got))
	}
	if d := counterValue(t, reg, "keyrelay_outbox_duplicates_total"); d != 1 {
		t.Fatalf("duplicates_total = %v, want 1", d)
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// A relay that loses NATS hands its partitions to the others, which
// publish its keys meanwhile; it takes its share back when NATS returns.
func TestRelayWithoutNATSHandsOverPartitions(t *testing.T) {
	t.Parallel()
	db := migratedDB(t)
	srv, js := startNATS(t)
	conn := connect(t, dsnFor(db))
	px := testenv.NewTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
	ncA, err := nats.Connect("nats://"+px.Addr, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncA.Close)
	jsA, _ := jetstream.New(ncA)
	a := startRelay(t, testConfig(dsnFor(db)), jsA, nil)
	b := startRelay(t, testConfig(dsnFor(db)), js, nil)
	testenv.Eventually(t, 10*time.Second, "partitions split", func() bool {
		return a.Partitions() == outbox.Partitions/2 && b.Partitions() == outbox.Partitions/2
	})
	px.Down()
	testenv.Eventually(t, 10*time.Second, "b holds every partition", func() bool {
		return a.Partitions() == 0 && b.Partitions() == outbox.Partitions
	})
	for i := 0; i < 100; i++ {
		enqueue(t, conn, updated("t1", fmt.Sprintf("k%d", i%50), 0, i))
	}
	testenv.Eventually(t, 10*time.Second, "rows sent while a has no NATS", func() bool { return count(t, conn, "state = 'pending'") == 0 })
	if a.Ready() == nil {
		t.Fatal("relay without NATS reports ready")
	}
	px.Up(t)
	testenv.Eventually(t, 15*time.Second, "partitions split again", func() bool {
		return a.Partitions() == outbox.Partitions/2 && b.Partitions() == outbox.Partitions/2
	})
	if got := readStream(t, js); len(got) != 100 {
		t.Fatalf("stream holds %d events, want 100", len(got))
	}
}
