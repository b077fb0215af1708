package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

// RetirePrefix is the root of the retirement stream's subjects:
//
//   - keyrelay.retire.due.<team>.<key>: retirements that are due (or due
//     within retireHorizon), taken by the consumer;
//   - keyrelay.retire.at.<team>.<key>.<event id>: retirements due later,
//     stored as message schedules (nats-server 2.12+, ADR-51) that the
//     server republishes to the due subject when they are due, then
//     removes. The consumer does not take them, so a retirement due in 30
//     days holds no consumer slot for 30 days;
//   - keyrelay.retire.<team>.<key>: retirements stored by earlier
//     versions, still taken (and rescheduled when not due soon).
//
// Ids are validated subject tokens (events.ValidateID), so the token
// count tells the three apart whatever a team or key is called.
const RetirePrefix = "keyrelay.retire"

const (
	retireDueToken = "due"
	retireAtToken  = "at"
)

// retireFilters are the retirement consumer's subjects: due retirements
// and those stored by earlier versions (four tokens). A filter costs the
// server a subject-tree walk per delivery; retirements are delivered about
// once each, unlike the events lanes, so two filters cost little.
var retireFilters = []string{RetirePrefix + ".*.*", RetirePrefix + "." + retireDueToken + ".*.*"}

func retireDueSubject(team, key string) string {
	return RetirePrefix + "." + retireDueToken + "." + team + "." + key
}

func retireAtSubject(team, key, eventID string) string {
	return RetirePrefix + "." + retireAtToken + "." + team + "." + key + "." + eventID
}

// retireSubjectIDs returns the team and key a retirement's subject names:
// a due subject, or the subject an earlier version stored it under.
func retireSubjectIDs(subj string) (team, key string, ok bool) {
	rest, found := strings.CutPrefix(subj, RetirePrefix+".")
	if !found {
		return "", "", false
	}
	t := strings.Split(rest, ".")
	switch {
	case len(t) == 2:
		return t[0], t[1], true
	case len(t) == 3 && t[0] == retireDueToken:
		return t[1], t[2], true
	}
	return "", "", false
}

// Message schedule headers (ADR-51, nats-server 2.12+). The server strips
// them from the message it publishes when the schedule fires, marks that
// message with Nats-Scheduler and Nats-Schedule-Next: purge, and removes
// the schedule message when it stores it.
const (
	scheduleHeader       = "Nats-Schedule"
	scheduleTargetHeader = "Nats-Schedule-Target"
)

// retireAttemptsHeader carries the attempts a retirement had before it was
// rescheduled, so its backoff keeps growing across schedules (the server
// keeps other headers when a schedule fires). Only a backoff input: a
// hostile value is clamped like any other attempt count.
const retireAttemptsHeader = "Keyrelay-Retire-Attempts"

// retireHorizon: a retirement due within it is published (or handed back)
// straight to its due subject and waits in the consumer with
// NakWithDelay; one due later becomes a message schedule and leaves the
// consumer's pending set (its MaxAckPending) until it is due.
const retireHorizon = 10 * time.Second

// retireConcurrency bounds the retirements one process runs at once;
// retireBackendSlots bounds those of one backend, so a hung backend
// leaves the other slots to the other backends. A retirement whose
// backend has no slot free is handed back for worker.call_timeout (at
// least retireBusyDelay): the time a slot can stay taken. Beyond
// retireHorizon that is a message schedule, so many retirements of a
// hung backend do not fill the consumer's pending set either.
const (
	retireConcurrency  = 4
	retireBackendSlots = retireConcurrency / 2
	retireBusyDelay    = time.Second
)

// Retirement is one previous version to retire once Due: scheduled in
// JetStream by the rotation that replaced it, so it survives restarts. It
// names the secret and version, never a value.
type Retirement struct {
	TeamID  string `json:"team_id"`
	KeyID   string `json:"key_id"`
	Backend string `json:"backend"`
	// Placement is the team options the secret was written with (nil: a
	// retirement scheduled before they were recorded, retired with the
	// team's current ones).
	Placement *Placement `json:"placement,omitempty"`
	SecretRef string     `json:"secret_ref"`
	Version   string     `json:"version"`
	// ReplacedBy is the provider's stamp of the write that replaced
	// Version (providers.PutResult.Stamp; "" when it gives none): a
	// backend that numbers a re-created secret's versions from 1 again
	// (Google) retires Version only if it predates that write.
	ReplacedBy string    `json:"replaced_by,omitempty"`
	EventID    string    `json:"event_id"`
	Due        time.Time `json:"due"`
}

// retirement decides what a rotation does with the version it replaced:
// with a grace period the version stays readable (and is served by the
// lookup API) until it ends; without one the team's retire_previous_after
// applies (keep, by default). prev is the ledger entry before the
// rotation; name and version are where the new value went, stamp the
// provider's stamp of that write (PutResult.Stamp).
func (w *Worker) retirement(kw *keyWork, prev *LedgerEntry, name, version, stamp string, now time.Time) (*PreviousVersion, *Retirement) {
	if kw.ev.Type != events.KeyRotated || prev.Status == events.StatusDeleted || prev.Provider != kw.res.Backend ||
		!samePlace(prev.Placement, kw.place()) || prev.SecretRef != name || prev.ProviderVersion == "" || prev.ProviderVersion == version {
		return nil, nil
	}
	r := &Retirement{TeamID: kw.ev.TeamID, KeyID: kw.ev.KeyID, Backend: kw.res.Backend, Placement: kw.place(), SecretRef: name,
		Version: prev.ProviderVersion, ReplacedBy: stamp, EventID: kw.ev.ID}
	if g := kw.keyData.GracePeriodSeconds; g > 0 {
		r.Due = now.Add(graceDuration(g))
		return &PreviousVersion{Version: r.Version, SecretRef: name, Until: r.Due}, r
	}
	if kw.res.KeepPrevious {
		return nil, nil
	}
	r.Due = now.Add(kw.res.RetirePreviousAfter)
	return nil, r
}

// graceDuration converts a grace period in seconds, saturating at
// events.MaxGracePeriodSeconds: validation refuses more, and an unchecked
// conversion of 9223372037 s or more would wrap to a negative duration and
// retire the previous version at once.
func graceDuration(seconds int64) time.Duration {
	return time.Duration(min(max(seconds, 0), events.MaxGracePeriodSeconds)) * time.Second
}

// scheduleRetirement stores r in the retirement stream. The message id is
// the rotation's event id, so a redelivered rotation schedules it once.
func (w *Worker) scheduleRetirement(ctx context.Context, r *Retirement) error {
	if err := w.publishRetirement(ctx, r, "retire-"+r.EventID, 0); err != nil {
		return fmt.Errorf("schedule the retirement of version %s: %w", r.Version, err)
	}
	return nil
}

// publishRetirement stores r: on its due subject when it is due within
// retireHorizon, else as a message schedule firing at r.Due (rounded up
// to the second) onto that subject. A schedule's subject is unique per
// rotation and the server rolls it up, so publishing one again replaces
// it. attempts, when not 0, is carried for the backoff.
func (w *Worker) publishRetirement(ctx context.Context, r *Retirement, msgID string, attempts uint64) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	due := retireDueSubject(r.TeamID, r.KeyID)
	m := &nats.Msg{Subject: due, Data: b, Header: nats.Header{}}
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if attempts > 0 {
		m.Header.Set(retireAttemptsHeader, strconv.FormatUint(attempts, 10))
	}
	if time.Until(r.Due) > retireHorizon {
		at := r.Due.UTC()
		if at.Nanosecond() != 0 {
			at = at.Truncate(time.Second).Add(time.Second)
		}
		m.Subject = retireAtSubject(r.TeamID, r.KeyID, r.EventID)
		m.Header.Set(scheduleHeader, "@at "+at.Format(time.RFC3339))
		m.Header.Set(scheduleTargetHeader, due)
	}
	_, err = w.d.JS.PublishMsg(ctx, m, jetstream.WithExpectStream(RetireStream))
	return err
}

// runRetirements consumes due retirements until ctx ends. A retirement
// due within retireHorizon is handed back until it is; one due later
// (stored by an earlier version, or retried after a long backoff) is
// rescheduled as a message schedule and leaves the consumer's pending
// set. One whose backend fails is retried with backoff for as long as it
// takes (it is never dropped: a previous value must not outlive its grace
// period because a backend was down). A retirement that is malformed,
// whose body does not match its subject, or whose backend is unknown or
// cannot be opened (not configured) is terminated with a logged reason and
// counted (keyrelay_retirements_total{outcome="invalid"|"unknown_backend"}):
// never acted on, never redelivered. A permanent refusal (the secret is
// not keyrelay's, the version became current) ends it unretired, logged.
func (w *Worker) runRetirements(ctx context.Context) {
	cons, err := w.d.JS.Consumer(ctx, RetireStream, RetireConsumerName)
	for err != nil {
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("retirements: consumer not available; retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		cons, err = w.d.JS.Consumer(ctx, RetireStream, RetireConsumerName)
	}
	slots := &retireSlots{busy: map[string]int{}}
	sem := make(chan struct{}, retireConcurrency)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(retireConcurrency, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for msg := range batch.Messages() {
			sem <- struct{}{}
			w.work.Add(1)
			go func() {
				defer func() { <-sem; w.work.Done() }()
				w.retireOne(ctx, msg, slots)
			}()
		}
	}
}

// retireMaxYears bounds how far ahead a retirement may be due.
const retireMaxYears = 300

// retireSlots counts the retirements running per backend.
type retireSlots struct {
	mu   sync.Mutex
	busy map[string]int
}

func (s *retireSlots) acquire(backend string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[backend] >= retireBackendSlots {
		return false
	}
	s.busy[backend]++
	return true
}

func (s *retireSlots) release(backend string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[backend]--; s.busy[backend] <= 0 {
		delete(s.busy, backend)
	}
}

// maxStampBytes bounds a retirement's replaced_by (a provider's stamp: an
// RFC 3339 time for Google), read back from a stream anyone allowed to
// publish there can write; the provider checks its form.
const maxStampBytes = 64

// parseRetirement decodes and validates a retirement message: every field
// present, ids valid, the team and key those of its subject, the backend
// one this process knows. It returns the metric outcome and reason of a
// refusal.
func (w *Worker) parseRetirement(msg jetstream.Msg) (r Retirement, outcome, reason string) {
	team, key, ok := retireSubjectIDs(msg.Subject())
	switch {
	case !ok:
		return r, "invalid", "not a retirement subject"
	case json.Unmarshal(msg.Data(), &r) != nil:
		return r, "invalid", "not a retirement (JSON)"
	case events.ValidateID("team_id", r.TeamID) != nil || events.ValidateID("key_id", r.KeyID) != nil ||
		events.ValidateID("event_id", r.EventID) != nil:
		return r, "invalid", "team_id, key_id or event_id is not a valid id"
	case r.TeamID != team || r.KeyID != key:
		return r, "invalid", "team_id and key_id differ from the subject's"
	case r.SecretRef == "" || r.Version == "" || r.Backend == "":
		return r, "invalid", "secret_ref, version or backend missing"
	case len(r.ReplacedBy) > maxStampBytes:
		return r, "invalid", "replaced_by is too long to be a provider's stamp"
	case r.Due.After(time.Now().AddDate(retireMaxYears, 0, 0)):
		// Never scheduled by a worker (the longest retire_previous_after,
		// a time.Duration, is 292 years), and past year 9999 not even a
		// schedule could be written for it.
		return r, "invalid", "due too far in the future"
	case !slices.Contains(w.d.Registry.Names(), r.Backend):
		return r, "unknown_backend", "backend is not configured"
	}
	return r, "", ""
}

// dropRetirement terminates msg, never to be redelivered, logged and
// counted. Values from a refused body are clipped: they are hostile.
func (w *Worker) dropRetirement(msg jetstream.Msg, r *Retirement, outcome, reason string) {
	w.m.Retirements.WithLabelValues(outcome).Inc()
	w.log.Error("retirements: retirement dropped, the previous version is not retired", zap.String("reason", reason),
		zap.String("subject", clip(msg.Subject())), zap.String("team", clip(r.TeamID)), zap.String("key", clip(r.KeyID)),
		zap.String("backend", clip(r.Backend)), zap.String("version", clip(r.Version)), zap.String("secret_ref", clip(r.SecretRef)))
	_ = msg.TermWithReason(reason)
}

// clip bounds a hostile string for a log line.
func clip(s string) string {
	const n = 160
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (w *Worker) retireOne(ctx context.Context, msg jetstream.Msg, slots *retireSlots) {
	if strings.HasPrefix(msg.Subject(), RetirePrefix+"."+retireAtToken+".") && strings.Count(msg.Subject(), ".") == 5 {
		// A message schedule: the consumer's filter leaves them out
		// unless someone changed it. Terminating or acking one would
		// delete a pending retirement (work queue); it fires on its own.
		w.log.Error("retirements: the consumer delivers message schedules; its filter was changed (EnsureTopology restores it)",
			zap.String("subject", clip(msg.Subject())))
		_ = msg.NakWithDelay(time.Hour)
		return
	}
	r, outcome, reason := w.parseRetirement(msg)
	if outcome != "" {
		w.dropRetirement(msg, &r, outcome, reason)
		return
	}
	md, _ := msg.Metadata()
	var n uint64 = 1
	if md != nil {
		n = md.NumDelivered
	}
	if a, err := strconv.ParseUint(msg.Headers().Get(retireAttemptsHeader), 10, 32); err == nil {
		n += a
	}
	log := w.log.With(zap.String("team", r.TeamID), zap.String("key", r.KeyID), zap.String("backend", r.Backend),
		zap.String("version", r.Version))
	// later hands the retirement back for d: in the consumer when d is
	// short, else as a message schedule, out of its pending set.
	later := func(d time.Duration, attempts uint64) {
		if d <= retireHorizon {
			_ = msg.NakWithDelay(d)
			return
		}
		rr := r
		if due := time.Now().Add(d); rr.Due.Before(due) {
			rr.Due = due
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := w.publishRetirement(pctx, &rr, "", attempts)
		cancel()
		if err != nil {
			// NATS trouble: keep it, and try again soon.
			log.Warn("retirements: not rescheduled; handed back", zap.Error(err))
			_ = msg.NakWithDelay(retireHorizon)
			return
		}
		_ = msg.Ack()
	}
	if d := time.Until(r.Due); d > 0 {
		later(d, 0)
		return
	}
	retry := func(err error) {
		d := w.retry.redeliveryDelay(min(n, 8), providers.RetryAfter(err))
		lvl := zap.WarnLevel
		if errors.Is(err, providers.ErrOwnLimit) {
			// Waiting behind the gateway's calls for the provider quota.
			lvl = zap.DebugLevel
		}
		log.Log(lvl, "retirements: retrying", zap.Uint64("attempts", n), zap.Duration("in", d), zap.String("reason", sanitize(err)))
		later(d, n)
	}
	if !slots.acquire(r.Backend) {
		// The backend's slots are taken (it may hang): the other
		// backends keep the rest.
		later(max(w.cfg.CallTimeout, retireBusyDelay), n)
		return
	}
	defer slots.release(r.Backend)
	// Where the rotation wrote: the team may have changed its options on
	// the backend since (a Vault namespace or mount), the version has not.
	res := r.Placement.Resolve(w.d.Settings, w.teams.Cached(r.TeamID).Settings, r.Backend)
	p, err := w.provider(ctx, res)
	if err != nil {
		if providers.IsRetryable(err) {
			retry(err)
			return
		}
		// Unknown, or its configuration cannot open it: not transient.
		// Retrying would spin until someone fixed the configuration; the
		// version stays, as with a refusal, and the log says which.
		w.dropRetirement(msg, &r, "unknown_backend", "backend cannot be opened: "+sanitize(err))
		return
	}
	rt, ok := providers.AsRetirer(p)
	if !ok {
		log.Info("retirements: this backend cannot retire versions; its own retention applies")
		_ = msg.Ack()
		return
	}
	// A retirement is background work: it takes only the provider quota
	// the gateway's own calls leave (a bulk rotation's grace periods end
	// together), in this process and across a cluster-wide quota.
	cctx, cancel := context.WithTimeout(providers.WithPriority(ctx, providers.PriorityBulk), w.cfg.CallTimeout)
	err = rt.Retire(cctx, providers.RetireRequest{Name: r.SecretRef, Version: r.Version, ReplacedBy: r.ReplacedBy,
		Owner: providers.Owner{TeamID: r.TeamID, KeyID: r.KeyID}, Adopt: w.cfg.AdoptUnowned})
	cancel()
	switch {
	case err == nil || errors.Is(err, providers.ErrNotFound):
		// Retired, or the secret is gone (deleted or renamed since).
		w.m.Retirements.WithLabelValues("retired").Inc()
		log.Debug("retirements: previous version retired")
		_ = msg.Ack()
	case ctx.Err() != nil:
		_ = msg.Nak()
	case providers.IsRetryable(err):
		w.m.Retirements.WithLabelValues("retry").Inc()
		retry(err)
	default:
		w.m.Retirements.WithLabelValues("refused").Inc()
		log.Warn("retirements: the backend refused; the version stays", zap.String("reason", sanitize(err)))
		_ = msg.Term()
	}
}
