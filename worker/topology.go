package worker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
)

// Names of the JetStream resources keyrelay owns.
const (
	EventsStream = "KEYRELAY_EVENTS"
	// BulkStream is the bulk lane: bulk jobs' key events, retained like
	// the events stream and consumed by their own consumer.
	BulkStream          = "KEYRELAY_BULK"
	ConfirmationsStream = "KEYRELAY_CONFIRMATIONS"
	DLQStream           = "KEYRELAY_DLQ"
	LedgerBucket        = "KEYRELAY_LEDGER"
	TeamsBucket         = "KEYRELAY_TEAMS"
	// RecoveryBucket holds recovery's durable state: migration records and
	// restore checkpoints (package recovery).
	RecoveryBucket = "KEYRELAY_RECOVERY"
	// RecoveryObjects holds restore plans (drift rows, never values), for
	// `keyrelay restore --resume`; they expire after RecoveryPlanMaxAge.
	RecoveryObjects    = "KEYRELAY_RECOVERY_PLANS"
	RecoveryPlanMaxAge = 30 * 24 * time.Hour
	// RetireStream holds scheduled retirements of previous versions (one
	// message per rotation with a grace period, or per rotation when the
	// team retires previous versions), consumed when due and then removed
	// (work queue).
	RetireStream = "KEYRELAY_RETIRE"
	// RetireConsumerName is its durable consumer.
	RetireConsumerName = "keyrelay-retire"
	// ParkedStream holds key events that wait long (ParkedPrefix):
	// message schedules naming their lane message, consumed when due and
	// then removed (work queue).
	ParkedStream = "KEYRELAY_PARKED"
	// ParkedConsumerName and ParkedBulkConsumerName are its durable
	// consumers, one per lane (ParkedConsumerOf).
	ParkedConsumerName     = "keyrelay-parked"
	ParkedBulkConsumerName = "keyrelay-parked-bulk"
	// ConsumerName is the durable pull consumer every worker shares.
	ConsumerName = "keyrelay-workers"
	// BulkConsumerName is the bulk lane's durable pull consumer.
	BulkConsumerName = "keyrelay-bulk"
)

// StreamOf names the stream of a lane.
func StreamOf(l events.Lane) string {
	if l == events.LaneBulk {
		return BulkStream
	}
	return EventsStream
}

// ConsumerOf names the durable consumer of a lane.
func ConsumerOf(l events.Lane) string {
	if l == events.LaneBulk {
		return BulkConsumerName
	}
	return ConsumerName
}

// ParkedConsumerOf names the durable consumer of lane l's parked events.
func ParkedConsumerOf(l events.Lane) string {
	if l == events.LaneBulk {
		return ParkedBulkConsumerName
	}
	return ParkedConsumerName
}

// TopologyConfig sizes the streams, buckets and consumer.
type TopologyConfig struct {
	// Replicas for every stream and bucket (1 on one server, 3 in a cluster).
	Replicas int
	// DuplicateWindow of the events and confirmations streams.
	DuplicateWindow time.Duration
	// EventsMaxAge and EventsMaxBytes bound event retention in each lane
	// stream (0 / -1: none). EventsMaxBytes is a hard cap: a full lane
	// stream refuses publishes (DiscardNew), and the workers trim its
	// handled events from the head above TrimHighWater of it (trimLanes).
	// EventsMaxAge removes events handled or not: keep it longer than the
	// workers' RetryFor.
	EventsMaxAge   time.Duration
	EventsMaxBytes int64
	// ParkedMaxBytes caps the parked stream (KEYRELAY_PARKED), whose
	// messages carry copies of lane events that wait out a long outage and
	// outlive their lane messages (the trimmer passes parked events). It
	// is stored in the stream's metadata and kept by the workers: once the
	// stream holds that much, an event is not parked but waits in its lane
	// consumer, as it did before parking existed
	// (Parked{outcome="fallback"}), and holds the lane's trimming back;
	// nothing is lost. Processes parking at once may pass it by their
	// parks in flight. 0: twice EventsMaxBytes (none when that is none);
	// -1: none.
	ParkedMaxBytes int64
	// ConfirmationsMaxAge bounds confirmation retention.
	ConfirmationsMaxAge time.Duration
	// ConfirmationsMaxBytes and ConfirmationsMaxMsgs bound the
	// confirmations stream (0 or -1: no limit); the oldest are discarded.
	ConfirmationsMaxBytes, ConfirmationsMaxMsgs int64
	// DLQMaxAge bounds dead-letter retention (0: keep).
	DLQMaxAge time.Duration
	// DLQMaxBytes and DLQMaxMsgs bound the DLQ (0 or -1: no limit); the
	// oldest dead letters are discarded.
	DLQMaxBytes, DLQMaxMsgs int64
	// AckWait and MaxAckPending configure the shared consumer. Its
	// server-side MaxDeliver is unlimited: the server never stops
	// redelivering an event on its own (that would drop it silently); the
	// workers dead-letter an event when its retry budget (worker.retry_for)
	// or MaxDeliver runs out. MaxDeliver is kept here for compatibility.
	AckWait       time.Duration
	MaxDeliver    int
	MaxAckPending int
	// RetireMaxAckPending bounds the retirements the retirement consumer
	// has delivered and not yet acked, across every process (0:
	// DefaultRetireMaxAckPending). Only retirements due within a few
	// seconds count against it: later ones wait as message schedules.
	RetireMaxAckPending int
}

// parkedMaxBytes is the parked stream's MaxBytes (ParkedMaxBytes).
// It holds at least one largest parked message.
func (c TopologyConfig) parkedMaxBytes() int64 {
	switch {
	case c.ParkedMaxBytes > 0:
		return max(c.ParkedMaxBytes, ParkedMinBytes)
	case c.ParkedMaxBytes == 0 && c.EventsMaxBytes > 0:
		return max(2*c.EventsMaxBytes, ParkedMinBytes)
	}
	return -1
}

// ParkedMinBytes is the smallest cap of the parked stream: one largest
// parked message (a stream refuses a MaxMsgSize above its MaxBytes).
const ParkedMinBytes = parkedMaxMsgBytes

// DefaultRetireMaxAckPending is the retirement consumer's MaxAckPending
// unless TopologyConfig.RetireMaxAckPending says otherwise.
const DefaultRetireMaxAckPending = 10000

// EnsureTopology creates or updates every stream, bucket and the consumer.
// It is idempotent and safe to run from several processes at once.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, c TopologyConfig) error {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	dup := c.DuplicateWindow
	if c.EventsMaxAge > 0 && dup > c.EventsMaxAge {
		dup = c.EventsMaxAge
	}
	maxBytes := c.EventsMaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	// The two lanes' streams are retained alike, for replay. The bulk lane
	// has its own stream so the interactive consumer needs no filter to
	// skip bulk events (a filter on a stream with many subjects costs the
	// server a subject-tree walk per delivery, see below).
	//
	// MaxBytes is a hard cap (DiscardNew): a full lane stream refuses new
	// publishes rather than drop its oldest events, handled or not (there
	// is no "keep unacknowledged" policy). The workers trim handled events
	// from its head to keep room (trimLanes). An existing stream created
	// with DiscardOld is updated in place
	// (TestEnsureTopologyMakesLaneStreamsDiscardNew).
	for _, l := range []struct {
		name, desc string
		subjects   []string
	}{
		{EventsStream, "keyrelay key and team-settings events, retained for replay", []string{events.EventsPrefix + ".>", events.SettingsPrefix + ".>"}},
		{BulkStream, "keyrelay bulk lane: key events of bulk jobs (keyrelay rotate), retained for replay", []string{events.BulkPrefix + ".>"}},
	} {
		if err := ensureStream(ctx, js, jetstream.StreamConfig{
			Name:        l.name,
			Description: l.desc,
			Subjects:    l.subjects,
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  dup,
			MaxAge:      c.EventsMaxAge,
			MaxBytes:    maxBytes,
			Discard:     jetstream.DiscardNew,
			MaxMsgSize:  events.MaxEventBytes + 4096,
			AllowDirect: true,
		}); err != nil {
			return fmt.Errorf("ensure stream %s: %w", l.name, err)
		}
	}
	// Retirements due later than a few seconds are message schedules
	// (nats-server 2.12+, ADR-51), so they wait in the stream and not in
	// the consumer's pending set. Schedules need roll-ups (the server
	// rolls each schedule's subject up). A server that does not know
	// schedules would store them as plain messages that never fire: it is
	// refused here rather than found out when a grace period never ends.
	if err := ensureScheduleStream(ctx, js, jetstream.StreamConfig{
		Name:        RetireStream,
		Description: "keyrelay retirements of previous versions after their grace period (no values)",
		Subjects:    []string{RetirePrefix + ".>"},
		Replicas:    c.Replicas,
		Duplicates:  dup,
		MaxMsgSize:  16384,
	}); err != nil {
		return err
	}
	// Key events that wait long are parked as message schedules
	// (ParkedPrefix), out of their lane consumer's pending set. Created
	// on an existing deployment by the first process of this version to
	// start; earlier versions neither park nor read it.
	if err := ensureScheduleStream(ctx, js, jetstream.StreamConfig{
		Name:        ParkedStream,
		Description: "keyrelay key events waiting out a long redelivery delay: schedules naming their lane message, with a copy of it (values proven sealed) or none (a pin: its lane message is kept)",
		Subjects:    []string{ParkedPrefix + ".>"},
		Replicas:    c.Replicas,
		MaxMsgSize:  parkedMaxMsgBytes,
		// The cap is the workers' to keep (parkedRoom): a stream
		// with message schedules cannot refuse publishes when full
		// (DiscardNew), and dropping its oldest (DiscardOld) would
		// lose events whose lane messages are gone.
		Metadata:    map[string]string{parkedMaxBytesMetadata: strconv.FormatInt(c.parkedMaxBytes(), 10)},
		AllowDirect: true,
	}); err != nil {
		return err
	}
	cdup := c.DuplicateWindow
	if c.ConfirmationsMaxAge > 0 && cdup > c.ConfirmationsMaxAge {
		cdup = c.ConfirmationsMaxAge
	}
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        ConfirmationsStream,
		Description: "keyrelay confirmations: at most one per event id (one subject per event, published only if the subject is empty)",
		Subjects:    []string{events.ConfirmationsPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  cdup,
		MaxAge:      c.ConfirmationsMaxAge,
		// One message per subject, and every confirmation is published
		// with Nats-Expected-Last-Subject-Sequence: 0, so the server itself
		// refuses a second confirmation for an event id, whatever the
		// timing. The stream is bounded in bytes and messages; when full it
		// drops its oldest confirmations rather than refusing new ones (a
		// full stream must never stop the pipeline).
		MaxMsgsPerSubject: 1,
		MaxBytes:          limit(c.ConfirmationsMaxBytes),
		MaxMsgs:           limit(c.ConfirmationsMaxMsgs),
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
	}); err != nil {
		return fmt.Errorf("ensure stream %s: %w", ConfirmationsStream, err)
	}
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        DLQStream,
		Description: "keyrelay dead letters: the original (sealed) event, attempts and a sanitized reason",
		Subjects:    []string{events.DLQPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  2 * time.Minute,
		MaxAge:      c.DLQMaxAge,
		// Bounded: an entry is at most one valid sealed event, or a small
		// redacted summary of an invalid message; the oldest go first.
		MaxBytes:    limit(c.DLQMaxBytes),
		MaxMsgs:     limit(c.DLQMaxMsgs),
		MaxMsgSize:  events.MaxEventBytes + 16384,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	}); err != nil {
		return fmt.Errorf("ensure stream %s: %w", DLQStream, err)
	}
	for _, b := range []jetstream.KeyValueConfig{
		{Bucket: LedgerBucket, Description: "keyrelay ledger: per key, the highest applied generation, claim, provider version and sealed value", History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: TeamsBucket, Description: "keyrelay team settings: per team, the applied settings and the events-stream sequence applied", History: 5, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: RecoveryBucket, Description: "keyrelay recovery: team migrations and restore checkpoints", History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		// Always created, so a recovery command can register its claims
		// request whether or not a worker runs exclusive.
		{Bucket: OwnershipBucket, Description: "keyrelay ownership: the writer lease (worker.ownership exclusive) and the recovery commands' claims requests", History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas},
	} {
		if err := EnsureCall(ctx, func(ctx context.Context) error { _, err := js.CreateOrUpdateKeyValue(ctx, b); return err }); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", b.Bucket, err)
		}
	}
	// The intents of claimless writes (exclusive mode), read by the next
	// lease holder after a crash; one message holds many (group commit).
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        IntentsStream,
		Description: "keyrelay write intents of the writer-lease holder (worker.ownership exclusive), for its successor",
		Subjects:    []string{IntentsSubject},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxAge:      IntentsMaxAge,
		Discard:     jetstream.DiscardOld,
	}); err != nil {
		return fmt.Errorf("ensure stream %s: %w", IntentsStream, err)
	}
	if err := EnsureCall(ctx, func(ctx context.Context) error {
		_, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: RecoveryObjects,
			Description: "keyrelay restore plans (drift rows, no values) for restore --resume", TTL: RecoveryPlanMaxAge,
			Storage: jetstream.FileStorage, Replicas: c.Replicas})
		return err
	}); err != nil {
		return fmt.Errorf("ensure object store %s: %w", RecoveryObjects, err)
	}
	// The shared durable consumers: the two lanes and the retirements.
	// No filter: each stream holds exactly what its consumer takes. A
	// multi-subject filter makes the server intersect its subject tree on
	// every delivery, which dominated its CPU with thousands of keys
	// (measured: 58% of server CPU, 14x lower throughput). The server
	// never stops redelivering on its own (MaxDeliver -1: that would drop
	// an event silently); the workers decide.
	//
	// The retirement consumer is the exception: it takes the due subjects
	// and those of earlier versions, never the message schedules of
	// retirements not yet due (see RetirePrefix). So are the parked
	// consumers: each takes its lane's due subjects (one filter each,
	// never the schedules; parked events are few, and each is delivered
	// once per park).
	retirePending := c.RetireMaxAckPending
	if retirePending <= 0 {
		retirePending = DefaultRetireMaxAckPending
	}
	for _, cc := range []struct {
		stream, name, desc string
		maxAckPending      int
		filters            []string
	}{
		{EventsStream, ConsumerName, "keyrelay workers (shared by every process)", c.MaxAckPending, nil},
		{BulkStream, BulkConsumerName, "keyrelay workers' bulk lane (shared by every process)", c.MaxAckPending, nil},
		{RetireStream, RetireConsumerName, "keyrelay workers' retirements (shared by every process)", retirePending, retireFilters},
		{ParkedStream, ParkedConsumerName, "keyrelay workers' parked interactive events (shared by every process)", c.MaxAckPending, []string{parkedFilter(events.LaneInteractive)}},
		{ParkedStream, ParkedBulkConsumerName, "keyrelay workers' parked bulk events (shared by every process)", c.MaxAckPending, []string{parkedFilter(events.LaneBulk)}},
	} {
		cfg := jetstream.ConsumerConfig{
			Durable:        cc.name,
			Description:    cc.desc,
			DeliverPolicy:  jetstream.DeliverAllPolicy,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        c.AckWait,
			MaxDeliver:     -1,
			MaxAckPending:  cc.maxAckPending,
			FilterSubjects: cc.filters,
		}
		if err := EnsureCall(ctx, func(ctx context.Context) error { _, err := js.CreateOrUpdateConsumer(ctx, cc.stream, cfg); return err }); err != nil {
			return fmt.Errorf("ensure consumer %s: %w", cc.name, err)
		}
	}
	return nil
}

// ensureScheduleStream creates or updates a work-queue stream of message
// schedules (cfg with retention, storage, roll-ups and schedules set
// here), refusing a server that does not know schedules: it would store
// them as plain messages that never fire.
func ensureScheduleStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	cfg.Retention, cfg.Storage = jetstream.WorkQueuePolicy, jetstream.FileStorage
	cfg.AllowRollup, cfg.AllowMsgSchedules = true, true
	if err := EnsureCall(ctx, func(ctx context.Context) error {
		s, err := js.CreateOrUpdateStream(ctx, cfg)
		if err == nil && !s.CachedInfo().Config.AllowMsgSchedules {
			err = errors.New("the NATS server does not support message schedules (nats-server 2.12 or later is required)")
		}
		return err
	}); err != nil {
		return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return nil
}

// TopologyCallTimeout is the deadline of the first try of each JetStream
// API call EnsureTopology makes; EnsureCall doubles it (up to 16 s) for
// each further try while the call times out.
//
// A JetStream cluster does not always answer a create: when several
// processes create the same stream or bucket at once (identical
// configurations), it answers one of them, or none (nats-server 2.15.2
// marks the later assignments as answered), although the stream is
// created. Without a deadline of its own such a call waits out the
// caller's whole context (a start-up attempt: 20 s, seen for two of three
// `keyrelay serve` processes started together on a fresh cluster, more
// than once in one start); the next try finds the stream and is answered
// at once, as an update. An R3 create is answered in well under 100 ms on
// a healthy cluster.
const TopologyCallTimeout = time.Second

// topologyCallTimeoutMax caps EnsureCall's doubling.
const topologyCallTimeoutMax = 16 * time.Second

// EnsureCall runs an idempotent JetStream API call (a create-or-update)
// with the deadline TopologyCallTimeout, and each time it times out runs
// it again after a random pause of up to half a second (processes that
// collided once then no longer move through the topology in step) with
// twice the deadline, up to 16 s, until it returns anything else or ctx
// ends. Other errors are returned at once.
func EnsureCall(ctx context.Context, call func(ctx context.Context) error) error {
	timeout := TopologyCallTimeout
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := call(cctx)
		cancel()
		if err == nil || ctx.Err() != nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			return err
		}
		timeout = min(2*timeout, topologyCallTimeoutMax)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(rand.N(500 * time.Millisecond)):
		}
	}
}

// ensureStream creates or updates a stream through EnsureCall.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	return EnsureCall(ctx, func(ctx context.Context) error {
		_, err := js.CreateOrUpdateStream(ctx, cfg)
		return err
	})
}

// limit maps a configured bound to JetStream's (0 and -1: none).
func limit(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// kvToken maps a validated id to a KV key token. Ids made of letters,
// digits, '_' and '-' are used as they are; any other id (it may hold
// '@', '+', '=' or ':', which KV keys do not allow) becomes "=" followed by
// its unpadded base64url form. A plain token never contains '=', so the
// mapping is injective.
func kvToken(id string) string {
	plain := id != ""
	for i := 0; i < len(id) && plain; i++ {
		c := id[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if plain {
		return id
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// fromKVToken is the inverse of kvToken.
func fromKVToken(tok string) (string, error) {
	if !strings.HasPrefix(tok, "=") {
		if tok == "" {
			return "", errors.New("empty token")
		}
		return tok, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[1:])
	if err != nil {
		return "", fmt.Errorf("bad encoded id: %w", err)
	}
	return string(b), nil
}

// isCASConflict reports whether err is a KV compare-and-set conflict.
func isCASConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}
