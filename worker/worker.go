package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/tracing"
	"github.com/keyrelay/keyrelay/ownership"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
)

// Defaults for Config fields left zero.
const (
	ConcurrencyDefault       = 32
	AckWaitDefault           = 60 * time.Second
	MaxDeliverDefault        = 10000
	RetryForDefault          = 6 * time.Hour
	InfraWaitDefault         = 30 * time.Second
	CallTimeoutDefault       = 15 * time.Second
	RetryInitialDefault      = 100 * time.Millisecond
	RetryMaxDefault          = 30 * time.Second
	RetryMultiplierDefault   = 2.0
	InProcessAttemptsDefault = 3
	ClaimLeaseDefault        = 30 * time.Second
	ShutdownGraceDefault     = 20 * time.Second
	// LedgerCacheSizeDefault bounds the in-process ledger entry cache. An
	// entry saves the read before a claim's compare-and-set for a key
	// written recently; a miss costs one KV read, not a stored write. An
	// entry holds the sealed value (about 700 bytes in all), so 65,536 of
	// them were 45 MB of a serve process's live heap after a 100,000-key
	// job (bench/memory); 16,384 keep the keys a gateway is busy with.
	LedgerCacheSizeDefault = 16384
)

type cachedEntry struct {
	entry LedgerEntry
	rev   uint64
}

// Config tunes one worker process.
type Config struct {
	// ID names this worker in claims and logs. Default: hostname-pid-random.
	ID string
	// Concurrency is how many provider calls the interactive lane (the
	// gateway's events) makes at once. The lane handles up to a quarter
	// more events at once (handlerSlots): events in their NATS steps
	// (ledger claim and commit, confirmation, ack) before and after their
	// call, and the slots other backends still have when one backend's
	// calls hang while holding every call slot. Default: 32.
	Concurrency int
	// BulkConcurrency is how many bulk-lane events (bulk jobs) are handled
	// at once, in slots of their own: a running job never takes a slot
	// (worker or backend) the gateway's events need. Default: Concurrency;
	// negative: this process does not consume the bulk lane.
	BulkConcurrency int
	// AckWait must match the consumer's; heartbeats go every AckWait/3.
	// Default: 60s.
	AckWait time.Duration
	// MaxDeliver is a safety net against failure loops: the failed delivery
	// (a provider failure, a KMS failure while opening, a handler panic) at
	// which an event goes to the DLQ even inside RetryFor. Deliveries handed
	// back to wait (NATS trouble, another worker's claim, busy slots) never
	// count. Default: 10000.
	MaxDeliver int
	// RetryFor is how long provider failures of one event are retried,
	// counted from its first provider failure, before it is dead-lettered.
	// NATS trouble and waiting for another worker's claim never count.
	// Default: 6h.
	RetryFor time.Duration
	// InfraWait is how long one delivery retries a NATS operation (ledger,
	// team settings, confirmation, DLQ) in place before handing the event
	// back, without spending its retry budget. Default: 30s.
	InfraWait time.Duration
	// BackendSlots bounds the events one process writes to one backend at
	// once, so a slow or failing backend cannot take every slot. Default:
	// half of Concurrency (at least 1). A backend answering within
	// BackendBorrowBelow may borrow the other slots on top (see
	// backendGuards).
	BackendSlots int
	// BackendBorrowBelow is how fast a backend's calls must be (moving
	// average, and none in flight longer) for it to use more than
	// BackendSlots. Default: 250ms; negative: never borrow.
	BackendBorrowBelow time.Duration
	// BreakerFailures is how many consecutive retryable failures open a
	// backend's circuit breaker; while it is open, events for that backend
	// are handed back at once without a call (a wait: no call, no failure
	// of theirs). Default: 8.
	BreakerFailures int
	// BreakerOpen is how long a breaker stays open before one probe call is
	// let through. Default: 2s.
	BreakerOpen time.Duration
	// CallTimeout bounds one provider call. Default: 15s.
	CallTimeout time.Duration
	// RetryInitial, RetryMax, RetryMultiplier: backoff between attempts and
	// deliveries. Defaults: 100ms, 30s, 2.
	RetryInitial    time.Duration
	RetryMax        time.Duration
	RetryMultiplier float64
	// InProcessAttempts per delivery before NakWithDelay. Default: 3.
	InProcessAttempts int
	// ClaimLease bounds how long a key stays claimed by one writer; must be
	// shorter than AckWait. Default: 30s.
	ClaimLease time.Duration
	// ShutdownGrace is how long Run waits for in-flight events after its
	// context ends, before interrupting them (they are nak'd, never acked).
	// Default: 20s.
	ShutdownGrace time.Duration
	// AdoptUnowned allows overwriting secrets keyrelay did not create.
	AdoptUnowned bool
	// Ownership is how writers of a key exclude each other:
	// OwnershipClaims (the default; a claim in the key's ledger entry per
	// event, any number of consuming processes) or OwnershipExclusive (one
	// process at a time consumes, under a writer lease, with one
	// group-committed intent per event instead of a claim).
	Ownership string
	// LeaseTTL is the writer lease's TTL in exclusive mode: how long a
	// dead holder's lease stands before a standby takes over. In claims
	// mode the worker's claims request, whose deadline (0.9 of its TTL
	// after its last renewal) bounds every key's work, has the longer of
	// LeaseTTL and ClaimLease as its TTL.
	// Default: ownership.DefaultTTL (15s).
	LeaseTTL time.Duration
	// ParkAfter is the redelivery delay from which a key event handed
	// back (a provider failure, or a wait: its backend's breaker open
	// for ParkAfter or longer, NATS trouble) is parked: stored as a
	// message schedule in ParkedStream and acknowledged, so that it holds
	// no slot of its lane consumer's MaxAckPending, which every team
	// shares, while it waits. Shorter delays wait in the consumer
	// (NakWithDelay). Default: ParkAfterDefault (10s); negative: never
	// park.
	ParkAfter time.Duration
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	if c.Concurrency <= 0 {
		c.Concurrency = ConcurrencyDefault
	}
	if c.AckWait <= 0 {
		c.AckWait = AckWaitDefault
	}
	if c.BulkConcurrency == 0 {
		c.BulkConcurrency = c.Concurrency
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = MaxDeliverDefault
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = CallTimeoutDefault
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = RetryInitialDefault
	}
	if c.RetryMax <= 0 {
		c.RetryMax = RetryMaxDefault
	}
	if c.RetryMultiplier < 1 {
		c.RetryMultiplier = RetryMultiplierDefault
	}
	if c.InProcessAttempts <= 0 {
		c.InProcessAttempts = InProcessAttemptsDefault
	}
	if c.ClaimLease <= 0 {
		c.ClaimLease = ClaimLeaseDefault
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = ShutdownGraceDefault
	}
	if c.RetryFor <= 0 {
		c.RetryFor = RetryForDefault
	}
	if c.InfraWait <= 0 {
		c.InfraWait = InfraWaitDefault
	}
	if c.BackendSlots <= 0 {
		c.BackendSlots = max(1, c.Concurrency/2)
	}
	switch {
	case c.BackendBorrowBelow == 0:
		c.BackendBorrowBelow = 250 * time.Millisecond
	case c.BackendBorrowBelow < 0:
		c.BackendBorrowBelow = 0
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = 8
	}
	if c.BreakerOpen <= 0 {
		c.BreakerOpen = 2 * time.Second
	}
	if c.Ownership == "" {
		c.Ownership = OwnershipClaims
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = ownership.DefaultTTL
	}
	if c.ParkAfter == 0 {
		c.ParkAfter = ParkAfterDefault
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.ClaimLease >= c.AckWait {
		return fmt.Errorf("worker: ClaimLease (%v) must be shorter than AckWait (%v)", c.ClaimLease, c.AckWait)
	}
	if c.CallTimeout >= c.ClaimLease {
		return fmt.Errorf("worker: CallTimeout (%v) must be shorter than ClaimLease (%v)", c.CallTimeout, c.ClaimLease)
	}
	if c.LeaseTTL < ownership.MinTTL || c.LeaseTTL > ownership.MaxRecordTTL {
		return fmt.Errorf("worker: LeaseTTL (%v) must be within [%v, %v]", c.LeaseTTL, ownership.MinTTL, ownership.MaxRecordTTL)
	}
	switch c.Ownership {
	case OwnershipClaims, OwnershipExclusive:
	default:
		return fmt.Errorf("worker: ownership %q is neither %q nor %q", c.Ownership, OwnershipClaims, OwnershipExclusive)
	}
	return nil
}

// ConfigFrom maps keyrelay's settings section to a worker Config.
func ConfigFrom(w settings.WorkerConfig) Config {
	return Config{Concurrency: w.Concurrency, AckWait: w.AckWait, MaxDeliver: w.MaxDeliver, CallTimeout: w.CallTimeout,
		RetryInitial: w.RetryInitial, RetryMax: w.RetryMax, RetryMultiplier: w.RetryMultiplier,
		InProcessAttempts: w.InProcessAttempts, ClaimLease: w.ClaimLease, ShutdownGrace: w.ShutdownGrace,
		AdoptUnowned: w.AdoptUnowned, RetryFor: w.RetryFor, InfraWait: w.InfraWait, Ownership: w.Ownership, LeaseTTL: w.LeaseTTL,
		BackendSlots: w.BackendSlots, BackendBorrowBelow: borrowBelow(w.BackendBorrowBelow), BulkConcurrency: w.BulkConcurrency,
		ParkAfter: parkAfter(w.ParkAfter)}
}

// parkAfter maps the setting (0: never park) to Config's (negative: never).
func parkAfter(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// borrowBelow maps the setting (0: never) to Config's (negative: never).
func borrowBelow(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// Deps are what a worker talks to.
type Deps struct {
	JS       jetstream.JetStream
	Settings *settings.Config
	Registry *providers.Registry
	// Opener opens sealed values (the keyring, or a KMS-backed opener).
	Opener  events.Opener
	Logger  *zap.Logger
	Metrics *Metrics
	// Getenv is passed to provider factories. Default: os.Getenv.
	Getenv func(string) string
	// OnPlaceChange, when set, is called after a team-settings event
	// changed a team's place (TeamPlace): moved it to another backend, or
	// to other team options on the same one that its secrets' place
	// depends on (a Vault namespace or mount, a Google project;
	// PlacementFor), after which its writes go elsewhere and record the
	// copies they leave behind (keyrelay.migration.on_settings_change
	// requests the move of its keys). It is called whoever applied the
	// change (the event itself or a key event's catch-up), with the places
	// before and after the settings event. It must be idempotent: an error
	// hands the settings event back (the change stands) and its
	// redelivery calls it again.
	OnPlaceChange func(ctx context.Context, team string, from, to TeamPlace) error
	// TracerProvider makes the spans of deliveries and provider calls.
	// Default: the process-wide provider (otel.GetTracerProvider).
	TracerProvider trace.TracerProvider
}

// Worker consumes the events stream through the shared durable consumer.
type Worker struct {
	cfg    Config
	d      Deps
	log    *zap.Logger
	m      *Metrics
	retry  retryPolicy
	stream jetstream.Stream
	ledger *Ledger
	teams  *Teams
	locks  *keyLocks
	// entries caches the ledger entries this process last read or wrote,
	// with their KV revision, so a claim usually needs no read: a stale
	// entry only costs a failed compare-and-set and a fresh read.
	entries *lru.Cache[string, cachedEntry]
	// failures remembers, per stream sequence, the provider failures of
	// events this process handed back (the ledger keeps the same record
	// for claimed keys, so another worker continues the count).
	failures *lru.Cache[failKey, RetryRecord]
	// resolved keeps team settings resolved (resolve).
	resolved *lru.Cache[*events.TeamSettings, *teamBackend]
	lanes    []*lane
	tracer   trace.Tracer
	// bulkStream is read when first needed (park.go).
	bulkStream atomic.Pointer[jetstream.Stream]
	// parkedRoom keeps the parked stream's cap (park.go).
	parkedRoom parkedRoom
	// excl is exclusive mode's lease and intents (nil in claims mode).
	excl *exclusive
	// claimsReq is claims mode's claims request, once granted (nil in
	// exclusive mode, and on a topology without the ownership bucket):
	// every key's work is bounded by its GrantedUntil.
	claimsReq atomic.Pointer[ownership.Request]

	running atomic.Bool
	handled atomic.Int64
	work    sync.WaitGroup // handlers running
	// inflight holds the messages being handled (heartbeats). A plain
	// map: a sync.Map's store and delete per event allocated and showed
	// in the handler's profile.
	inflightMu sync.Mutex
	inflight   map[jetstream.Msg]struct{}
}

// New connects a worker to the existing topology (see EnsureTopology).
func New(ctx context.Context, cfg Config, d Deps) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	if d.Getenv == nil {
		d.Getenv = os.Getenv
	}
	if d.JS == nil || d.Settings == nil || d.Registry == nil || d.Opener == nil {
		return nil, errors.New("worker: JS, Settings, Registry and Opener are required")
	}
	stream, err := d.JS.Stream(ctx, EventsStream)
	if err != nil {
		return nil, fmt.Errorf("worker: stream %s: %w", EventsStream, err)
	}
	lanes := []*lane{{name: events.LaneInteractive, concurrency: cfg.Concurrency}}
	if cfg.BulkConcurrency > 0 {
		lanes = append(lanes, &lane{name: events.LaneBulk, concurrency: cfg.BulkConcurrency})
	}
	for _, ln := range lanes {
		if ln.consumer, err = d.JS.Consumer(ctx, StreamOf(ln.name), ConsumerOf(ln.name)); err != nil {
			return nil, fmt.Errorf("worker: consumer %s of stream %s: %w", ConsumerOf(ln.name), StreamOf(ln.name), err)
		}
		if ln.parked, err = d.JS.Consumer(ctx, ParkedStream, ParkedConsumerOf(ln.name)); err != nil {
			return nil, fmt.Errorf("worker: consumer %s of stream %s: %w", ParkedConsumerOf(ln.name), ParkedStream, err)
		}
		// Each lane has its own backend slots, shares scaled to its
		// concurrency, and its own breakers.
		slots := max(1, cfg.BackendSlots*ln.concurrency/cfg.Concurrency)
		ln.backends = newBackendGuards(slots, ln.concurrency, cfg.BackendBorrowBelow, cfg.BreakerFailures, cfg.BreakerOpen, d.Metrics)
	}
	lkv, err := d.JS.KeyValue(ctx, LedgerBucket)
	if err != nil {
		return nil, fmt.Errorf("worker: bucket %s: %w", LedgerBucket, err)
	}
	tkv, err := d.JS.KeyValue(ctx, TeamsBucket)
	if err != nil {
		return nil, fmt.Errorf("worker: bucket %s: %w", TeamsBucket, err)
	}
	entries, err := lru.New[string, cachedEntry](LedgerCacheSizeDefault)
	if err != nil {
		return nil, err
	}
	failures, err := lru.New[failKey, RetryRecord](LedgerCacheSizeDefault)
	if err != nil {
		return nil, err
	}
	log := d.Logger.With(zap.String("worker", cfg.ID))
	w := &Worker{cfg: cfg, d: d, log: log, m: d.Metrics, stream: stream, lanes: lanes,
		ledger: NewLedger(lkv, d.JS.Conn()), entries: entries, failures: failures, resolved: newResolvedCache(), inflight: map[jetstream.Msg]struct{}{},
		teams: NewTeams(tkv, stream, log, d.JS.Conn()), locks: newKeyLocks(), tracer: tracing.Tracer(d.TracerProvider),
		retry: retryPolicy{initial: cfg.RetryInitial, max: cfg.RetryMax, multiplier: cfg.RetryMultiplier, attempts: cfg.InProcessAttempts}}
	rep := newCorruptReporter(log, w.m)
	w.ledger.corrupt, w.teams.corrupt = rep, rep
	w.teams.KnownBackends(d.Registry.Names())
	if cfg.Ownership == OwnershipExclusive {
		if w.excl, err = newExclusive(ctx, w); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Teams exposes the team settings store (for readiness and tools).
func (w *Worker) Teams() *Teams { return w.teams }

// Ledger exposes the ledger (for tools and tests).
func (w *Worker) Ledger() *Ledger { return w.ledger }

// Ready reports whether the worker is consuming with team settings loaded
// (NotReady gives the reason when it is not).
func (w *Worker) Ready() bool { return w.NotReady() == "" }

// NotReady returns why the worker is not ready, or "" when it is: it has
// loaded the team settings and either holds its claims request's grant
// (claims mode: before the grant it handles nothing) or runs for the writer
// lease (exclusive mode: a standby is ready, it takes over when the holder
// goes).
func (w *Worker) NotReady() string {
	switch {
	case !w.teams.Ready():
		return "team settings not loaded"
	case !w.running.Load():
		if w.excl == nil {
			return "not started, or its claims request not granted yet"
		}
		return "not started"
	}
	return ""
}

// Handled is the number of events this worker has finished (acked, nak'd
// or terminated).
func (w *Worker) Handled() int64 { return w.handled.Load() }

// lane is one consumer with its own slots: the interactive lane (the
// gateway's events) or the bulk lane (bulk jobs).
type lane struct {
	name     events.Lane
	consumer jetstream.Consumer
	// parked is the consumer of the lane's parked events (park.go),
	// handled in the lane's slots.
	parked      jetstream.Consumer
	concurrency int
	backends    *backendGuards
}

// Run loads team settings, then consumes every lane until ctx ends. On
// shutdown it stops fetching, hands back buffered events at once, waits up
// to ShutdownGrace for in-flight ones and interrupts the rest, which are
// nak'd: an unfinished write is never acknowledged.
func (w *Worker) Run(ctx context.Context) error {
	// Handlers get their own context so in-flight work can finish after ctx
	// ends.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	if err := w.teams.Start(workCtx); err != nil {
		return fmt.Errorf("worker: load team settings: %w", err)
	}
	if w.excl != nil {
		// The lease outlives the lanes and the in-flight events: it is
		// released (and a standby takes over at once) only after every
		// action under it has ended.
		leaseCtx, stopLease := context.WithCancel(context.WithoutCancel(ctx))
		leaseDone := make(chan struct{})
		go func() { defer close(leaseDone); _ = w.excl.lease.Run(leaseCtx) }()
		defer func() { stopLease(); <-leaseDone }()
		w.log.Info("worker consuming while it holds the writer lease (ownership exclusive)", zap.Int("concurrency", w.cfg.Concurrency),
			zap.Int("bulk_concurrency", max(0, w.cfg.BulkConcurrency)), zap.Duration("ack_wait", w.cfg.AckWait), zap.Duration("lease_ttl", w.cfg.LeaseTTL))
		if least := leaseWriteWindow(w.cfg.LeaseTTL); least < w.cfg.CallTimeout {
			w.log.Warn("a write under the writer lease may get less time than call_timeout: it ends by the lease's deadline; "+
				"for providers that need the whole call_timeout, raise worker.lease_ttl to call_timeout/0.65 or more",
				zap.Duration("least_time_per_write", least), zap.Duration("call_timeout", w.cfg.CallTimeout), zap.Duration("lease_ttl", w.cfg.LeaseTTL))
		}
	} else {
		stop, err := w.holdClaimsRequest(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer stop()
		w.log.Info("worker consuming", zap.Int("concurrency", w.cfg.Concurrency), zap.Int("bulk_concurrency", max(0, w.cfg.BulkConcurrency)),
			zap.Duration("ack_wait", w.cfg.AckWait))
	}
	// Ready from here: a claims-mode worker only once its claims request
	// is granted (a readiness probe must not pass a process that still
	// waits for the lease holder to hand over).
	w.running.Store(true)
	defer w.running.Store(false)

	go w.pollConsumer(ctx)
	go w.trimLanes(ctx)
	go w.rearmParked(ctx)
	go w.rearmRetirements(ctx)
	go w.heartbeats(workCtx)

	// A lane that stops with an error stops the others: the process is
	// unhealthy and its supervisor restarts it.
	laneCtx, stopLanes := context.WithCancel(ctx)
	defer stopLanes()
	retiring := make(chan struct{})
	go func() { defer close(retiring); w.runRetirements(laneCtx) }()
	var wg sync.WaitGroup
	errs := make([]error, len(w.lanes))
	for i, ln := range w.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = w.runLane(laneCtx, workCtx, ln); errs[i] != nil {
				stopLanes()
			}
		}()
	}
	wg.Wait()
	stopLanes()
	<-retiring
	// Every lane has stopped fetching; wait for in-flight events.
	done := make(chan struct{})
	go func() { w.work.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(w.cfg.ShutdownGrace):
		w.log.Warn("shutdown grace elapsed; interrupting in-flight events (they will be redelivered)")
		cancelWork()
		<-done
	}
	w.log.Info("worker stopped", zap.Int64("handled", w.handled.Load()))
	return errors.Join(errs...)
}

// handlerSlots is how many events a lane of concurrency call slots handles
// at once: a quarter more (at least 2), so that its call slots stay busy
// while events go through their NATS steps, and so that a backend whose
// calls hang while it holds all concurrency call slots (until the call
// timeout) still leaves handler slots to events of the other backends.
func handlerSlots(concurrency int) int { return concurrency + max(2, concurrency/4) }

// The workers' pull requests. A pull request waits at the consumer's
// leader; when that leader dies (SIGKILL, a machine lost) the request dies
// with it, silently, and a worker learns of it only when the server's idle
// heartbeats for it stop for two intervals. With nats.go's defaults (30 s
// requests, 15 s heartbeats) every worker sat idle for up to 30 s after
// the node leading the shared consumer was lost; with these, a worker
// pulls again 2 s after the heartbeats stop, and the pipeline resumes once
// the consumer has a new leader. (A 3-node cluster under load, only the
// consumer's leader SIGKILLed: 27 s without a confirmation before, 3 to
// 6 s after.) An idle worker renews its pull every pullExpiry.
const (
	pullExpiry    = 5 * time.Second
	pullHeartbeat = time.Second
)

// laneDelivery is one message fetched for a lane's handlers.
type laneDelivery struct {
	msg        jetstream.Msg
	receivedAt time.Time
	parked     bool // from the lane's parked consumer
}

// runLane fetches ln's events, from its consumer and its parked
// consumer, and starts a handler for each, at most handlerSlots at once
// (the two consumers share them), until ctx ends (nil) or the connection
// closes.
func (w *Worker) runLane(ctx, workCtx context.Context, ln *lane) error {
	handlers := handlerSlots(ln.concurrency)
	// A fixed set of handler goroutines, not one per message: a goroutine
	// keeps the stack it grew, where a fresh one copies its stack several
	// times on the way down to the ledger and the provider (that copying
	// was a tenth of the worker's CPU in bench/pipeline).
	deliveries := make(chan laneDelivery)
	for range handlers {
		go func() {
			for d := range deliveries {
				if d.parked {
					w.processParked(workCtx, ln, d.msg, d.receivedAt)
				} else {
					w.process(workCtx, ln, d.msg, d.receivedAt)
				}
				w.work.Done()
			}
		}()
	}
	fetchCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	// Parked events are few next to the lane's own: a smaller pull buffer.
	for i, c := range []struct {
		cons   jetstream.Consumer
		name   string
		parked bool
		buffer int
	}{
		{ln.consumer, ConsumerOf(ln.name), false, handlers},
		{ln.parked, ParkedConsumerOf(ln.name), true, max(2, handlers/4)},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = w.fetch(fetchCtx, ln, c.cons, c.name, c.parked, c.buffer, deliveries); errs[i] != nil {
				stop()
			}
		}()
	}
	wg.Wait()
	close(deliveries)
	return errors.Join(errs...)
}

// fetch pulls consumer cons's messages (at most buffer ahead) into
// deliveries until ctx ends (nil) or the connection closes.
func (w *Worker) fetch(ctx context.Context, ln *lane, cons jetstream.Consumer, name string, parked bool, buffer int, deliveries chan<- laneDelivery) error {
	pull := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(buffer), jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat)}
	if w.excl != nil {
		// Exclusive: pull only while holding the writer lease.
		if err := w.excl.ready(ctx); err != nil {
			return nil
		}
	}
	it, err := cons.Messages(pull...)
	if err != nil {
		return fmt.Errorf("worker: consume %s: %w", name, err)
	}
	stopped := make(chan struct{})
	swap := make(chan jetstream.MessagesContext, 1)
	go func() {
		cur := it
		var changes <-chan struct{} // nil (never ready) in claims mode
		if w.excl != nil {
			changes = w.excl.lease.Changes()
		}
		for {
			select {
			case <-ctx.Done():
				cur.Drain()
				return
			case cur = <-swap:
			case <-changes:
				changes = w.excl.lease.Changes()
				if _, _, held := w.excl.lease.Held(); !held {
					// The lease is lost: stop pulling. Events already
					// buffered come out of Next and are handed back.
					w.m.WriterLease.Set(0)
					cur.Drain()
				}
			case <-stopped:
				return
			}
		}
	}()
	defer func() { close(stopped); it.Stop() }()

	for {
		msg, err := it.Next()
		receivedAt := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return nil // our own Drain: shutting down
			}
			if w.d.JS.Conn().IsClosed() {
				return fmt.Errorf("worker: nats connection closed: %w", err)
			}
			// Missed heartbeats, a consumer recreated by an operator, a
			// leader change: none of these may stop a worker for good.
			closed := errors.Is(err, jetstream.ErrMsgIteratorClosed)
			if w.excl != nil && closed {
				// Drained when the lease was lost: wait to hold it again.
				w.log.Info("writer lease not held; lane paused", zap.String("lane", ln.name.String()), zap.String("consumer", name))
				if err := w.excl.ready(ctx); err != nil {
					return nil
				}
			} else {
				w.log.Warn("consumer iterator error; resuming", zap.String("lane", ln.name.String()), zap.String("consumer", name), zap.Error(err))
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			if closed && ctx.Err() == nil {
				it.Stop()
				if it, err = cons.Messages(pull...); err != nil {
					return fmt.Errorf("worker: consume %s: %w", name, err)
				}
				swap <- it
			}
			continue
		}
		if ctx.Err() != nil {
			// Shutting down: hand buffered events back for other workers.
			_ = msg.Nak()
			continue
		}
		// NATS is gone: the event could be neither confirmed nor acked, and
		// it is redelivered after AckWait anyway. Pause until it is back.
		for w.d.JS.Conn().Status() == nats.RECONNECTING && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		w.work.Add(1)
		deliveries <- laneDelivery{msg, receivedAt, parked}
	}
}

func (w *Worker) pollConsumer(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		for _, ln := range w.lanes {
			if info, err := ln.consumer.Info(cctx); err == nil {
				w.m.observeConsumer(cctx, w.d.JS, ln.name.String(), info)
			}
			// Its parked consumer: due parked events (pending) and those
			// being handled again (ack pending); the ones not yet due are
			// in keyrelay_stream_messages{stream="KEYRELAY_PARKED"}.
			if info, err := ln.parked.Info(cctx); err == nil {
				w.m.observeParked(ln.name.String()+"-parked", info)
			}
		}
		w.pollStreams(cctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// provider opens the backend named by the resolved settings.
func (w *Worker) provider(ctx context.Context, r settings.Resolved) (providers.Provider, error) {
	return w.openProvider(ctx, w.resolveBackend(r))
}

// guard returns lane ln's bulkhead and circuit breaker of the backend
// named by the resolved settings.
func (w *Worker) guard(ln *lane, tb *teamBackend) *backendGuard {
	return ln.backends.get(tb.guardKey, tb.res.Backend)
}

// pollStreams exports the size, limits and discards of keyrelay's streams.
func (w *Worker) pollStreams(ctx context.Context) {
	for _, name := range []string{EventsStream, BulkStream, ConfirmationsStream, DLQStream, ParkedStream} {
		s, err := w.d.JS.Stream(ctx, name)
		if err != nil {
			continue
		}
		info, err := s.Info(ctx)
		if err != nil {
			continue
		}
		w.m.StreamMsgs.WithLabelValues(name).Set(float64(info.State.Msgs))
		w.m.StreamBytes.WithLabelValues(name).Set(float64(info.State.Bytes))
		w.m.StreamLimit.WithLabelValues(name, "bytes").Set(float64(info.Config.MaxBytes))
		w.m.StreamLimit.WithLabelValues(name, "msgs").Set(float64(info.Config.MaxMsgs))
		if info.State.FirstSeq > 0 {
			w.m.StreamDiscarded.WithLabelValues(name).Set(float64(info.State.FirstSeq - 1))
		}
	}
}
