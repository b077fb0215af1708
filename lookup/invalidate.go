package lookup

import (
	"context"
	"sync"

	gojson "github.com/goccy/go-json"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/client"
	"github.com/keyrelay/keyrelay/events"
)

// Apply applies one confirmation to the cache: stored and rotated replace
// the key's entry (dropped, then reloaded in the background if it was
// cached and positive), deleted drops it, and a team settings change drops
// every entry of the team (its backend or options may have changed). The
// global entry under the secret's provider-side name is treated the same
// way, for gateways that read virtual keys by name.
//
// A confirmation marked duplicate is applied like any other: when a worker
// stops after the ledger commit and before the confirmation, the event's
// only confirmation is the duplicate its redelivery publishes, and the
// cache must not keep the old value. Applying one twice costs at most a
// reload.
func (s *Service) Apply(c *events.Confirmation) {
	switch {
	case c.EventType.IsSettings():
		switch c.Status {
		case events.StatusStored, events.StatusDeleted:
		default:
			return
		}
		if sf, ok := s.loader.(settingsFollower); ok && c.TeamID != "" {
			sf.settingsApplied(c.TeamID, c.Generation)
		}
		prefix := Scope{Team: c.TeamID}.cacheKey("")
		for k := range s.cache.Keys() {
			if strings.HasPrefix(k, prefix) {
				s.cache.Invalidate(k)
			}
		}
		s.m.invalidated.WithLabelValues("settings").Inc()
		return
	case c.Status == events.StatusStored, c.Status == events.StatusRotated, c.Status == events.StatusDeleted:
	default:
		return
	}
	if c.TeamID == "" || c.KeyID == "" {
		return
	}
	sc := Scope{Team: c.TeamID}
	s.replace(sc, c.KeyID, c.Generation, c.Status == events.StatusDeleted)
	ref := ""
	if c.SecretRef != "" {
		ref = Scope{Global: true}.cacheKey(strings.TrimPrefix(c.SecretRef, "/"))
		s.replace(Scope{Global: true}, strings.TrimPrefix(c.SecretRef, "/"), 0, c.Status == events.StatusDeleted)
	}
	// The key's secret read under other global names: its name before a
	// rename (the confirmation names only the new one; the old secret is
	// deleted), or before the team's naming changed.
	for _, k := range s.owned.take(ownerKey(c.TeamID, c.KeyID)) {
		if k != ref {
			s.cache.Invalidate(k)
		}
	}
	// Counted once applied: whoever watches the count (the tests'
	// fixture) may then rely on the cache having dropped the entry.
	s.m.invalidated.WithLabelValues(string(c.Status)).Inc()
}

// settingsFollower is a Loader that reads team settings from a copy of its
// own (Backend): told of each applied settings change, it does not load a
// team's names under older settings than that.
type settingsFollower interface {
	settingsApplied(team string, gen uint64)
}

// dropUndecodable handles a confirmation that could not be decoded: what
// it changed is unknown, so the entries it may concern are dropped (the
// key's, named by its subject, and the global scope's, which are by
// secret name), or all of them when the subject names no valid team. It
// is logged with its subject and sequence only: nothing of its bytes, nor
// the decoder's error, which may quote them.
func (s *Service) dropUndecodable(subject string, seq uint64) {
	s.m.invalidated.WithLabelValues("undecodable").Inc()
	s.log.Warn("lookup: a confirmation could not be decoded; the entries it may concern are dropped",
		zap.String("subject", subject), zap.Uint64("stream_seq", seq))
	tokens := strings.Split(strings.TrimPrefix(subject, events.ConfirmationsPrefix+"."), ".")
	if !strings.HasPrefix(subject, events.ConfirmationsPrefix+".") || len(tokens) < 2 || events.ValidateID("team_id", tokens[0]) != nil {
		s.cache.InvalidateAll()
		return
	}
	prefixes := []string{Scope{Global: true}.cacheKey("")}
	if key := tokens[1]; key == events.NoKey || events.ValidateID("key_id", key) != nil {
		prefixes = append(prefixes, Scope{Team: tokens[0]}.cacheKey(""))
	} else {
		s.cache.Invalidate(Scope{Team: tokens[0]}.cacheKey(key))
	}
	for k := range s.cache.Keys() {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				s.cache.Invalidate(k)
			}
		}
	}
}

func (s *Service) replace(sc Scope, name string, gen uint64, deleted bool) {
	key := sc.cacheKey(name)
	old, ok := s.cache.GetIfPresent(key)
	if ok && !deleted && gen > 0 && old.err == nil && old.generation >= gen {
		return // the cache already holds this generation or a newer one
	}
	s.cache.Invalidate(key)
	if !ok || deleted || old.err != nil {
		return
	}
	// The entry was in use: load the new value now so the next lookup is a
	// hit. Bounded: when too many reloads run, the next lookup loads.
	select {
	case s.rewarm <- struct{}{}:
		go func() {
			defer func() { <-s.rewarm }()
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
			defer cancel()
			_, _ = s.cache.Get(ctx, key, s.loaderFor(sc, name))
		}()
	default:
	}
}

// setStreamUp records whether confirmations are being followed. Coming
// back up empties the cache: confirmations published while this instance
// could not see them may have replaced values it holds.
func (s *Service) setStreamUp(up bool) {
	if s.streamUp.Swap(up) == up {
		return
	}
	if up {
		s.cache.InvalidateAll()
		s.m.streamUp.Set(1)
	} else {
		s.m.streamUp.Set(0)
	}
}

// Follow applies every new confirmation to the cache until ctx ends,
// following the confirmations stream with an ordered consumer (each
// instance sees every confirmation). While the connection is down, or the
// consumer must be recreated, hits are revalidated against the backend.
func (s *Service) Follow(ctx context.Context, js jetstream.JetStream) {
	// Until the consumer exists nothing is followed: the consumer starts
	// at the stream's end, so a confirmation published before it is never
	// seen. Values cached meanwhile (serve answers lookups from start-up)
	// are revalidated, and dropped once it is up (setStreamUp).
	s.setStreamUp(false)
	nc := js.Conn()
	status := nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case st := <-status:
				// Back up: the ordered consumer resumes where it was, and
				// the cache starts empty.
				s.setStreamUp(st == nats.CONNECTED)
			}
		}
	}()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 100*time.Millisecond, 5*time.Second, 0
	var last uint64
	for ctx.Err() == nil {
		err := s.follow(ctx, js, &last)
		if ctx.Err() != nil {
			return
		}
		s.setStreamUp(false)
		s.log.Warn("lookup: following confirmations failed; cached values are revalidated until it recovers", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(b.NextBackOff()):
		}
	}
}

// follow runs one ordered consumer from after *last (or from the stream's
// end when nothing was seen yet: the cache is empty then, so older
// confirmations change nothing).
func (s *Service) follow(ctx context.Context, js jetstream.JetStream, last *uint64) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy}
	if *last > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, *last+1
	}
	cons, err := js.OrderedConsumer(ctx, client.ConfirmationsStream, cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	s.setStreamUp(true)
	for {
		m, err := it.Next()
		if err != nil {
			return err
		}
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			*last, seq = md.Sequence.Stream, md.Sequence.Stream
		}
		var c events.Confirmation
		if err := gojson.Unmarshal(m.Data(), &c); err != nil {
			s.dropUndecodable(m.Subject(), seq)
			continue
		}
		s.Apply(&c)
	}
}

// ownerKey names a keyrelay key in ownerIndex.
func ownerKey(team, key string) string { return team + "\x00" + key }

// ownerIndex maps a keyrelay key (ownerKey) to the global entries whose
// value was read from its secret, by cache key. An entry leaves it when
// the cache drops it (OnDeletion; only if the index still holds that very
// entry, since a reload of the name may have replaced it already) or when
// the key's confirmation drops it (take).
type ownerIndex struct {
	mu sync.Mutex
	m  map[string]map[string]*entry
}

func (x *ownerIndex) add(owner, key string, e *entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = map[string]map[string]*entry{}
	}
	ks := x.m[owner]
	if ks == nil {
		ks = map[string]*entry{}
		x.m[owner] = ks
	}
	ks[key] = e
}

func (x *ownerIndex) remove(owner, key string, e *entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ks := x.m[owner]
	if ks[key] != e {
		return
	}
	delete(ks, key)
	if len(ks) == 0 {
		delete(x.m, owner)
	}
}

// take returns the cache keys of owner's entries and forgets them.
func (x *ownerIndex) take(owner string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	ks := x.m[owner]
	if len(ks) == 0 {
		return nil
	}
	delete(x.m, owner)
	out := make([]string, 0, len(ks))
	for k := range ks {
		out = append(out, k)
	}
	return out
}
