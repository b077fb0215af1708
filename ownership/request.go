package ownership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/internal/ctxtime"
)

// Claims requests: a process that writes keys by claiming them (the
// recovery commands) cannot be seen by a holder that writes without
// claims. It asks the holder to claim too, through a request record
// ("<key>.claims.<requester>") that it renews like a lease; the holder
// stops starting claimless actions, waits for those under way, and
// acknowledges in "<key>.ack". The requester writes only once granted:
// acknowledged by the current holder, or with no live holder (a holder
// reads the requests after it acquires the lease and before its first
// claimless action, so one that acquires later sees the request).

// RequestConfig describes one claims request.
type RequestConfig struct {
	// Key is the lease's key. Required.
	Key string
	// Requester names the requesting process: unique per process start,
	// 1 to 64 of [A-Za-z0-9_-]. Required.
	Requester string
	// TTL: how long the request stands without renewal (the holder then
	// forgets it). Default DefaultTTL; at least MinTTL and at most
	// MaxRecordTTL.
	TTL time.Duration
	// RenewEvery: default TTL/4; less than TTL/2.
	RenewEvery time.Duration
	// Logger: default none.
	Logger *zap.Logger
	// Conn is the connection kv was opened over. Granted reads the lease
	// record through it from the bucket stream's leader (leaderget.go).
	// Without it the read is kv's direct get, which on a replicated bucket
	// any replica answers, one that may lag and grant the request while a
	// holder writes without claims: set it unless the bucket has one
	// replica.
	Conn *nats.Conn
}

func (c *RequestConfig) setDefaults() { timingDefaults(&c.TTL, &c.RenewEvery, &c.Logger) }

// Validate names the first bad field.
func (c *RequestConfig) Validate() error {
	lc := Config{Key: c.Key, Holder: c.Requester, TTL: c.TTL, RenewEvery: c.RenewEvery}
	if err := lc.Validate(); err != nil {
		return err
	}
	if !validRequester(c.Requester) {
		return errors.New("ownership: requester must be 1 to 64 of [A-Za-z0-9_-]")
	}
	return nil
}

// RequesterName makes a valid requester name of s (a host and pid, a
// worker id): runs of other bytes become one '_', and a longer name keeps
// its last 64 bytes (the unique part of an id is at its end).
func RequesterName(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b = append(b, c)
		} else if len(b) == 0 || b[len(b)-1] != '_' {
			b = append(b, '_')
		}
	}
	if len(b) > 64 {
		b = b[len(b)-64:]
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

func validRequester(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func requestPrefix(key string) string { return key + ".claims." }
func ackKey(key string) string        { return key + ".ack" }

// ack is the holder's acknowledgement: it claims keys for as long as the
// requests it names (at the revisions it saw, or later ones) stay live.
type ack struct {
	Holder   string            `json:"holder"`
	Nonce    uint64            `json:"nonce"`
	Requests map[string]uint64 `json:"requests"`
}

func parseAck(b []byte) (a ack, ok bool) {
	if len(b) == 0 || len(b) > 64*MaxRecordBytes || json.Unmarshal(b, &a) != nil || a.Holder == "" {
		return ack{}, false
	}
	return a, true
}

// Request is a requester's side of a claims request.
type Request struct {
	kv  jetstream.KeyValue
	cfg RequestConfig
	log *zap.Logger

	mu       sync.Mutex
	deadline time.Time
	since    uint64 // revision of the request's first write since it last lapsed
	// grantedLife is the life (since) Granted last answered for; 0: none.
	grantedLife uint64
	stored      chan struct{}
	isStored    bool
	// lastRev and lastSent: the revision and send time of the request's
	// last stored write (currentRecord).
	lastRev  uint64
	lastSent time.Time
}

// NewRequest returns a request; it is stored once Run runs.
func NewRequest(kv jetstream.KeyValue, cfg RequestConfig) (*Request, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Request{kv: kv, cfg: cfg, stored: make(chan struct{}),
		log: cfg.Logger.With(zap.String("lease", cfg.Key), zap.String("requester", cfg.Requester))}, nil
}

func (r *Request) recordKey() string { return requestPrefix(r.cfg.Key) + r.cfg.Requester }

// Run stores the request and renews it until ctx ends, then deletes it:
// cancel ctx only after the work done under the request has stopped.
func (r *Request) Run(ctx context.Context) error {
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r.mu.Lock()
		r.deadline = time.Time{}
		r.mu.Unlock()
		if err := r.kv.Delete(dctx, r.recordKey()); err != nil {
			r.log.Warn("claims request not deleted; the holder forgets it after its ttl", zap.Error(err))
		}
	}()
	value, _ := json.Marshal(record{Holder: r.cfg.Requester, TTLMs: r.cfg.TTL.Milliseconds()})
	for {
		sent := time.Now()
		actx, cancel := context.WithTimeout(ctx, r.cfg.RenewEvery)
		rev, err := r.kv.Put(actx, r.recordKey(), value)
		cancel()
		next := r.cfg.RenewEvery - time.Since(sent)
		if err == nil {
			r.mu.Lock()
			if !time.Now().Before(r.deadline) {
				r.since = rev // a new life: earlier acknowledgements no longer count
			}
			r.deadline = sent.Add(r.cfg.TTL - r.cfg.TTL/10)
			r.lastRev, r.lastSent = rev, sent
			if !r.isStored {
				r.isStored = true
				close(r.stored)
			}
			r.mu.Unlock()
		} else if ctx.Err() == nil {
			next = min(max(r.cfg.RenewEvery/4, 10*time.Millisecond), time.Second)
		}
		if err := ctxtime.Sleep(ctx, max(next, 0)); err != nil {
			return nil
		}
	}
}

// Deadline is when work under the request must have ended unless the
// request is renewed meanwhile; zero when it is not stored.
func (r *Request) Deadline() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !time.Now().Before(r.deadline) {
		return time.Time{}
	}
	return r.deadline
}

// GrantedUntil is when work under the request must end by, or zero when
// it may not go on: the request lapsed (its renewals failed for so long
// that a holder may have forgotten it), or Granted has not answered for
// the request's current life. A lapsed request that is stored again is a
// new life that the holder has not acknowledged: a holder that forgot
// the old one may be writing without claims, so GrantedUntil stays zero
// until Granted returns again. Non-blocking; call it before each key's
// work, and bound the work by what it returns.
func (r *Request) GrantedUntil() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.grantedLife == 0 || r.grantedLife != r.since || !time.Now().Before(r.deadline) {
		return time.Time{}
	}
	return r.deadline
}

// ErrRequestLapsed: the request's renewals failed for so long that a
// holder may have forgotten it; wait for Granted again.
var ErrRequestLapsed = errors.New("ownership: the claims request lapsed")

// Granted waits until the requester may write by claims: the current
// holder has acknowledged the request, or no process holds the lease. It
// returns the deadline the work must end by unless the request is renewed
// (then GrantedUntil says the later one; after ErrRequestLapsed, or when
// GrantedUntil is zero, call Granted again).
func (r *Request) Granted(ctx context.Context) (time.Time, error) {
	select {
	case <-r.stored:
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
	var seen observation
	for {
		r.mu.Lock()
		deadline, since := r.deadline, r.since
		r.mu.Unlock()
		if !time.Now().Before(deadline) {
			return time.Time{}, ErrRequestLapsed
		}
		ok, err := r.granted(ctx, since, &seen)
		if err != nil && ctx.Err() != nil {
			return time.Time{}, ctx.Err()
		}
		if ok {
			r.mu.Lock()
			same := r.since == since
			if same {
				r.grantedLife = since
			}
			r.mu.Unlock()
			if same {
				if d := r.GrantedUntil(); !d.IsZero() {
					return d, nil
				}
			}
			continue // a new life began meanwhile, or the deadline passed: ask again
		}
		if err := ctxtime.Sleep(ctx, r.cfg.RenewEvery/2); err != nil {
			return time.Time{}, err
		}
	}
}

func (r *Request) granted(ctx context.Context, since uint64, seen *observation) (bool, error) {
	gctx, cancel := context.WithTimeout(ctx, r.cfg.RenewEvery)
	defer cancel()
	// From the leader (leaderget.go): a replica that lags can show the
	// record released, or standing still at an old revision, while a
	// holder writes without claims. A holder that acquires after the read
	// reads this request before it acts without claims. asked: the record
	// is shown as it stood at that time or later.
	asked := time.Now()
	var e leaderEntry
	var err error
	if r.cfg.Conn != nil {
		e, err = leaderKVGet(gctx, r.cfg.Conn, r.kv.Bucket(), r.cfg.Key)
	} else {
		e, asked, err = r.currentRecord(gctx)
		if errors.Is(err, errLagging) {
			return false, nil
		}
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return true, nil // no holder: the next one reads the request first
	}
	if err != nil {
		return false, err
	}
	rec, readable := parseRecord(e.value)
	if readable && rec.Holder == "" {
		return true, nil // released
	}
	now := time.Now()
	wait := r.cfg.TTL
	if readable {
		wait = max(wait, rec.ttl())
	}
	if !seen.valid || seen.rev != e.rev {
		*seen = observation{valid: true, present: true, rev: e.rev, at: now, wait: wait}
	}
	// From the first answer showing this revision to the time this
	// request was sent (the server answered after that): a late answer
	// must not stretch the span. A renewal the holder sent before its
	// deadline and that landed after this read is then received after the
	// deadline, which the holder counts as a lapse (Lease.hold): it reads
	// the requests again before acting without claims.
	if asked.Sub(seen.at) >= max(seen.wait, wait) {
		return true, nil // the holder stopped renewing a TTL ago: its actions ended
	}
	if !readable {
		return false, nil
	}
	// The acknowledgement may come from any replica: one that lags shows
	// an older one or none. An older one of the same holder and nonce
	// that names this life of the request still holds (the holder has
	// claimed since it wrote it, and goes back to claimless acting only
	// once this life has ended), and none only delays the grant.
	ae, err := r.kv.Get(gctx, ackKey(r.cfg.Key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	a, ok := parseAck(ae.Value())
	if !ok || a.Holder != rec.Holder || a.Nonce != rec.Nonce {
		return false, nil
	}
	rev, ok := a.Requests[r.cfg.Requester]
	return ok && rev >= since, nil
}

// errLagging: the record was read from a replica that has not stored the
// request's last write yet.
var errLagging = errors.New("ownership: read from a replica that lags")

// currentRecord reads the lease record without a connection to the
// stream's leader (RequestConfig.Conn): by one watch of the record and of
// this request's own, whose snapshot comes from one replica (a watch's
// consumer reads its own peer's copy). When the snapshot holds the
// request's last stored write, that replica has stored everything before
// it (a replica stores in order), and the record is shown as it stood at
// least when that write was sent (asOf); otherwise the replica lags and
// it returns errLagging. jetstream.ErrKeyNotFound: no record (or a delete
// marker).
func (r *Request) currentRecord(ctx context.Context) (e leaderEntry, asOf time.Time, err error) {
	r.mu.Lock()
	rev, asOf := r.lastRev, r.lastSent
	r.mu.Unlock()
	w, err := r.kv.WatchFiltered(ctx, []string{r.cfg.Key, r.recordKey()}, jetstream.IgnoreDeletes())
	if err != nil {
		return leaderEntry{}, time.Time{}, err
	}
	// As in readRequests: not on the caller's time when NATS has just
	// gone away.
	defer func() { go func() { _ = w.Stop() }() }()
	found, current := false, false
	for {
		select {
		case u, ok := <-w.Updates():
			switch {
			case !ok:
				return leaderEntry{}, time.Time{}, errors.New("ownership: record watch closed")
			case u == nil && !current:
				return leaderEntry{}, time.Time{}, errLagging
			case u == nil && !found:
				return leaderEntry{}, asOf, jetstream.ErrKeyNotFound
			case u == nil:
				return e, asOf, nil
			case u.Key() == r.cfg.Key:
				e, found = leaderEntry{value: u.Value(), rev: u.Revision()}, true
			default:
				current = rev != 0 && u.Revision() >= rev
			}
		case <-ctx.Done():
			return leaderEntry{}, time.Time{}, ctx.Err()
		}
	}
}

// String names the request for logs.
func (r *Request) String() string {
	return fmt.Sprintf("claims request %s on %s", r.cfg.Requester, r.cfg.Key)
}

// maxRequests bounds the requests a holder reads; with more, it stays in
// claims mode and acknowledges none.
const maxRequests = 256

// serveRequests reads the claims requests and sets the holder's mode: no
// live request, claimless (a new generation when it was not); any live
// request, claims, acknowledged once the claimless actions have ended.
func (l *Lease) serveRequests(ctx context.Context) time.Duration {
	live, complete, err := l.readRequests(ctx)
	if err != nil {
		return l.retry() // the mode stays as it is
	}
	l.mu.Lock()
	if len(live) == 0 && complete {
		if !l.claimless && l.holding {
			l.claimless = true
			l.generation++
			l.log.Info("acting without claims", zap.Uint64("generation", l.generation))
		}
		l.mu.Unlock()
		l.acked = nil
		return l.cfg.RenewEvery
	}
	if l.claimless {
		l.claimless = false
		l.drainBy = l.deadline
		l.log.Info("claims requested; claiming keys", zap.Int("requests", len(live)))
	}
	drained := l.inflight == 0 || !time.Now().Before(l.drainBy)
	holder, nonce := l.cfg.Holder, l.nonce
	l.mu.Unlock()
	if !complete || !drained {
		return l.retry()
	}
	if sameRequests(live, l.acked) {
		return l.cfg.RenewEvery
	}
	b, _ := json.Marshal(ack{Holder: holder, Nonce: nonce, Requests: live})
	actx, cancel := context.WithTimeout(ctx, l.cfg.RenewEvery)
	_, err = l.kv.Put(actx, ackKey(l.cfg.Key), b)
	cancel()
	if err != nil {
		return l.retry()
	}
	l.acked = live
	return l.cfg.RenewEvery
}

func sameRequests(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w < v {
			return false
		}
	}
	return true
}

// errStaleRequests: the requests were read from a replica that has not
// stored the holder's last write yet; read again.
var errStaleRequests = errors.New("ownership: claims requests read from a replica that lags")

// readRequests returns the live claims requests with their revisions; a
// request whose record has not changed for its TTL is forgotten. complete
// is false when there were more than maxRequests.
func (l *Lease) readRequests(ctx context.Context) (live map[string]uint64, complete bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, l.cfg.RenewEvery)
	defer cancel()
	// The watch's consumer reads one replica's copy, which may lag (a
	// consumer is placed on any of the stream's peers), and a request
	// stored before this holder acquired, that a requester was granted on
	// because there was no holder yet, must be in it. So the lease record
	// is watched too: a snapshot that holds our last write (rev) holds
	// everything stored before it (a replica stores in order). Such a
	// snapshot shows the requests as they stood at least until that
	// write's send time (asOf), not until now: a renewal stored after it
	// may be missing, so a request's standstill is counted to asOf.
	l.mu.Lock()
	rev, asOf := l.rev, l.revSent
	l.mu.Unlock()
	w, err := l.kv.WatchFiltered(wctx, []string{requestPrefix(l.cfg.Key) + "*", l.cfg.Key}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, false, err
	}
	// Stopping deletes the watch's consumer by a request that waits out
	// the client's default timeout when NATS has just gone away: not on
	// the renewal loop.
	defer func() { go func() { _ = w.Stop() }() }()
	live, complete = map[string]uint64{}, true
	present := map[string]bool{}
	current := false // the snapshot holds our write at rev
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, false, errors.New("ownership: request watch closed")
			}
			if e == nil {
				if !current {
					return nil, false, errStaleRequests
				}
				for name := range l.reqSeen {
					if !present[name] {
						delete(l.reqSeen, name)
					}
				}
				return live, complete, nil
			}
			if e.Key() == l.cfg.Key {
				current = e.Revision() >= rev
				continue
			}
			name := e.Key()[len(requestPrefix(l.cfg.Key)):]
			if len(present) >= maxRequests {
				complete = false
				continue
			}
			present[name] = true
			if l.reqSeen == nil {
				l.reqSeen = map[string]observation{}
			}
			wait := l.cfg.TTL
			if r, ok := parseRecord(e.Value()); ok {
				wait = max(wait, r.ttl())
			}
			o, seen := l.reqSeen[name]
			if !seen || o.rev != e.Revision() {
				// A revision first seen stands still from when it was
				// received, not from when the read was asked for: a late
				// answer can show a renewal sent after that, whose sender
				// counts its deadline from its send time.
				o = observation{valid: true, present: true, rev: e.Revision(), at: time.Now(), wait: wait}
				l.reqSeen[name] = o
			}
			if asOf.Sub(o.at) < max(o.wait, wait) {
				live[name] = e.Revision()
			}
		case <-wctx.Done():
			return nil, false, wctx.Err()
		}
	}
}
