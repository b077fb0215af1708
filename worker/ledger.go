package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/kvlist"
	"github.com/keyrelay/keyrelay/settings"
)

// LedgerEntry is the ledger's record of one key. It never holds a plaintext
// value: Sealed is the value exactly as it travelled in the event, so a
// backend can be rebuilt from the ledger alone.
type LedgerEntry struct {
	// Generation is the highest generation applied to the key.
	Generation uint64 `json:"generation"`
	// EventID, EventType and Status describe the event that set Generation
	// and its outcome (stored, rotated or deleted).
	EventID   string        `json:"event_id"`
	EventType events.Type   `json:"event_type"`
	Status    events.Status `json:"status"`
	StreamSeq uint64        `json:"stream_seq"`
	// Provider, SecretRef and ProviderVersion say where the value lives.
	Provider        string `json:"provider,omitempty"`
	SecretRef       string `json:"secret_ref,omitempty"`
	ProviderVersion string `json:"provider_version,omitempty"`
	// Placement completes Provider: the team options the secret was
	// written with (nil: an entry written before they were recorded).
	Placement *Placement `json:"placement,omitempty"`
	// MetaGeneration and MetaEventID identify the newest key.updated
	// applied; Alias and Metadata come from the newest event of either kind.
	MetaGeneration uint64            `json:"meta_generation,omitempty"`
	MetaEventID    string            `json:"meta_event_id,omitempty"`
	Alias          string            `json:"alias,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	// Sealed is the latest value, sealed and bound to SealedBinding's
	// generation (the generation of the event that carried it).
	Sealed    *events.SealedValue `json:"sealed,omitempty"`
	SealedGen uint64              `json:"sealed_generation,omitempty"`
	UpdatedAt time.Time           `json:"updated_at"`
	// Claim is set while a worker writes the key.
	Claim *Claim `json:"claim,omitempty"`
	// Retry records the provider failures of the event last handed back
	// for this key, so whichever worker gets its next delivery continues
	// its retry budget. A commit clears it.
	Retry *RetryRecord `json:"retry,omitempty"`
	// Sources are copies of the key left on backends the team moved away
	// from (by `keyrelay migrate`, or by a write after the team's backend
	// changed). They are deleted once the migration's grace period is over
	// (recovery.Cleanup); the ledger keeps them until then so nothing is
	// forgotten in a backend.
	Sources []SourceCopy `json:"sources,omitempty"`
	// Previous is the version the last rotation replaced, while its grace
	// period runs: the lookup API serves it next to the current value
	// until Until, when its retirement (scheduled in KEYRELAY_RETIRE) is
	// due.
	Previous *PreviousVersion `json:"previous,omitempty"`
}

// Placement is where, beyond its backend's name, a secret was written:
// the team provider options in effect then that the backend lets a team
// set (Registry.TeamOptionAllowed: a Vault namespace, mount, path prefix
// or data key, a Google project, an AWS region, a Conjur policy branch;
// never credentials, which no backend lets a team set). A team may change
// them later, and its older secrets stay where they were written: every
// later action on one (delete, lookup, retirement, restore, drift check,
// cleanup of an old copy) resolves its backend with these options, not
// with the team's current ones (Placement.Resolve).
//
// A nil *Placement is an entry written before placements were recorded:
// the team's current options apply, as they always did. A Placement with
// no TeamOptions records that the team set none (the backend's own
// defaults): a team that later sets a namespace still reaches the secret
// in the default one. Its map is never written once recorded.
type Placement struct {
	TeamOptions map[string]string `json:"team_options,omitempty"`
}

// Resolve returns the settings that reach a secret written to backend at
// p: the team's settings with p's options (settings.ResolvePlaced), or,
// when p is nil (not recorded), with the team's current ones
// (settings.ResolveBackend).
func (p *Placement) Resolve(c *settings.Config, team *events.TeamSettings, backend string) settings.Resolved {
	if p == nil {
		return c.ResolveBackend(team, backend)
	}
	return c.ResolvePlaced(team, backend, p.TeamOptions)
}

// PlacementFor returns what a secret written with res records: the team
// options res's backend lets a team set (allowed: Registry.TeamOptionAllowed),
// never nil.
func PlacementFor(res settings.Resolved, allowed func(backend, key string) bool) *Placement {
	place := &Placement{}
	for k, v := range res.TeamOptions {
		if allowed(res.Backend, k) {
			if place.TeamOptions == nil {
				place.TeamOptions = make(map[string]string, len(res.TeamOptions))
			}
			place.TeamOptions[k] = v
		}
	}
	return place
}

// SamePlace reports whether a secret recorded at p is at q (samePlace).
func SamePlace(p, q *Placement) bool { return samePlace(p, q) }

// samePlace reports whether a secret recorded at p is at q, both on one
// backend. An unrecorded placement (nil) counts as any: it stands for the
// team's current options, and the code before placements were recorded
// treated it so. That errs toward "the same": a copy is then never taken
// for one left behind, so never deleted as one.
func samePlace(p, q *Placement) bool {
	return p == nil || q == nil || maps.Equal(p.TeamOptions, q.TeamOptions)
}

// PreviousVersion is a rotated-out version in its grace period.
type PreviousVersion struct {
	Version   string    `json:"version"`
	SecretRef string    `json:"secret_ref"`
	Until     time.Time `json:"until"`
}

// InGrace reports whether p is still to be served at now.
func (p *PreviousVersion) InGrace(now time.Time) bool { return p != nil && now.Before(p.Until) }

// SourceCopy is one copy of a key on a backend it moved away from.
type SourceCopy struct {
	Backend   string `json:"backend"`
	SecretRef string `json:"secret_ref"`
	// Placement is the team options the copy was written with (nil: not
	// recorded, the team's current ones).
	Placement *Placement `json:"placement,omitempty"`
	Since     time.Time  `json:"since"`
}

// AddSourceAt records that the key's copy at (backend, ref) with placement
// pl was left behind, unless it is already recorded or is where the entry
// now points (Provider, SecretRef and Placement set first).
func (e *LedgerEntry) AddSourceAt(backend, ref string, pl *Placement, now time.Time) {
	if backend == "" || ref == "" || (backend == e.Provider && ref == e.SecretRef && samePlace(pl, e.Placement)) {
		return
	}
	for _, s := range e.Sources {
		if s.Backend == backend && s.SecretRef == ref && samePlace(s.Placement, pl) {
			return
		}
	}
	e.Sources = append(slices.Clone(e.Sources), SourceCopy{Backend: backend, SecretRef: ref, Placement: pl, Since: now})
}

// dropCurrentSource forgets a recorded copy that is where the entry now
// points (the team moved back): it is the live secret, never to delete.
func (e *LedgerEntry) dropCurrentSource() {
	if len(e.Sources) == 0 {
		return
	}
	e.Sources = slices.DeleteFunc(slices.Clone(e.Sources), func(s SourceCopy) bool {
		return s.Backend == e.Provider && s.SecretRef == e.SecretRef && samePlace(s.Placement, e.Placement)
	})
	if len(e.Sources) == 0 {
		e.Sources = nil
	}
}

// RetryRecord counts one event's provider failures: the retry budget
// (worker.retry_for) runs from FirstFailure. Failures of keyrelay's own
// infrastructure are never recorded here.
type RetryRecord struct {
	EventID   string `json:"event_id"`
	StreamSeq uint64 `json:"stream_seq"`
	// Lane tells which stream StreamSeq is in (absent: interactive).
	Lane events.Lane `json:"lane,omitempty"`
	// FirstFailure is when the event's budget began: its first provider
	// failure, moved later by the time the event has since spent waiting
	// for keyrelay's own infrastructure (NATS, the ledger, claims, the
	// writer lease), which never counts against retry_for. So the time
	// since FirstFailure is the provider-failing time spent (by the clock
	// of the process that wrote it, and the server's: spent).
	FirstFailure time.Time `json:"first_failure"`
	Failures     int       `json:"failures"`
	// resume (this process only, never stored) is when the budget's clock
	// runs from after the last failure or wait this process handled: the
	// end of the delay the event was handed back with.
	resume time.Time
	// clock is set on a record read from the ledger (never stored): its
	// FirstFailure was written from the clock of whichever process failed
	// first, so spent reads it against the server's time too (the
	// reading ledger's clock). Nil: a record this process began.
	clock *ledgerClock
}

// Claim marks a key as being written by one event; other workers wait until
// it is released or its lease expires.
type Claim struct {
	EventID string `json:"event_id"`
	// StreamSeq is the stream message being written: a copy of the same
	// event published again (another message) waits like any other event,
	// only a redelivery of this very message may take the claim over.
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// Lane tells which stream StreamSeq is in (absent: interactive).
	Lane events.Lane `json:"lane,omitempty"`
	// Copy is the KEYRELAY_PARKED sequence of the parked copy of the
	// stream message being written (absent: the message itself). Two
	// copies of one message exclude each other like two messages; a
	// redelivery of the same copy takes its claim over.
	Copy       uint64    `json:"copy,omitempty"`
	Generation uint64    `json:"generation"`
	Worker     string    `json:"worker"`
	Until      time.Time `json:"until"`
	// Taken is the writer's clock when it took the claim: Until − Taken
	// is the claim's lease as its writer counts it, whatever that clock's
	// offset from the servers'. A reader that knows when the claim was
	// stored (stored) ends it no earlier than that lease after then, so a
	// writer whose clock runs behind the servers' does not write claims
	// that end early for everyone (ledgerClock.left). Absent (zero) on
	// claims written by versions before it: those are read by Until alone.
	Taken time.Time `json:"taken,omitzero"`
	// read marks a claim read from the server (a ledger entry, or an
	// intent a previous writer lease holder stored), never stored: its
	// Until was written from another process's clock, so the claim rule
	// also reads it against the server's time (ledgerClock.left).
	read bool
	// stored (read claims only, never stored) is the server's time at
	// which the message carrying the claim was stored: the ledger entry's
	// stored time, or the intent batch's; zero: not known.
	stored time.Time
}

// Active reports whether the claim still holds at now, by the clock of
// the process that wrote it (the claim rule reads a claim of another
// process with ledgerClock.left instead).
func (c *Claim) Active(now time.Time) bool { return c != nil && now.Before(c.Until) }

// clockBase anchors ledgerClock's reading of the server's time to this
// process's monotonic clock, so that a step of the wall clock does not
// move it.
var clockBase = time.Now()

// ledgerClock is the time the claim rule reads: this process's clock, and
// what this process knows of the NATS server's.
//
// A claim's Until is written from the clock of the process that took it;
// a process whose clock runs minutes ahead of that one's would read a
// live claim as dead and write over it: two writers on one key. So a
// claim read from the server stands while either clock says it does
// (left): it ends only once this process's clock and the server's have
// both passed its Until. When clocks agree that is the moment it always
// ended; a process far ahead of the others waits for the server's time.
// (A process far behind still waits for its own clock, as before: it is
// only slower.)
//
// A writer whose clock runs behind the servers' writes an Until that is
// already near, or past, by every other clock. So a claim that records its
// writer's clock when taken (Taken) also stands until its lease as the
// writer counted it (Until − Taken) has run from the server's time at
// which it was stored: every claim stands for at least its lease after
// its write, in server time, whatever its writer's clock said. The
// stored time is that of the message that last wrote the claim's entry:
// a later write that keeps the claim (a keyring rewrap's PutOver, say)
// moves it later, which only makes the claim stand longer, never shorter.
//
// The server's time is not asked for: every stored time this process
// reads (a ledger entry's, a key event's, the intents stream's last) was
// the server's time at or before the moment it was read, so the largest
// of them, advanced by the monotonic time elapsed since it was read, is
// never ahead of the server's time (observe, server). It costs no round
// trip, and it lags the server's time only by how old the freshest stored
// time this process has read was when it read it, usually milliseconds.
// It assumes the NATS servers keep one time (the stored times of every
// stream already rely on it).
type ledgerClock struct {
	// local is this process's clock (nil: time.Now; tests set one that is
	// off).
	local atomic.Pointer[func() time.Time]
	// off is the largest (stored time - monotonic time since clockBase)
	// observed, in ns; 0: none yet.
	off atomic.Int64
}

// now is this process's time.
func (k *ledgerClock) now() time.Time {
	if f := k.local.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// observe notes stored, the server's time of something this process has
// just read (zero: none).
func (k *ledgerClock) observe(stored time.Time) {
	if stored.IsZero() {
		return
	}
	off := stored.UnixNano() - int64(time.Since(clockBase))
	for {
		cur := k.off.Load()
		if cur != 0 && cur >= off {
			return
		}
		if k.off.CompareAndSwap(cur, off) {
			return
		}
	}
}

// server returns a time the server's clock has reached (false: nothing
// observed yet).
func (k *ledgerClock) server() (time.Time, bool) {
	off := k.off.Load()
	if off == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, off+int64(time.Since(clockBase))), true
}

// left returns how long claim c stands after (its deadline, Until, plus
// after), with this process's time now: by now alone for a claim this
// process holds itself (its own clock wrote Until); for one read from the
// server, until the last of: now reaching Until, the server's time
// reaching Until, and, when the claim records Taken and its stored time
// is known, the server's time reaching stored + (Until − Taken). known is
// false when the server's time is not known yet: the claim then stands
// (left is by now alone).
//
// A read claim whose stored time is known ends, by the server's time, at
// the latest settings.MaxClaimLease after it was stored, whatever its
// Until and Taken say and whatever this process's clock reads: no writer
// takes a longer lease (worker.claim_lease is validated against it, and
// every writer took its claim before storing it), so only a corrupt or
// forged entry (an Until in 9999, a Taken in 1970) reaches the bound, and
// it no longer holds its key for ever.
func (k *ledgerClock) left(c *Claim, now time.Time, after time.Duration) (left time.Duration, known bool) {
	end := c.Until.Add(after)
	left = end.Sub(now)
	if !c.read {
		return left, true
	}
	srv, ok := k.server()
	if !ok {
		return left, false
	}
	left = max(left, c.serverEnd().Add(after).Sub(srv))
	if !c.stored.IsZero() {
		left = min(left, c.stored.Add(settings.MaxClaimLease).Add(after).Sub(srv))
	}
	return left, true
}

// serverEnd is when read claim c ends by the server's time: at Until, or,
// when c records Taken and its stored time is known, at the end of its
// writer's lease (Until − Taken, at most settings.MaxClaimLease) counted
// from when it was stored, if that is later.
func (c *Claim) serverEnd() time.Time {
	end := c.Until
	if c.Taken.IsZero() || c.stored.IsZero() {
		return end
	}
	if lease := c.stored.Add(min(c.Until.Sub(c.Taken), settings.MaxClaimLease)); lease.After(end) {
		return lease
	}
	return end
}

// stands reports whether claim c (nil: none) still stands after (left).
func (k *ledgerClock) stands(c *Claim, now time.Time, after time.Duration) bool {
	if c == nil {
		return false
	}
	left, known := k.left(c, now, after)
	return !known || left > 0
}

// ClaimLeft returns how long claim c (nil: none) stands after now, this
// process's time, with the rule the workers' claims follow (ledgerClock):
// a claim read through l (Get, GetFromLeader, All, AllWith) was written
// from another process's clock, so it ends only once both now and the
// server's time (the latest stored time l has read, moved on by this
// process's monotonic clock; no round trip) have passed its Until, and
// the server's time has passed its lease (Until − Taken) after the entry
// was stored. A command run on a machine whose clock is minutes ahead
// thus waits for a worker's live claim instead of writing beside it, and
// so does every reader of a claim whose writer's clock runs behind the
// servers'. known is false while l has read nothing yet: the claim then
// stands, and left is by now alone.
func (l *Ledger) ClaimLeft(c *Claim, now time.Time) (left time.Duration, known bool) {
	if c == nil {
		return 0, true
	}
	return l.clock.left(c, now, 0)
}

// ClaimStands reports whether claim c (nil: none) still stands at now
// (ClaimLeft).
func (l *Ledger) ClaimStands(c *Claim, now time.Time) bool { return l.clock.stands(c, now, 0) }

// ServerTime returns a time the NATS server's clock has reached, as far as
// l knows: the latest stored time l has read (the entries Get,
// GetFromLeader, All and AllWith return, among others), moved on by this
// process's monotonic clock since (ledgerClock; no round trip). false
// while l has read nothing yet. Another deadline written from some
// process's clock (an old copy's grace, a migration's lease, a previous
// version's grace) is judged against it as well as this process's clock,
// the way ClaimLeft judges a claim, so that one machine's skew does not
// decide it alone.
func (l *Ledger) ServerTime() (time.Time, bool) { return l.clock.server() }

// Ledger stores LedgerEntry values in a KV bucket, keyed "<team>.<key>",
// updated only by compare-and-set on the KV revision.
type Ledger struct {
	kv jetstream.KeyValue
	nc *nats.Conn
	// clock reads claims against the server's time (the stored times of
	// the entries Get reads, among others).
	clock ledgerClock
	// corrupt reports entries that do not decode (nil: only returned).
	corrupt *corruptReporter

	// The bucket's replica count (0: unknown), read again in the
	// background every replicasRecheck (single).
	replicas  atomic.Int32
	replAt    atomic.Int64 // unix ns when the last check started
	replCheck atomic.Bool  // a check is running
}

// replicasRecheck is how often single reads the bucket's replica count
// again (an operator may change it while keyrelay runs).
const replicasRecheck = 30 * time.Second

// single reports whether the bucket has one replica, so that a direct get
// is answered by the stream's only copy, its leader. It never waits: the
// count is read in the background, and until it is known (or when it
// cannot be read) the bucket counts as replicated, which is always safe.
func (l *Ledger) single() bool {
	if time.Since(time.Unix(0, l.replAt.Load())) >= replicasRecheck && l.replCheck.CompareAndSwap(false, true) {
		go func() {
			defer l.replCheck.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), infraAttemptTimeout)
			defer cancel()
			l.checkReplicas(ctx)
		}()
	}
	return l.replicas.Load() == 1
}

// checkReplicas reads the bucket's replica count (0 when it cannot).
func (l *Ledger) checkReplicas(ctx context.Context) {
	l.replAt.Store(time.Now().UnixNano())
	n := 0
	if st, err := l.kv.Status(ctx); err == nil {
		if b, ok := st.(*jetstream.KeyValueBucketStatus); ok && b.StreamInfo() != nil {
			n = b.StreamInfo().Config.Replicas
		}
	}
	l.replicas.Store(int32(n))
}

// NewLedger wraps the ledger bucket. Writes go through nc when it is set
// (see jsPublish), otherwise through the KV API.
func NewLedger(kv jetstream.KeyValue, nc ...*nats.Conn) *Ledger {
	l := &Ledger{kv: kv}
	if len(nc) > 0 {
		l.nc = nc[0]
	}
	return l
}

// LedgerKey is the KV key of one virtual key.
func LedgerKey(team, key string) string { return kvToken(team) + "." + kvToken(key) }

// ParseLedgerKey is the inverse of LedgerKey: the team and key ids of a
// ledger KV key.
func ParseLedgerKey(k string) (team, key string, err error) {
	t, kk, ok := strings.Cut(k, ".")
	if !ok || strings.Contains(kk, ".") {
		return "", "", fmt.Errorf("ledger key %q is not <team>.<key>", k)
	}
	if team, err = fromKVToken(t); err != nil {
		return "", "", fmt.Errorf("ledger key %q: %w", k, err)
	}
	if key, err = fromKVToken(kk); err != nil {
		return "", "", fmt.Errorf("ledger key %q: %w", k, err)
	}
	return team, key, nil
}

// Get returns the entry and its revision; a missing key returns (nil, 0, nil).
func (l *Ledger) Get(ctx context.Context, team, key string) (*LedgerEntry, uint64, error) {
	e, err := l.kv.Get(ctx, LedgerKey(team, key))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("ledger get: %w", err)
	}
	// The entry's stored time: the server's, at or before now.
	l.clock.observe(e.Created())
	var le LedgerEntry
	if err := json.Unmarshal(e.Value(), &le); err != nil {
		return nil, 0, l.corrupt.corrupt(&CorruptEntryError{Bucket: LedgerBucket, Key: LedgerKey(team, key), Fault: decodeFault(err)})
	}
	l.markRead(&le, e.Created())
	return &le, e.Revision(), nil
}

// markRead marks what le, just read from the bucket, holds from another
// process's clock: its claim and its retry record are judged against the
// server's time too (ledgerClock). stored is the server's time at which
// the entry was stored (zero: not known), from which its claim's lease
// (Until − Taken) is counted.
func (l *Ledger) markRead(le *LedgerEntry, stored time.Time) {
	if le.Claim != nil {
		le.Claim.read, le.Claim.stored = true, stored
	}
	if le.Retry != nil {
		le.Retry.clock = &l.clock
	}
}

// GetFromLeader is Get answered by the bucket's stream leader. Get is a
// direct get, which on a cluster any replica answers, one that may lag the
// key's last write by a moment; a decision taken on a read alone, without
// a compare-and-set to catch a stale entry, reads here. Without a
// connection (NewLedger without nc) it is Get.
//
// On a bucket with one replica the direct get is the leader's answer
// (there is no other copy), and costs the server less than the stream
// API's message get: Get is used.
func (l *Ledger) GetFromLeader(ctx context.Context, team, key string) (*LedgerEntry, uint64, error) {
	if l.nc == nil || l.single() {
		return l.Get(ctx, team, key)
	}
	lkey := LedgerKey(team, key)
	m, err := leaderKVGet(ctx, l.nc, LedgerBucket, lkey)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("ledger get: %w", err)
	}
	var le LedgerEntry
	if err := json.Unmarshal(m.Data, &le); err != nil {
		return nil, 0, l.corrupt.corrupt(&CorruptEntryError{Bucket: LedgerBucket, Key: lkey, Fault: decodeFault(err)})
	}
	// The leader's answer carries the entry's stored time: the server's,
	// at or before now.
	l.clock.observe(m.Time)
	l.markRead(&le, m.Time)
	return &le, m.Seq, nil
}

// ErrLedgerConflict means another worker changed the entry since it was read.
var ErrLedgerConflict = errors.New("ledger entry changed concurrently")

// Put writes entry if the key is still at rev (0: must not exist) and
// returns the new revision.
func (l *Ledger) Put(ctx context.Context, team, key string, entry *LedgerEntry, rev uint64) (uint64, error) {
	buf := getBuf()
	b, err := entry.appendJSON(*buf)
	if err != nil {
		return 0, err
	}
	defer putBuf(buf, b)
	var nrev uint64
	switch {
	case l.nc != nil:
		// The KV put protocol: publish to $KV.<bucket>.<key>, expecting the
		// key's last revision (0: no entry yet).
		m := &nats.Msg{Subject: "$KV." + LedgerBucket + "." + LedgerKey(team, key), Data: b,
			Header: nats.Header{hdrExpectedLastSubjSeq: {strconv.FormatUint(rev, 10)}}}
		var pa pubAck
		pa, err = jsPublish(ctx, l.nc, m)
		if isWrongLastSequence(err) && rev == 0 {
			// Get reports a key whose last message is a delete or purge
			// marker (an operator's `kv del`) as missing, but the subject
			// is not empty: expecting sequence 0 would conflict on every
			// attempt. The KV client's Create writes over such a marker
			// at its revision (and refuses a live entry).
			kctx, cancel := context.WithTimeout(ctx, infraAttemptTimeout)
			nrev, err = l.kv.Create(kctx, LedgerKey(team, key), b)
			cancel()
			break
		}
		if isWrongLastSequence(err) {
			return 0, ErrLedgerConflict
		}
		nrev = pa.seq
	default:
		// Without the connection: the jetstream client, bounded like a
		// request (callers may not bound their attempts).
		kctx, cancel := context.WithTimeout(ctx, infraAttemptTimeout)
		if rev == 0 {
			nrev, err = l.kv.Create(kctx, LedgerKey(team, key), b)
		} else {
			nrev, err = l.kv.Update(kctx, LedgerKey(team, key), b, rev)
		}
		cancel()
	}
	if isCASConflict(err) {
		return 0, ErrLedgerConflict
	}
	if err != nil {
		return 0, fmt.Errorf("ledger put: %w", err)
	}
	return nrev, nil
}

// maxResealMerges bounds PutOver's merges: a rewrap changes an entry once.
const maxResealMerges = 3

// PutOver writes next where base stood at rev, like Put, and returns the
// entry written with its revision. One writer changes entries without
// claiming the key: `keyrelay keyring rewrap` (seal.RewrapStore) re-seals
// an entry's value and changes nothing else. A write that lost its
// compare-and-set to it used to be handed back, and the redelivery wrote
// the value to the provider again (a second version where there is no
// idempotency key, as on Conjur), or a release left its claim standing
// until the lease ran out. So on a conflict the entry is read again, and
// when it is base with only its sealed value changed, next is written at
// the new revision with the re-sealed value, unless next carries a value
// of its own (another sealed generation). Any other change is
// ErrLedgerConflict, as before.
func (l *Ledger) PutOver(ctx context.Context, team, key string, base, next *LedgerEntry, rev uint64) (*LedgerEntry, uint64, error) {
	nrev, err := l.Put(ctx, team, key, next, rev)
	for i := 0; errors.Is(err, ErrLedgerConflict) && base != nil && i < maxResealMerges; i++ {
		// The leader's copy: a lagging replica's would show rev again.
		fresh, frev, gerr := l.GetFromLeader(ctx, team, key)
		if gerr != nil {
			return nil, 0, gerr
		}
		if fresh == nil || frev == rev || !resealedOnly(base, fresh) {
			return nil, 0, err
		}
		merged := *next
		if next.SealedGen == base.SealedGen {
			merged.Sealed = fresh.Sealed
		}
		base, next, rev = fresh, &merged, frev
		nrev, err = l.Put(ctx, team, key, next, rev)
	}
	if err != nil {
		return nil, 0, err
	}
	return next, nrev, nil
}

// resealedOnly reports whether b is a with at most its sealed value
// replaced (the same sealed generation): what a keyring rewrap writes.
func resealedOnly(a, b *LedgerEntry) bool {
	if a.SealedGen != b.SealedGen || (a.Sealed == nil) != (b.Sealed == nil) {
		return false
	}
	x, y := *a, *b
	x.Sealed, y.Sealed = nil, nil
	bx, err := x.appendJSON(nil)
	if err != nil {
		return false
	}
	by, err := y.appendJSON(nil)
	return err == nil && bytes.Equal(bx, by)
}

// SkippedEntry is a ledger KV key All passed over: a key that is not
// <team>.<key>, or a value that does not decode. Reason never quotes the
// value.
type SkippedEntry struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// ErrEntriesSkipped: All met entries it could not use and had no Skipped
// callback to report them to (the error is a *SkippedEntriesError).
var ErrEntriesSkipped = errors.New("ledger entries skipped")

// SkippedEntriesError lists the entries All passed over when the caller
// gave no Skipped callback. It is returned after every good entry was
// visited.
type SkippedEntriesError struct {
	Entries []SkippedEntry
}

func (e *SkippedEntriesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ledger entries could not be used and were skipped:", len(e.Entries))
	for i, s := range e.Entries {
		if i == 10 {
			fmt.Fprintf(&b, " ... and %d more", len(e.Entries)-i)
			break
		}
		fmt.Fprintf(&b, " %s (%s);", s.Key, s.Reason)
	}
	return strings.TrimSuffix(b.String(), ";")
}

func (e *SkippedEntriesError) Is(target error) bool { return target == ErrEntriesSkipped }

// AllOptions scope and report a walk of the ledger (AllWith).
type AllOptions struct {
	// Teams, when not empty, limits the walk to these teams' entries: only
	// their keys are read (the watch is filtered on them), and no other
	// entry is decoded or reported.
	Teams []string
	// Skipped is called for every entry in scope that cannot be used: a
	// KV key that is not <team>.<key>, or a value that does not decode.
	// The walk goes on. Nil: the walk still visits every good entry, then returns
	// a *SkippedEntriesError (ErrEntriesSkipped) naming them.
	Skipped func(SkippedEntry)
}

// All calls fn for every ledger entry with its revision (for tools and
// tests; a caller can Put at that revision without reading the entry
// again). It reads the bucket with one watch (every key's latest value,
// streamed), not one request per key. An entry that cannot be used (a
// key that is not <team>.<key>, a value that does not decode) does not
// stop it: every good entry is visited, then a *SkippedEntriesError names
// the others. AllWith reports them as they come instead.
func (l *Ledger) All(ctx context.Context, fn func(key string, e *LedgerEntry, rev uint64) error) error {
	return l.AllWith(ctx, AllOptions{}, fn)
}

// AllWith is All scoped to o.Teams, with the entries it cannot use
// reported to o.Skipped.
func (l *Ledger) AllWith(ctx context.Context, o AllOptions, fn func(key string, e *LedgerEntry, rev uint64) error) error {
	var skipped []SkippedEntry
	report := o.Skipped
	if report == nil {
		report = func(s SkippedEntry) { skipped = append(skipped, s) }
	}
	visit := func(k string, value []byte, rev uint64, stored time.Time) error {
		team, _, err := ParseLedgerKey(k)
		if err != nil {
			report(SkippedEntry{Key: k, Reason: "the key is not <team>.<key> with valid ids"})
			return nil
		}
		if len(o.Teams) > 0 && !slices.Contains(o.Teams, team) {
			return nil
		}
		var le LedgerEntry
		if err := json.Unmarshal(value, &le); err != nil {
			report(SkippedEntry{Key: k, Reason: "the entry is corrupt: " + decodeFault(err)})
			return nil
		}
		// Read like Get reads (walk observed the entry's stored time).
		l.markRead(&le, stored)
		return fn(k, &le, rev)
	}
	if err := l.walk(ctx, o.Teams, visit); err != nil {
		return err
	}
	if len(skipped) > 0 {
		return &SkippedEntriesError{Entries: skipped}
	}
	return nil
}

// walk calls visit with the raw value, revision and stored time (the
// server's) of every key of the bucket, or of teams' keys when teams is
// not empty.
func (l *Ledger) walk(ctx context.Context, teams []string, visit func(k string, value []byte, rev uint64, stored time.Time) error) error {
	var filters []string
	for _, t := range teams {
		filters = append(filters, kvToken(t)+".*")
	}
	var w jetstream.KeyWatcher
	var err error
	if len(filters) > 0 {
		// A copy: nats.go's WatchFiltered rewrites the slice it is given
		// in place into stream subjects ("$KV.<bucket>.team.*"), and missed
		// needs the key filters. Given those subjects it listed none, so a
		// team's walk (drift, restore, migrate) left out every key written
		// while the watch listed (TestMigrateScanFindsAKeyTheWatchMissed).
		w, err = l.kv.WatchFiltered(ctx, slices.Clone(filters), jetstream.IgnoreDeletes())
	} else {
		w, err = l.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	}
	if err != nil {
		return err
	}
	defer w.Stop()
	seen := map[string]struct{}{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case kve, ok := <-w.Updates():
			if !ok {
				return errors.New("ledger: watch ended")
			}
			if kve == nil {
				return l.missed(ctx, seen, filters, visit)
			}
			seen[kve.Key()] = struct{}{}
			// The entry's stored time: the server's, at or before now.
			l.clock.observe(kve.Created())
			if err := visit(kve.Key(), kve.Value(), kve.Revision(), kve.Created()); err != nil {
				return err
			}
		}
	}
}

// missed calls visit for the entries the watch in walk did not deliver
// (under filters, the watch's key filters; none: every key). The
// watch lists the message each key had when it started; a key written
// while it listed had that message replaced before it was delivered, and
// the replacement counts as new, so the listing can end without the key
// (TestLedgerAllWhileWritten). The bucket's subjects, read once the
// listing is over, name every key that has an entry; the ones not seen
// are read one by one. Without a connection (NewLedger without nc) it has
// no way to ask and adds nothing.
func (l *Ledger) missed(ctx context.Context, seen map[string]struct{}, filters []string, visit func(k string, value []byte, rev uint64, stored time.Time) error) error {
	if l.nc == nil {
		return nil
	}
	js, err := jetstream.New(l.nc)
	if err != nil {
		return err
	}
	if len(filters) == 0 {
		filters = []string{""}
	}
	for _, f := range filters {
		if err := l.missedIn(ctx, js, seen, f, visit); err != nil {
			return err
		}
	}
	return nil
}

// missedIn is missed for the keys matching filter ("": every key).
func (l *Ledger) missedIn(ctx context.Context, js jetstream.JetStream, seen map[string]struct{}, filter string, visit func(k string, value []byte, rev uint64, stored time.Time) error) error {
	return kvlist.Subjects(ctx, js, LedgerBucket, filter, func(k string) error {
		if _, ok := seen[k]; ok {
			return nil
		}
		e, err := l.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			return nil
		case err != nil:
			return fmt.Errorf("ledger get: %w", err)
		}
		l.clock.observe(e.Created())
		return visit(k, e.Value(), e.Revision(), e.Created())
	})
}
