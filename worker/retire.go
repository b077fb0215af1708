package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

// RetirePrefix carries scheduled retirements: keyrelay.retire.<team>.<key>.
const RetirePrefix = "keyrelay.retire"

// Retirement is one previous version to retire once Due: scheduled in
// JetStream by the rotation that replaced it, so it survives restarts. It
// names the secret and version, never a value.
type Retirement struct {
	TeamID    string    `json:"team_id"`
	KeyID     string    `json:"key_id"`
	Backend   string    `json:"backend"`
	SecretRef string    `json:"secret_ref"`
	Version   string    `json:"version"`
	EventID   string    `json:"event_id"`
	Due       time.Time `json:"due"`
}

// retireConcurrency bounds the retirements one process runs at once.
const retireConcurrency = 4

// retirement decides what a rotation does with the version it replaced:
// with a grace period the version stays readable (and is served by the
// lookup API) until it ends; without one the team's retire_previous_after
// applies (keep, by default). prev is the ledger entry before the
// rotation; name and version are where the new value went.
func (w *Worker) retirement(kw *keyWork, prev *LedgerEntry, name, version string, now time.Time) (*PreviousVersion, *Retirement) {
	if kw.ev.Type != events.KeyRotated || prev.Status == events.StatusDeleted || prev.Provider != kw.res.Backend ||
		prev.SecretRef != name || prev.ProviderVersion == "" || prev.ProviderVersion == version {
		return nil, nil
	}
	r := &Retirement{TeamID: kw.ev.TeamID, KeyID: kw.ev.KeyID, Backend: kw.res.Backend, SecretRef: name,
		Version: prev.ProviderVersion, EventID: kw.ev.ID}
	if g := kw.keyData.GracePeriodSeconds; g > 0 {
		r.Due = now.Add(time.Duration(g) * time.Second)
		return &PreviousVersion{Version: r.Version, SecretRef: name, Until: r.Due}, r
	}
	if kw.res.KeepPrevious {
		return nil, nil
	}
	r.Due = now.Add(kw.res.RetirePreviousAfter)
	return nil, r
}

// scheduleRetirement stores r in the retirement stream. The message id is
// the rotation's event id, so a redelivered rotation schedules it once.
func (w *Worker) scheduleRetirement(ctx context.Context, r *Retirement) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: RetirePrefix + "." + r.TeamID + "." + r.KeyID, Data: b, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, "retire-"+r.EventID)
	if _, err := w.d.JS.PublishMsg(ctx, m, jetstream.WithExpectStream(RetireStream)); err != nil {
		return fmt.Errorf("schedule the retirement of version %s: %w", r.Version, err)
	}
	return nil
}

// runRetirements consumes due retirements until ctx ends. A retirement
// not yet due is handed back until it is; one whose backend fails is
// retried with backoff for as long as it takes (it is never dropped: a
// previous value must not outlive its grace period because a backend was
// down). Only a permanent refusal (the secret is not keyrelay's, the
// version became current) ends it unretired, logged.
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
				w.retireOne(ctx, msg)
			}()
		}
	}
}

func (w *Worker) retireOne(ctx context.Context, msg jetstream.Msg) {
	var r Retirement
	if err := json.Unmarshal(msg.Data(), &r); err != nil || events.ValidateID("team_id", r.TeamID) != nil ||
		events.ValidateID("key_id", r.KeyID) != nil || r.SecretRef == "" || r.Version == "" || r.Backend == "" {
		w.log.Error("retirements: malformed retirement dropped", zap.String("subject", msg.Subject()))
		_ = msg.Term()
		return
	}
	if d := time.Until(r.Due); d > 0 {
		_ = msg.NakWithDelay(d)
		return
	}
	log := w.log.With(zap.String("team", r.TeamID), zap.String("key", r.KeyID), zap.String("backend", r.Backend),
		zap.String("version", r.Version))
	md, _ := msg.Metadata()
	var n uint64 = 1
	if md != nil {
		n = md.NumDelivered
	}
	retry := func(err error) {
		d := w.retry.redeliveryDelay(min(n, 8), providers.RetryAfter(err))
		lvl := zap.WarnLevel
		if errors.Is(err, providers.ErrOwnLimit) {
			// Waiting behind the gateway's calls for the provider quota.
			lvl = zap.DebugLevel
		}
		log.Log(lvl, "retirements: retrying", zap.Uint64("attempts", n), zap.Duration("in", d), zap.String("reason", sanitize(err)))
		_ = msg.NakWithDelay(d)
	}
	res := w.d.Settings.ResolveBackend(w.teams.Cached(r.TeamID).Settings, r.Backend)
	p, err := w.provider(ctx, res)
	if err != nil {
		retry(err)
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
	err = rt.Retire(cctx, providers.RetireRequest{Name: r.SecretRef, Version: r.Version,
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
