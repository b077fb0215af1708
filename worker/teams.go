package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/settings"
)

// TeamState is what the teams bucket holds for one team.
type TeamState struct {
	Team string `json:"team"`
	// Settings are the team's overrides; nil when none (or deleted).
	Settings *events.TeamSettings `json:"settings,omitempty"`
	// Generation and EventID identify the settings event applied.
	Generation uint64 `json:"generation,omitempty"`
	EventID    string `json:"event_id,omitempty"`
	// AppliedSeq is the highest events-stream sequence of this team's
	// settings subject that has been considered (applied, superseded or
	// rejected). A key event is handled only once AppliedSeq has reached the
	// sequence of the team's last settings message.
	AppliedSeq uint64    `json:"applied_seq"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// ApplyResult says what Teams.Apply did with a settings event.
type ApplyResult int

// Apply results.
const (
	// Applied: the event's settings are now the team's settings.
	Applied ApplyResult = iota
	// AlreadyApplied: this very event had been applied (by another worker's
	// catch-up or an earlier delivery).
	AlreadyApplied
	// Superseded: a newer settings event had been applied.
	Superseded
	// Invalid: the message was not a valid settings event; the sequence is
	// recorded as considered so it never blocks key events.
	Invalid
)

// Teams keeps every team's settings: the KV bucket is the durable copy,
// a watch keeps an in-memory copy in every worker, and Current makes sure a
// key event never runs on settings older than the team's last settings
// message on the events stream.
type Teams struct {
	kv     jetstream.KeyValue
	stream jetstream.Stream
	// nc, when set, reads settings messages from the stream's leader
	// (leaderGet); without it they are read through stream.
	nc *nats.Conn
	// backends, when set (KnownBackends), are the backends a team's
	// settings may name; settings naming another are invalid.
	backends map[string]bool
	log      *zap.Logger
	// corrupt reports entries that cannot be used (nil: only returned).
	corrupt *corruptReporter

	mu    sync.RWMutex
	state map[string]TeamState

	lmu     sync.Mutex
	lookups map[string]*teamLookups
	ready   atomic.Bool
	// CatchUps counts key events that found the watch behind and applied
	// the team's latest settings message themselves.
	CatchUps atomic.Int64
	// Lookups counts the requests for a team's last settings message (one
	// serves every key event of the team received before it started).
	Lookups atomic.Int64
}

// NewTeams builds a team-settings store over the teams bucket and the
// events stream. With nc, the settings messages a key event depends on are
// read from the stream's leader (see leaderGet): on a cluster a direct get
// through stream may come from a replica that lacks the newest ones. A
// process that reads settings for key events passes it; without it (one
// server, tools that only read the bucket) the stream handle is used.
func NewTeams(kv jetstream.KeyValue, stream jetstream.Stream, log *zap.Logger, nc ...*nats.Conn) *Teams {
	t := &Teams{kv: kv, stream: stream, log: log, state: map[string]TeamState{}, lookups: map[string]*teamLookups{}}
	if len(nc) > 0 {
		t.nc = nc[0]
	}
	return t
}

// KnownBackends makes settings that name a backend outside names (the
// registry's) invalid, as settings that can never name a secret are: every
// key event of the team would fail to open its provider and be
// dead-lettered, so the settings event is the one to refuse, and the team
// keeps the settings it had. Every process that applies settings to the
// bucket (the workers, the lookup service catching up) must set the same
// names, so that all of them treat one message alike. Call it before Start.
func (t *Teams) KnownBackends(names []string) {
	t.backends = make(map[string]bool, len(names))
	for _, n := range names {
		t.backends[n] = true
	}
}

// settingsMsg reads one settings message of the events stream: the last
// of subj, or (from > 0) the first of subj at or after from. It returns
// jetstream.ErrMsgNotFound when there is none.
func (t *Teams) settingsMsg(ctx context.Context, subj string, from uint64) (seq uint64, data []byte, err error) {
	if t.nc != nil {
		req := leaderGetRequest{LastBySubj: subj}
		if from > 0 {
			req = leaderGetRequest{Seq: from, NextBySubj: subj}
		}
		m, err := leaderGet(ctx, t.nc, EventsStream, req)
		if err != nil {
			return 0, nil, err
		}
		return m.Seq, m.Data, nil
	}
	var m *jetstream.RawStreamMsg
	if from > 0 {
		m, err = t.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subj))
	} else {
		m, err = t.stream.GetLastMsgForSubject(ctx, subj)
	}
	if err != nil {
		return 0, nil, err
	}
	return m.Sequence, m.Data, nil
}

// Start watches the bucket until ctx ends. It returns once the current
// state is loaded; Ready is true from then on.
func (t *Teams) Start(ctx context.Context) error {
	w, err := t.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", TeamsBucket, err)
	}
	initial := make(chan struct{})
	go func() {
		defer w.Stop()
		loaded := false
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if !loaded {
						loaded = true
						t.ready.Store(true)
						close(initial)
					}
					continue
				}
				t.observe(e)
			}
		}
	}()
	select {
	case <-initial:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *Teams) observe(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		return
	}
	var st TeamState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		t.log.Warn("ignoring corrupt team settings entry", zap.String("key", e.Key()), zap.String("fault", decodeFault(err)))
		return
	}
	// The entry's key says whose it is, not its value: an entry under
	// one key naming another team must not replace that team's
	// settings.
	if events.ValidateID("team_id", st.Team) != nil || kvToken(st.Team) != e.Key() {
		t.log.Warn("ignoring a team settings entry whose team is not its key", zap.String("key", e.Key()))
		if t.corrupt != nil {
			t.corrupt.count.WithLabelValues(TeamsBucket).Inc()
		}
		return
	}
	t.remember(st)
}

func (t *Teams) remember(st TeamState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.state[st.Team]; ok && cur.AppliedSeq > st.AppliedSeq {
		return
	}
	t.state[st.Team] = st
}

// All returns the settings of every team that has some, as last seen by
// the watch.
func (t *Teams) All() map[string]*events.TeamSettings {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[string]*events.TeamSettings, len(t.state))
	for team, st := range t.state {
		if st.Settings != nil {
			out[team] = st.Settings
		}
	}
	return out
}

// Ready reports whether the initial state has been loaded.
func (t *Teams) Ready() bool { return t.ready.Load() }

// Cached returns the in-memory state of team.
func (t *Teams) Cached(team string) TeamState {
	t.mu.RLock()
	defer t.mu.RUnlock()
	st, ok := t.state[team]
	if !ok {
		st.Team = team
	}
	return st
}

// Current returns the settings to use for a key event of team that this
// process received at receivedAt: the state after the team's last settings
// message on the events stream. When the watch has not caught up, it
// applies that message itself.
//
// Finding the last settings message costs a round trip, so concurrent key
// events of one team share lookups: a lookup sent after an event was
// received sees every message stored before that event (the event was
// stored before it was delivered), so its answer is valid for the event.
func (t *Teams) Current(ctx context.Context, team string, receivedAt time.Time) (TeamState, error) {
	return t.CurrentFrom(ctx, team, t.Lookup(team, receivedAt))
}

// CurrentFrom is Current with the lookup of the team's last settings
// message already asked for (Lookup): a key event asks for it on arrival
// and reads the answer once its claim is taken, with no goroutine of its
// own in between. Every request it makes is bounded by
// infraAttemptTimeout (the lookup's own by requestMsg, the catch-up's
// here), so a caller need not bound the attempt with a context of its
// own: most events only wait for a shared lookup, and a timer per event
// for that was measurable.
func (t *Teams) CurrentFrom(ctx context.Context, team string, l *SettingsLookup) (TeamState, error) {
	seq, data, err := l.wait(ctx)
	if err != nil {
		return TeamState{}, fmt.Errorf("team settings: last settings message of %s: %w", team, err)
	}
	if seq == 0 {
		return t.Cached(team), nil
	}
	if st := t.Cached(team); st.AppliedSeq >= seq {
		return st, nil
	}
	// Behind: the reads below are bounded here, so a caller waiting for
	// the lookup alone (which bounds its own request) makes no timer.
	ctx, cancel := context.WithTimeout(ctx, infraAttemptTimeout)
	defer cancel()
	// Maybe only the watch is behind, so read the bucket first.
	st, _, err := t.load(ctx, team)
	if err != nil {
		return TeamState{}, err
	}
	if st.AppliedSeq >= seq {
		t.remember(st)
		return st, nil
	}
	t.CatchUps.Add(1)
	ev, derr := events.Decode(data)
	if derr != nil || !ev.Type.IsSettings() || ev.TeamID != team {
		ev = nil
	}
	st, _, err = t.ApplyThrough(ctx, team, ev, seq)
	return st, err
}

// CurrentIfKnown is Current without I/O: the state it would return when a
// lookup of the team's last settings message that started after
// receivedAt has already ended, and this process's state has applied that
// message. ok is false when Current would have to ask the server.
func (t *Teams) CurrentIfKnown(team string, receivedAt time.Time) (st TeamState, ok bool) {
	t.lmu.Lock()
	var l *SettingsLookup
	if tl := t.lookups[team]; tl != nil {
		l = tl.last
	}
	t.lmu.Unlock()
	if l == nil || !l.start.After(receivedAt) {
		return TeamState{}, false
	}
	if st = t.Cached(team); l.seq != 0 && st.AppliedSeq < l.seq {
		return TeamState{}, false
	}
	return st, true
}

// ApplyThrough applies, in stream order, every settings message of team the
// bucket has not considered yet up to seq, then ev found at seq (nil: the
// message there was invalid). AppliedSeq therefore always means "every
// settings message up to here was considered", whichever worker or key
// event got there first.
func (t *Teams) ApplyThrough(ctx context.Context, team string, ev *events.Event, seq uint64) (TeamState, ApplyResult, error) {
	st, _, res, err := t.applyThrough(ctx, team, ev, seq)
	return st, res, err
}

// applyThrough is ApplyThrough that also returns the state ev's Apply
// replaced (see apply).
func (t *Teams) applyThrough(ctx context.Context, team string, ev *events.Event, seq uint64) (st, prev TeamState, res ApplyResult, err error) {
	cur, _, err := t.load(ctx, team)
	if err != nil {
		return TeamState{}, TeamState{}, 0, err
	}
	subj := events.SettingsSubject(team)
	for from := cur.AppliedSeq + 1; from < seq; {
		mseq, data, err := t.settingsMsg(ctx, subj, from)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return TeamState{}, TeamState{}, 0, fmt.Errorf("team settings: read settings of %s from %d: %w", team, from, err)
		}
		if mseq >= seq {
			break
		}
		pev, derr := events.Decode(data)
		if derr != nil || !pev.Type.IsSettings() || pev.TeamID != team {
			pev = nil
		}
		if _, _, err := t.Apply(ctx, team, pev, mseq); err != nil {
			return TeamState{}, TeamState{}, 0, err
		}
		from = mseq + 1
	}
	return t.apply(ctx, team, ev, seq)
}

// teamLookups tracks the in-flight and the latest completed lookup of one
// team's last settings message.
type teamLookups struct {
	inflight, last *SettingsLookup
}

// SettingsLookup is one lookup of a team's last settings message, asked
// for by Lookup, possibly not started yet (queued behind the one in
// flight).
type SettingsLookup struct {
	start time.Time // set when it starts (under Teams.lmu)
	done  chan struct{}
	// next is the lookup queued behind this one, for the events received
	// while it runs; it starts when this one ends.
	next *SettingsLookup
	seq  uint64 // 0: the team has no settings message
	data []byte
	err  error
}

// wait returns the lookup's answer once it has one, or ctx's error.
func (l *SettingsLookup) wait(ctx context.Context) (uint64, []byte, error) {
	select {
	case <-l.done:
		return l.seq, l.data, l.err
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

// Lookup returns a lookup of the team's last settings message that starts
// after receivedAt, without waiting: the latest completed one if it
// started after receivedAt, else the one in flight if it did, else the one
// queued behind it (which starts when it ends, so after receivedAt). One
// lookup of a team runs at a time, in a goroutine of its own; every event
// received while it runs shares the next.
func (t *Teams) Lookup(team string, receivedAt time.Time) *SettingsLookup {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	tl := t.lookups[team]
	if tl == nil {
		tl = &teamLookups{}
		t.lookups[team] = tl
	}
	if l := tl.last; l != nil && l.start.After(receivedAt) {
		return l
	}
	if l := tl.inflight; l != nil {
		if l.start.After(receivedAt) {
			return l
		}
		if l.next == nil {
			l.next = &SettingsLookup{done: make(chan struct{})}
		}
		return l.next
	}
	l := &SettingsLookup{start: time.Now(), done: make(chan struct{})}
	tl.inflight = l
	go t.run(team, tl, l)
	return l
}

// run performs l, then each lookup queued behind it, until none is.
func (t *Teams) run(team string, tl *teamLookups, l *SettingsLookup) {
	for l != nil {
		// Shared by every event that asked: no caller's context ends it.
		// The request bounds itself (requestMsg; without a connection,
		// the jetstream client's default timeout).
		t.Lookups.Add(1)
		seq, data, err := t.settingsMsg(context.Background(), events.SettingsSubject(team), 0)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			l.err = err
		default:
			l.seq, l.data = seq, data
		}
		t.lmu.Lock()
		if l.err == nil {
			tl.last = l
		}
		next := l.next
		if next != nil {
			next.start = time.Now()
		}
		tl.inflight = next
		t.lmu.Unlock()
		close(l.done)
		l = next
	}
}

// load reads team's entry in the bucket, with its revision. With nc it is
// read from the bucket's leader: a replica behind it would show an older
// entry, whose revision every compare-and-set in Apply then fails on.
func (t *Teams) load(ctx context.Context, team string) (TeamState, uint64, error) {
	var value []byte
	var rev uint64
	if t.nc != nil {
		m, err := leaderKVGet(ctx, t.nc, TeamsBucket, kvToken(team))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return TeamState{Team: team}, 0, nil
		}
		if err != nil {
			return TeamState{}, 0, fmt.Errorf("team settings get: %w", err)
		}
		value, rev = m.Data, m.Seq
	} else {
		e, err := t.kv.Get(ctx, kvToken(team))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			return TeamState{Team: team}, 0, nil
		case err != nil:
			return TeamState{}, 0, fmt.Errorf("team settings get: %w", err)
		}
		value, rev = e.Value(), e.Revision()
	}
	var st TeamState
	if err := json.Unmarshal(value, &st); err != nil {
		return TeamState{}, 0, t.corrupt.corrupt(&CorruptEntryError{Bucket: TeamsBucket, Key: kvToken(team), Fault: decodeFault(err)})
	}
	if st.Team != team {
		return TeamState{}, 0, t.corrupt.corrupt(&CorruptEntryError{Bucket: TeamsBucket, Key: kvToken(team), Fault: "its team member is not the team of its key"})
	}
	return st, rev, nil
}

// Apply records the settings event ev found at stream sequence seq (ev nil:
// the message there was invalid). Generations decide between settings
// events; the stream sequence is used when an event has none.
func (t *Teams) Apply(ctx context.Context, team string, ev *events.Event, seq uint64) (TeamState, ApplyResult, error) {
	st, _, res, err := t.apply(ctx, team, ev, seq)
	return st, res, err
}

// apply is Apply that also returns the state it replaced: the team's state
// just before ev was applied (or, when nothing was written, the state
// found). Unlike this process's cached state, which the watch or another
// event's handler may not have brought up to date yet, it is what ev
// really changed.
func (t *Teams) apply(ctx context.Context, team string, ev *events.Event, seq uint64) (st, prev TeamState, res ApplyResult, err error) {
	if ev != nil && settingsProblem(ev, t.backends) != nil {
		ev = nil // settings that can never name a secret: invalid
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return TeamState{}, TeamState{}, 0, err
		}
		cur, rev, err := t.load(ctx, team)
		if err != nil {
			return TeamState{}, TeamState{}, 0, err
		}
		if cur.AppliedSeq >= seq {
			t.remember(cur)
			if ev != nil && cur.EventID == ev.ID {
				return cur, cur, AlreadyApplied, nil
			}
			if ev == nil || ev.Generation == 0 || ev.Generation <= cur.Generation {
				return cur, cur, Superseded, nil
			}
			// Considered already, but its generation is higher than the
			// applied one (a later message carried older settings): apply
			// it, keeping the sequence already reached.
		}
		next := cur
		next.Team, next.AppliedSeq, next.UpdatedAt = team, max(cur.AppliedSeq, seq), time.Now().UTC()
		res := Invalid
		if ev != nil {
			res = Superseded
			gen := ev.Generation
			if gen == 0 {
				gen = seq
			}
			if gen > cur.Generation {
				res = Applied
				next.Generation, next.EventID, next.Settings = gen, ev.ID, nil
				if ev.Type == events.TeamSettingsUpdated {
					d, err := ev.SettingsData()
					if err != nil {
						return TeamState{}, TeamState{}, 0, err
					}
					s := d.Settings
					next.Settings = &s
				}
			} else if cur.EventID == ev.ID {
				res = AlreadyApplied
			}
		}
		b, _ := json.Marshal(next)
		if rev == 0 {
			_, err = t.kv.Create(ctx, kvToken(team), b)
		} else {
			_, err = t.kv.Update(ctx, kvToken(team), b, rev)
		}
		if isCASConflict(err) && attempt < 50 {
			continue
		}
		if err != nil {
			return TeamState{}, TeamState{}, 0, fmt.Errorf("team settings put: %w", err)
		}
		t.remember(next)
		return next, cur, res, nil
	}
}

// settingsProblem reports a settings event whose settings the schema
// accepts but that can never name a secret (settings.ValidateTeamNaming),
// or that name a backend outside known (nil: any): applied, they would
// have every key event of the team rejected or dead-lettered, so they are
// treated as an invalid message instead and the team keeps the settings
// it had.
func settingsProblem(ev *events.Event, known map[string]bool) error {
	if ev.Type != events.TeamSettingsUpdated {
		return nil
	}
	d, err := ev.SettingsData()
	if err != nil {
		return err
	}
	if err := settings.ValidateTeamNaming("data.settings", &d.Settings); err != nil {
		return err
	}
	if b := d.Settings.Backend; b != "" && known != nil && !known[b] {
		return fmt.Errorf("data.settings.backend: %q is not a backend of this build (known: %s)", b, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
	}
	return nil
}

func (w *Worker) handleSettings(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, ev *events.Event, gen uint64) verdict {
	conf := confFor(ev, gen)
	if problem := settingsProblem(ev, w.teams.backends); problem != nil {
		// Considered (so key events of the team do not wait for it), never
		// applied: the team keeps its settings.
		err := w.infraDo(ctx, func(ctx context.Context) error {
			_, _, err := w.teams.ApplyThrough(ctx, ev.TeamID, nil, md.Sequence.Stream)
			return err
		})
		if err != nil {
			return waitVerdict(conf, 0, err)
		}
		return w.rejected(msg, md, conf, "team settings: "+sanitize(problem), false)
	}
	var st, prev TeamState
	var res ApplyResult
	err := w.infraDo(ctx, func(ctx context.Context) (err error) {
		st, prev, res, err = w.teams.applyThrough(ctx, ev.TeamID, ev, md.Sequence.Stream)
		return err
	})
	if err != nil {
		// The teams bucket or the stream: NATS trouble, not the event's.
		return waitVerdict(conf, 0, err)
	}
	if w.d.OnPlaceChange != nil {
		// The place before ev: the state ev's Apply replaced, not this
		// process's cached state, which may not show a settings event
		// applied a moment ago (by another slot or process) yet.
		if err := w.requestMove(ctx, ev, res, w.placeOf(prev.Settings), st); err != nil {
			// Requested again by the redelivery (the request is
			// idempotent): NATS trouble, not the event's.
			w.log.Warn("the team's place changed (another backend, or other team options on it) but its keys' move could not be requested yet; settings event handed back",
				zap.String("team", ev.TeamID), zap.Error(err))
			return waitVerdict(conf, 0, fmt.Errorf("request the team's move: %w", err))
		}
	}
	switch res {
	case Applied, AlreadyApplied:
		conf.Status = events.StatusStored
		if ev.Type == events.TeamSettingsDeleted {
			conf.Status = events.StatusDeleted
		}
	default:
		conf.Status = events.StatusSuperseded
		conf.Reason = fmt.Sprintf("team settings generation %d already applied", st.Generation)
	}
	return verdict{conf: conf}
}

// TeamPlace is where a team's settings put its secrets: the backend and
// the team options on it that the backend lets a team set (PlacementFor: a
// Vault namespace or mount, a Google project, ...; never credentials). A
// team that changes only those options on its backend changes place too:
// its new writes go elsewhere, and the copies its keys leave behind are to
// be cleaned up as after a move to another backend.
type TeamPlace struct {
	Backend   string
	Placement *Placement
}

// Same reports whether p and q are one place (SamePlace: an unrecorded
// placement counts as any).
func (p TeamPlace) Same(q TeamPlace) bool {
	return p.Backend == q.Backend && samePlace(p.Placement, q.Placement)
}

// placeOf is where settings s (nil: the global ones) put a team's
// secrets. It is not cached (resolve is, per settings value): settings
// events are rare, and the states read from the teams bucket's history are
// values no key event holds.
func (w *Worker) placeOf(s *events.TeamSettings) TeamPlace {
	res := w.d.Settings.Resolve(s)
	return TeamPlace{Backend: res.Backend, Placement: PlacementFor(res, w.d.Registry.TeamOptionAllowed)}
}

// requestMove tells the caller (Deps.OnPlaceChange) that the settings
// event ev changed its team's
// place (another backend, or other team options on it) to one that is
// still the team's (st: the state after ev's delivery, res what it did),
// whoever applied it: this delivery (from: the place before it), or
// earlier a key event's catch-up, an earlier delivery that could not
// request it or crashed before it did, or ApplyThrough for a newer event
// (ev then superseded). Those are told apart by the teams bucket's
// history: the state ev wrote and the one before it. The request
// (recovery's Migrations.RequestPlace) does nothing when a move to that
// place is already recorded, so asking again on a redelivery is harmless;
// an error makes the event wait, and the redelivery asks again.
//
// A history that no longer holds ev's state (the bucket keeps 5; more
// settings messages of the team came since) requests nothing: the newer
// settings' own events decide the team's place.
func (w *Worker) requestMove(ctx context.Context, ev *events.Event, res ApplyResult, from TeamPlace, st TeamState) error {
	to := w.placeOf(st.Settings)
	switch {
	case res == Applied:
	case res == Invalid, res == AlreadyApplied && st.EventID != ev.ID:
		return nil
	default:
		var evTo TeamPlace
		var ok bool
		err := w.infraDo(ctx, func(ctx context.Context) (err error) {
			from, evTo, ok, err = w.moveOf(ctx, ev.TeamID, ev.ID)
			return err
		})
		if err != nil {
			return fmt.Errorf("team settings history: %w", err)
		}
		if !ok || !evTo.Same(to) {
			return nil
		}
	}
	if from.Same(to) {
		return nil
	}
	w.log.Info("the team's place changed (another backend, or other team options on it): its keys' move is requested", zap.String("team", ev.TeamID),
		zap.String("from", from.Backend), zap.String("to", to.Backend), zap.Bool("same_backend", from.Backend == to.Backend), zap.String("event_id", ev.ID))
	if err := w.infraDo(ctx, func(ctx context.Context) error { return w.d.OnPlaceChange(ctx, ev.TeamID, from, to) }); err != nil {
		return err
	}
	// A newer settings event of the team may have been applied, and its
	// move requested, while this one's was: the handlers' requests land in
	// any order, and the last must be for the place the team has now.
	// Each handler checks after its own request, so the last request made
	// is always checked against a state at least as new as itself.
	for requested, i := to, 0; i < 8; i++ {
		var cur TeamState
		if err := w.infraDo(ctx, func(ctx context.Context) (err error) {
			cur, _, err = w.teams.load(ctx, ev.TeamID)
			return err
		}); err != nil {
			return fmt.Errorf("team settings after the move request: %w", err)
		}
		now := w.placeOf(cur.Settings)
		if requested.Same(now) {
			return nil
		}
		w.log.Info("the team's settings changed its place again while its move was requested: the move to its current place is requested",
			zap.String("team", ev.TeamID), zap.String("from", requested.Backend), zap.String("to", now.Backend), zap.String("event_id", ev.ID))
		if err := w.infraDo(ctx, func(ctx context.Context) error { return w.d.OnPlaceChange(ctx, ev.TeamID, requested, now) }); err != nil {
			return err
		}
		requested = now
	}
	return nil
}

// moveOf reads from the teams bucket's history the places team resolved
// to before and after its settings event eventID was applied. ok is false
// when the event was never applied, or its state or the one before it is
// no longer kept.
func (w *Worker) moveOf(ctx context.Context, team, eventID string) (from, to TeamPlace, ok bool, err error) {
	hist, err := w.teams.kv.History(ctx, kvToken(team))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return TeamPlace{}, TeamPlace{}, false, nil
	}
	if err != nil {
		return TeamPlace{}, TeamPlace{}, false, err
	}
	state := func(e jetstream.KeyValueEntry) (TeamState, bool) {
		var st TeamState
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &st) != nil {
			return TeamState{}, false
		}
		return st, true
	}
	for i, e := range hist {
		st, good := state(e)
		if !good || st.EventID != eventID {
			continue
		}
		var prev TeamState // none before: the team had no settings
		if i > 0 {
			prev, _ = state(hist[i-1])
		} else {
			status, err := w.teams.kv.Status(ctx)
			if err != nil {
				return TeamPlace{}, TeamPlace{}, false, err
			}
			if int64(len(hist)) >= status.History() {
				return TeamPlace{}, TeamPlace{}, false, nil
			}
		}
		return w.placeOf(prev.Settings), w.placeOf(st.Settings), true, nil
	}
	return TeamPlace{}, TeamPlace{}, false, nil
}
