package recovery

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/jsread"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/settings"
	"github.com/keyrelay/keyrelay/worker"
)

// maxSkippedWarnings bounds the skipped events named in the text warnings
// (the report's SkippedEvents holds every one).
const maxSkippedWarnings = 100

// maxInvalidListed bounds the invalid messages a report names (a stream
// flooded with garbage must not fill the replay's memory); Invalid counts
// every one.
const maxInvalidListed = 10000

// PointInTimeConfig rebuilds the state of the keys as of a moment from the
// events stream into a target backend.
type PointInTimeConfig struct {
	// Config scopes (Teams or All) and paces the writes. Backend is not
	// used: the stream says nothing of where keys lived.
	Config
	// FromSeq or Since start the replay at a stream sequence or time (the
	// changes since a backup); default: the stream's first message.
	FromSeq uint64
	Since   time.Time
	// Until ends the replay: events stored after it are not applied.
	// Default: the stream's last message when the replay starts.
	Until time.Time
	// To is the target backend and Options its provider options (as
	// CopyConfig). A point-in-time state is never written over the
	// backends in use, which hold newer values.
	To      string
	Options map[string]string
	// DryRun, Adopt and Progress: as CopyConfig.
	DryRun   bool
	Adopt    bool
	Progress func(Progress)
}

// PointInTimeReport is the result of PointInTime.
type PointInTimeReport struct {
	// FirstSeq..LastSeq is the range of stream messages replayed, stored
	// between FirstTime and LastTime.
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
	// Events counts the valid events replayed; Invalid the messages
	// skipped because they failed validation (as the workers reject them).
	Events  int `json:"events"`
	Invalid int `json:"invalid"`
	// InvalidMessages names the messages counted in Invalid (the first
	// maxInvalidListed), each with the reason it failed validation. Never
	// its bytes.
	InvalidMessages []InvalidMessage `json:"invalid_messages,omitempty"`
	// SkippedEvents are valid events not applied because the workers
	// would not have applied them (a value that does not open, a team
	// whose settings of the time forbade the write, a confirmation saying
	// rejected, failed or skipped), each with its reason; the key keeps
	// the state of the events before. Never a value.
	SkippedEvents []SkippedEvent `json:"skipped_events,omitempty"`
	// Incomplete is true when the stream's retention dropped events the
	// replay needed; Warnings say what cannot be rebuilt.
	Incomplete bool     `json:"incomplete"`
	Warnings   []string `json:"warnings,omitempty"`
	// Rows: one per key in the rebuilt state (written, deleted, skipped
	// when the target already matched, failed), never a value.
	Rows    []RestoreRow `json:"rows"`
	Written int          `json:"written"`
	Deleted int          `json:"deleted"`
	Skipped int          `json:"skipped"`
	Failed  int          `json:"failed"`
}

// keyState is one key's state to write into a target: as the replay
// rebuilds it, by the workers' rules (the value part, created, rotated or
// deleted, by generation; the description part, alias and metadata, by
// its own generation), or as the ledger holds it (Copy).
type keyState struct {
	gen, metaGen uint64
	status       events.Status
	eventID      string
	sealed       *events.SealedValue
	sealedGen    uint64
	alias        string
	metadata     map[string]string
	// noValue: only key.updated events were seen (the value's events were
	// dropped by retention or came before FromSeq/Since).
	noValue bool
	// values and updates are the replay's candidate events (PointInTime):
	// resolve sets the state from them. refusedOnly: every value event
	// was refused.
	values, updates []pitEvent
	refusedOnly     bool
	// refusedValues: value events the fold's compaction found refused
	// (reported, and dropped from values); limit: the candidates past
	// which the fold compacts the key's lists again.
	refusedValues bool
	limit         int
	// base: the alias and metadata the events compact folded left.
	base metaState
}

type pitTeam struct {
	gen      uint64
	settings *events.TeamSettings
	// history: the team's settings after each settings event applied, by
	// stream time (a key event is checked against those of its time).
	history []pitSettings
}

// PointInTime replays KEYRELAY_EVENTS (key and settings events, in stream
// order, by the workers' generation rules) from FromSeq/Since to Until,
// and writes the resulting state of every key in scope into the target:
// live keys with their value as of Until, under the name the team's
// settings as of Until give; keys deleted as of Until removed from the
// target when keyrelay owns them there. Writes are idempotent by event id
// and skipped when the target already holds the value, so a replay run
// again writes nothing.
//
// The stream keeps events for keyrelay.streams.events_max_age (and
// events_max_bytes): when the replay needs events retention dropped, the
// report is marked Incomplete and says what cannot be rebuilt.
func PointInTime(ctx context.Context, d Deps, js jetstream.JetStream, c PointInTimeConfig) (*PointInTimeReport, error) {
	if c.To == "" {
		return nil, errors.New("point in time: name the target backend (--to): a past state is never written over the backends in use")
	}
	if !c.All && len(c.Teams) == 0 {
		return nil, errors.New("point in time: name teams (--team) or --all")
	}
	if c.FromSeq > 0 && !c.Since.IsZero() {
		return nil, errors.New("point in time: --from-seq and --since exclude each other")
	}
	d = d.withDefaults()
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Attempts <= 0 {
		c.Attempts = 4
	}
	stream, err := js.Stream(ctx, worker.EventsStream)
	if err != nil {
		return nil, fmt.Errorf("point in time: events stream: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("point in time: events stream: %w", err)
	}
	st := info.State
	rep := &PointInTimeReport{}
	if st.Msgs == 0 {
		return nil, errors.New("point in time: the events stream is empty (lost, or every event aged out): nothing can be rebuilt from it; restore from the ledger instead")
	}
	if !c.Until.IsZero() && c.Until.Before(st.FirstTime) {
		return nil, fmt.Errorf("point in time: the oldest event kept is from %s (sequence %d), after --until %s: retention dropped everything before it",
			st.FirstTime.UTC().Format(time.RFC3339), st.FirstSeq, c.Until.UTC().Format(time.RFC3339))
	}
	// What retention dropped.
	switch {
	case c.FromSeq > 0 && c.FromSeq < st.FirstSeq:
		rep.Incomplete = true
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("events %d..%d are gone from the stream (retention): changes in them are not replayed", c.FromSeq, st.FirstSeq-1))
	case !c.Since.IsZero() && c.Since.Before(st.FirstTime) && st.FirstSeq > 1:
		rep.Incomplete = true
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("events before %s (sequences below %d) are gone from the stream (retention): changes in them are not replayed",
			st.FirstTime.UTC().Format(time.RFC3339), st.FirstSeq))
	case c.FromSeq == 0 && c.Since.IsZero() && st.FirstSeq > 1:
		rep.Incomplete = true
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("events 1..%d are gone from the stream (retention, oldest kept from %s): a key or team setting whose last change before --until was among them is rebuilt without it (keys missing or at an older state; settings at their defaults); restore from the ledger, or from a backup of the backend, for those",
			st.FirstSeq-1, st.FirstTime.UTC().Format(time.RFC3339)))
	}

	f := &folder{keys: map[string]*keyState{}, teams: map[string]*pitTeam{}, rep: rep,
		settingsComplete: c.FromSeq <= 1 && c.Since.IsZero() && st.FirstSeq <= 1}
	if d.Settings != nil {
		f.resolve = d.Settings.Resolve
	}
	if d.Registry != nil {
		f.backends = map[string]bool{}
		for _, n := range d.Registry.Names() {
			f.backends[n] = true
		}
	}
	// Which candidate events the workers applied: values are opened, and
	// the confirmations stream (when there is one) is asked about the
	// events that would decide a key's state (while folding, to hold
	// only what can still decide, and at the end).
	confOf := confirmations(ctx, js)
	f.ctx, f.op, f.confOf = ctx, d.Opener, confOf
	keys, teams := f.keys, f.teams
	if err := replay(ctx, js, stream, st, events.LaneInteractive, c, f); err != nil {
		return nil, err
	}
	// The bulk lane (bulk jobs' events) is its own stream; its events carry
	// generations, so folding them after the interactive ones gives the
	// same per-key outcome as the workers, whatever the interleaving.
	if err := replayBulk(ctx, js, stream, c, f); err != nil {
		return nil, err
	}
	if rep.Invalid > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d messages failed validation and were skipped, as the workers reject them:", rep.Invalid))
		for i, im := range rep.InvalidMessages {
			if i == maxSkippedWarnings {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("... and %d more (--json lists the first %d)", rep.Invalid-i, maxInvalidListed))
				break
			}
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("invalid %s sequence %d: %s", im.Lane, im.Seq, im.Reason))
		}
	}
	var failedKeys []RestoreRow
	for lk, k := range keys {
		team, key, _ := worker.ParseLedgerKey(lk)
		skipped, err := resolve(ctx, d.Opener, confOf, team, key, k)
		rep.SkippedEvents = append(rep.SkippedEvents, skipped...)
		if err != nil {
			failedKeys = append(failedKeys, RestoreRow{Row: Row{Team: team, Key: key, Backend: c.To},
				Action: ActionFailed, Why: "decide which event was applied: " + err.Error()})
			delete(keys, lk)
		}
	}
	rep.Rows = append(rep.Rows, failedKeys...)
	if n := len(rep.SkippedEvents); n > 0 {
		sort.Slice(rep.SkippedEvents, func(i, j int) bool {
			a, b := rep.SkippedEvents[i], rep.SkippedEvents[j]
			if a.Lane != b.Lane {
				return a.Lane < b.Lane
			}
			return a.Seq < b.Seq
		})
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d valid events were not applied, as the workers did not apply them (the key keeps the state of the events before):", n))
		for i, se := range rep.SkippedEvents {
			if i == maxSkippedWarnings {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("... and %d more (--json lists every one)", n-i))
				break
			}
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("skipped %s sequence %d: event %s (%s, %s/%s, generation %d): %s", se.Lane, se.Seq, se.EventID, se.Type, se.Team, se.Key, se.Generation, se.Reason))
		}
	}

	type job struct {
		team, key string
		k         *keyState
	}
	var jobs []job
	for lk, k := range keys {
		team, key, _ := worker.ParseLedgerKey(lk)
		if k.refusedOnly && k.noValue {
			rep.Rows = append(rep.Rows, RestoreRow{Row: Row{Team: team, Key: key, Backend: c.To, Generation: k.metaGen},
				Action: ActionSkipped, Why: "no event of its value in the replayed range was applied by the workers (see skipped_events)"})
			continue
		}
		if k.noValue {
			rep.Incomplete = true
			rep.Rows = append(rep.Rows, RestoreRow{Row: Row{Team: team, Key: key, Backend: c.To, Generation: k.metaGen},
				Action: ActionSkipped, Why: "only key.updated events are in the replayed range: its value cannot be rebuilt"})
			continue
		}
		jobs = append(jobs, job{team, key, k})
	}
	sort.Slice(jobs, func(i, j int) bool {
		if jobs[i].team != jobs[j].team {
			return jobs[i].team < jobs[j].team
		}
		return jobs[i].key < jobs[j].key
	})
	s := newSession(d, c.Config)
	tr := newTracker(len(jobs), c.Progress)
	out := parallel(len(jobs), c.Concurrency, nil, func(i int) RestoreRow {
		j := jobs[i]
		var ts *events.TeamSettings
		if t := teams[j.team]; t != nil {
			ts = t.settings
		}
		return s.toTarget(ctx, target{to: c.To, options: c.Options, dryRun: c.DryRun, adopt: c.Adopt, past: true}, ts, j.team, j.key, j.k)
	}, func(_ int, r RestoreRow) { tr.add(r.Action) })
	rep.Rows = append(rep.Rows, out...)
	t := tally(rep.Rows)
	rep.Written, rep.Deleted, rep.Skipped, rep.Failed = t.Written, t.Deleted, t.Skipped, t.Failed
	return rep, ctx.Err()
}

// replayBulk folds the bulk lane's stream over the same range: from the
// time of --from-seq's event (or --since) to --until.
func replayBulk(ctx context.Context, js jetstream.JetStream, evStream jetstream.Stream, c PointInTimeConfig, f *folder) error {
	rep := f.rep
	bulk, err := js.Stream(ctx, worker.BulkStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // created before the bulk lane existed
	}
	if err != nil {
		return fmt.Errorf("point in time: bulk stream: %w", err)
	}
	info, err := bulk.Info(ctx)
	if err != nil {
		return fmt.Errorf("point in time: bulk stream: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	bc := c
	if c.FromSeq > 0 {
		m, err := evStream.GetMsg(ctx, c.FromSeq)
		if err != nil {
			return fmt.Errorf("point in time: time of event %d (to start the bulk lane there): %w", c.FromSeq, err)
		}
		bc.FromSeq, bc.Since = 0, m.Time
	}
	if bc.Since.IsZero() && c.FromSeq == 0 && info.State.FirstSeq > 1 {
		rep.Incomplete = true
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("bulk-lane events 1..%d are gone from %s (retention): changes in them are not replayed",
			info.State.FirstSeq-1, worker.BulkStream))
	}
	return replay(ctx, js, bulk, info.State, events.LaneBulk, bc, f)
}

// replay reads the range of lane's stream and folds it into key and team
// states. The read either covers the whole range or fails: a read that
// stalls (a node lost, the stream between leaders) resumes after the last
// message folded, and fails after a bound; it never ends early.
func replay(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, st jetstream.StreamState, lane events.Lane, c PointInTimeConfig, f *folder) error {
	rep := f.rep
	rc := jsread.Config{Stream: stream.CachedInfo().Config.Name, StartSeq: c.FromSeq, StartTime: c.Since}
	if c.FromSeq > 0 {
		rc.StartTime = time.Time{}
	}
	if !c.All {
		for _, t := range c.Teams {
			if lane == events.LaneBulk {
				rc.FilterSubjects = append(rc.FilterSubjects, events.BulkPrefix+"."+t+".>")
				continue
			}
			rc.FilterSubjects = append(rc.FilterSubjects, events.EventsPrefix+"."+t+".>", events.SettingsSubject(t))
		}
	}
	last := st.LastSeq
	if c.FromSeq > last {
		return nil
	}
	// The range ends at the last sequence the stream had when the replay
	// started, or at Until.
	err := jsread.Read(ctx, js, rc, func(msg jetstream.Msg, md *jetstream.MsgMetadata) bool {
		if md.Sequence.Stream > last || (!c.Until.IsZero() && md.Timestamp.After(c.Until)) {
			return false
		}
		if lane == events.LaneInteractive {
			if rep.FirstSeq == 0 {
				rep.FirstSeq, rep.FirstTime = md.Sequence.Stream, md.Timestamp.UTC()
			}
			rep.LastSeq, rep.LastTime = md.Sequence.Stream, md.Timestamp.UTC()
		}
		f.fold(msg, md, lane)
		return md.Sequence.Stream < last
	})
	if err != nil {
		return fmt.Errorf("point in time: read the %s stream: %w", lane, err)
	}
	return nil
}

// pitEvent is one key event the fold kept as a candidate: it passed every
// check the stream alone allows (decoding, subject, lane, data, the team's
// settings of its time when known). Which candidate the worker applied is
// decided per key by resolve, which also opens values and reads
// confirmations.
type pitEvent struct {
	seq      uint64
	lane     events.Lane
	id       string
	typ      events.Type
	gen      uint64 // the effective generation (the stream sequence when the event has none)
	evGen    uint64 // the event's own generation (the sealed value's binding)
	alias    string
	metadata map[string]string
	sealed   *events.SealedValue
	// order is the position in the fold (stream order, interactive lane
	// first): of events with the same generation the first one wins, as
	// in the worker's ledger.
	order int
	// forbidden says why the team's settings of the event's time forbade
	// its write ("": they did not, or are not known). Its confirmation,
	// when there is one, decides.
	forbidden string
}

// SkippedEvent is a valid event the rebuild did not apply because the
// workers would not have: its value does not open, its team's settings
// forbade the write, or its confirmation says it was rejected. Never a
// value.
type SkippedEvent struct {
	Seq        uint64      `json:"seq"`
	Lane       events.Lane `json:"lane"`
	EventID    string      `json:"event_id"`
	Type       events.Type `json:"type"`
	Team       string      `json:"team"`
	Key        string      `json:"key,omitempty"`
	Generation uint64      `json:"generation"`
	Reason     string      `json:"reason"`
}

// InvalidMessage is a stream message the replay skipped because it failed
// validation, as the workers reject it. Never its bytes.
type InvalidMessage struct {
	Seq    uint64      `json:"seq"`
	Lane   events.Lane `json:"lane"`
	Reason string      `json:"reason"`
}

// pitSettings is a team's settings from one moment of the replay on.
type pitSettings struct {
	at       time.Time
	settings *events.TeamSettings
}

// settingsAt returns the team's settings as of t and whether the replay
// knows them: a settings event of the team at or before t was replayed,
// or the replay started at the stream's very first event (complete) so a
// team with none has none.
func (t *pitTeam) settingsAt(at time.Time, complete bool) (*events.TeamSettings, bool) {
	if t != nil {
		for i := len(t.history) - 1; i >= 0; i-- {
			if !t.history[i].at.After(at) {
				return t.history[i].settings, true
			}
		}
	}
	return nil, complete
}

// folder is the state of one replay: the keys' candidate events and the
// teams' settings, with what it needs to apply the workers' settings
// rules.
type folder struct {
	keys  map[string]*keyState
	teams map[string]*pitTeam
	rep   *PointInTimeReport
	// resolve gives the settings a team's key event is handled with
	// (nil: not checked).
	resolve func(*events.TeamSettings) settings.Resolved
	// backends are the backends a team's settings may name, as the
	// workers know them (nil: not checked).
	backends map[string]bool
	// settingsComplete: the interactive stream was replayed from its
	// very first event, so a team without a settings event has none.
	settingsComplete bool
	n                int
	// ctx, op and confOf check candidates while folding (compact), so a
	// key holds only the events that can still decide its state.
	ctx    context.Context
	op     events.Opener
	confOf confirmationOf
}

// compactAt is how many candidate events of one kind (value events, or
// key.updated events) a key holds before the fold compacts them.
const compactAt = 16

// compact folds key lk's candidate events so far into what can still
// decide its state, so that a replay over a long range holds a bounded
// number of events per key rather than every event of the range. The
// value events are checked as resolve checks them, from the top rank down
// to the first the worker applied, which is kept; the key.updated events
// are checked against their confirmations and the settings of their time.
// The refused ones are reported now, and the alias and metadata the other
// events leave, by the workers' rule in fold order, become the key's base:
// events folded later apply over it as over the events it replaces. A check that
// cannot decide (an outage) leaves the lists as they are for resolve to
// report, and lets them grow further before the next try.
func (f *folder) compact(lk string, k *keyState) {
	if f.op == nil {
		return
	}
	if k.limit == 0 {
		k.limit = compactAt
	}
	if len(k.values) <= k.limit && len(k.updates) <= k.limit {
		return
	}
	team, key, err := worker.ParseLedgerKey(lk)
	if err != nil {
		return
	}
	ck := checker{op: f.op, confOf: f.confOf, team: team, key: key}
	refused := map[int]bool{} // by order
	var reported []SkippedEvent
	// The value events from the top rank down to the first applied, as
	// resolve checks them (those below it are not checked there either).
	var top *pitEvent
	for _, pe := range byGen(k.values) {
		why, err := ck.valueRefused(f.ctx, pe)
		if err != nil {
			k.limit *= 2
			return
		}
		if why == "" {
			top = &pe
			break
		}
		refused[pe.order] = true
		reported = append(reported, skippedEvent(team, key, pe, why))
	}
	for _, pe := range k.updates {
		why, _, _, err := ck.refusedBy(f.ctx, pe)
		if err != nil {
			k.limit *= 2
			return
		}
		if why != "" {
			refused[pe.order] = true
			reported = append(reported, skippedEvent(team, key, pe, why))
		}
	}
	f.rep.SkippedEvents = append(f.rep.SkippedEvents, reported...)
	var kept []pitEvent
	for _, pe := range slices.Concat(k.values, k.updates) {
		if !refused[pe.order] {
			kept = append(kept, pe)
		}
	}
	slices.SortFunc(kept, func(a, b pitEvent) int { return cmp.Compare(a.order, b.order) })
	for _, pe := range kept {
		k.base.step(pe)
	}
	if anyRefused(k.values, refused) {
		k.refusedValues = true
	}
	k.values, k.updates = nil, nil
	if top != nil {
		k.values = []pitEvent{*top}
	}
}

// anyRefused reports whether one of list is refused.
func anyRefused(list []pitEvent, refused map[int]bool) bool {
	for _, pe := range list {
		if refused[pe.order] {
			return true
		}
	}
	return false
}

// metaState is a key's alias and metadata, and the generation that set
// them.
type metaState struct {
	gen      uint64
	alias    string
	metadata map[string]string
}

// step applies one applied event by the workers' rule: an event of a
// higher generation sets the alias, and the metadata unless it is a
// key.updated without metadata (a deletion clears it). It reports whether
// pe won.
func (m *metaState) step(pe pitEvent) bool {
	if pe.gen <= m.gen {
		return false
	}
	m.gen, m.alias = pe.gen, pe.alias
	switch {
	case pe.typ == events.KeyDeleted:
		m.metadata = nil
	case pe.typ != events.KeyUpdated || pe.metadata != nil:
		m.metadata = pe.metadata
	}
	return true
}

// fold applies one stream message to the states, by the workers' rules. A
// message that fails validation is counted and skipped; nothing read from
// it reaches a valid event's state.
func (f *folder) fold(msg jetstream.Msg, md *jetstream.MsgMetadata, lane events.Lane) {
	rep := f.rep
	invalid := func(why string, err error) {
		rep.Invalid++
		if err != nil {
			why += ": " + sanitize(err)
		}
		if len(rep.InvalidMessages) < maxInvalidListed {
			rep.InvalidMessages = append(rep.InvalidMessages, InvalidMessage{Seq: md.Sequence.Stream, Lane: lane, Reason: why})
		}
	}
	ev, err := events.Decode(msg.Data())
	if err != nil {
		invalid("does not decode", err)
		return
	}
	if ev.SubjectIn(lane) != msg.Subject() {
		invalid("its subject does not match the event's team, key and type", nil)
		return
	}
	if err := ev.ValidateLane(lane); err != nil {
		invalid("not valid on this lane", err)
		return
	}
	gen := ev.Generation
	if gen == 0 {
		gen = md.Sequence.Stream
	}
	f.n++
	if ev.Type.IsSettings() {
		var ts *events.TeamSettings
		if ev.Type != events.TeamSettingsDeleted {
			sd, err := ev.SettingsData()
			if err != nil {
				invalid("its settings do not decode", err)
				return
			}
			if err := settings.ValidateTeamNaming("data.settings", &sd.Settings); err != nil {
				// The workers reject settings that can never name a
				// secret, and the team keeps the settings it had.
				invalid("its settings can never name a secret", err)
				return
			}
			if b := sd.Settings.Backend; b != "" && f.backends != nil && !f.backends[b] {
				// Rejected by the workers as well (worker.Teams.KnownBackends).
				invalid("its settings name a backend this build does not have", fmt.Errorf("%q", b))
				return
			}
			s := sd.Settings
			ts = &s
		}
		rep.Events++
		t := f.teams[ev.TeamID]
		if t == nil {
			t = &pitTeam{}
			f.teams[ev.TeamID] = t
		}
		if gen <= t.gen {
			return
		}
		t.gen, t.settings = gen, ts
		t.history = append(t.history, pitSettings{at: md.Timestamp, settings: ts})
		return
	}
	pe := pitEvent{seq: md.Sequence.Stream, lane: lane, id: ev.ID, typ: ev.Type, gen: gen, evGen: ev.Generation, alias: ev.KeyAlias, order: f.n}
	switch ev.Type {
	case events.KeyCreated, events.KeyRotated:
		kd, err := ev.KeyData()
		if err != nil {
			invalid("its data does not decode", err)
			return
		}
		pe.sealed, pe.metadata = kd.Value, kd.Metadata
	case events.KeyUpdated:
		upd, err := ev.UpdateData()
		if err != nil {
			invalid("its data does not decode", err)
			return
		}
		pe.metadata = upd.Metadata
	}
	rep.Events++
	// The team's settings of the event's time, as the worker checks them
	// before it writes (handleKey): a team that does not store keys, or
	// may not write, changes nothing.
	if f.resolve != nil {
		if ts, known := f.teams[ev.TeamID].settingsAt(md.Timestamp, f.settingsComplete); known {
			res := f.resolve(ts)
			switch {
			case !res.StoreVirtualKeys:
				pe.forbidden = "store_virtual_keys was false for the team at the time (the workers skip its key events)"
			case !res.CanWrite():
				pe.forbidden = fmt.Sprintf("the team's access_mode was %s at the time (the workers reject its key events)", res.AccessMode)
			}
		}
	}
	lk := worker.LedgerKey(ev.TeamID, ev.KeyID)
	k := f.keys[lk]
	if k == nil {
		k = &keyState{noValue: true}
		f.keys[lk] = k
	}
	if ev.Type == events.KeyUpdated {
		k.updates = append(k.updates, pe)
	} else {
		k.values = append(k.values, pe)
	}
	f.compact(lk, k)
}

// confirmationOf reads the worker's confirmation of event pe: its status,
// and whether there is one (never confirmed yet, aged out of the
// confirmations stream, or not this event's: none).
type confirmationOf func(ctx context.Context, team, key string, pe pitEvent) (events.Status, bool, error)

// confirmations reads confirmations from KEYRELAY_CONFIRMATIONS; nil when
// there is no such stream.
func confirmations(ctx context.Context, js jetstream.JetStream) confirmationOf {
	stream, err := js.Stream(ctx, worker.ConfirmationsStream)
	if err != nil {
		return nil
	}
	return func(ctx context.Context, team, key string, pe pitEvent) (events.Status, bool, error) {
		m, err := stream.GetLastMsgForSubject(ctx, events.ConfirmationSubject(team, key, pe.id))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("read the confirmation of event %s: %w", pe.id, err)
		}
		var c events.Confirmation
		if json.Unmarshal(m.Data, &c) != nil || c.EventID != pe.id || c.TeamID != team || c.KeyID != key || c.EventType != pe.typ ||
			(pe.evGen != 0 && c.Generation != pe.evGen) {
			return "", false, nil // not this event's
		}
		return c.Status, true, nil
	}
}

// skippedEvent is pe of team/key reported as not applied, for why.
func skippedEvent(team, key string, pe pitEvent, why string) SkippedEvent {
	return SkippedEvent{Seq: pe.seq, Lane: pe.lane, EventID: pe.id, Type: pe.typ, Team: team, Key: key, Generation: pe.gen, Reason: why}
}

// byGen orders candidate events as the worker ranks them: the highest
// generation first, of equal generations the first folded.
func byGen(list []pitEvent) []pitEvent {
	s := slices.Clone(list)
	slices.SortStableFunc(s, func(a, b pitEvent) int {
		if a.gen != b.gen {
			return cmp.Compare(b.gen, a.gen)
		}
		return cmp.Compare(a.order, b.order)
	})
	return s
}

// checker decides whether the worker applied one candidate event of
// team/key.
type checker struct {
	op        events.Opener
	confOf    confirmationOf
	team, key string
}

// refusedBy returns why the worker did not apply pe ("": it did, or
// nothing says otherwise) and its confirmation.
func (c checker) refusedBy(ctx context.Context, pe pitEvent) (string, events.Status, bool, error) {
	var st events.Status
	var found bool
	if c.confOf != nil {
		var err error
		if st, found, err = c.confOf(ctx, c.team, c.key, pe); err != nil {
			return "", "", false, err
		}
	}
	switch {
	case found && refusedStatus(st):
		return fmt.Sprintf("the workers did not apply it: its confirmation says %s", st), st, found, nil
	case pe.forbidden != "" && !(found && appliedStatus(st)):
		return pe.forbidden, st, found, nil
	}
	return "", st, found, nil
}

// valueRefused is refusedBy for a value event, whose value must also open
// (see resolve). An error: it cannot be decided.
func (c checker) valueRefused(ctx context.Context, pe pitEvent) (string, error) {
	why, st, found, err := c.refusedBy(ctx, pe)
	if err != nil || why != "" || pe.sealed == nil {
		return why, err
	}
	v, err := c.op.Open(ctx, pe.sealed, events.Binding{TeamID: c.team, KeyID: c.key, Generation: pe.evGen})
	switch {
	case err == nil:
		clear(v)
		return "", nil
	case providers.IsRetryable(err):
		return "", fmt.Errorf("open the value of event %s: %s", pe.id, sanitize(err))
	case found && appliedStatus(st):
		return "", fmt.Errorf("event %s was applied by the workers, but its value does not open with this keyring: %s", pe.id, sanitize(err))
	case errors.Is(err, events.ErrOpenFailed) || errors.Is(err, events.ErrPlaintextRefused):
		return "its value does not open with the keyring (the workers reject it): " + sanitize(err), nil
	default:
		return "", fmt.Errorf("the value of event %s does not open with this keyring, and no confirmation says whether the workers applied it: %s", pe.id, sanitize(err))
	}
}

// refusedStatus: the worker did not apply an event confirmed so.
func refusedStatus(s events.Status) bool {
	return s == events.StatusRejected || s == events.StatusFailed || s == events.StatusSkipped
}

// appliedStatus: the worker applied an event confirmed so.
func appliedStatus(s events.Status) bool {
	return s == events.StatusStored || s == events.StatusRotated || s == events.StatusDeleted
}

// resolve picks, among k's candidate events, the ones the worker applied,
// and sets k's state from them: the value event of the highest generation
// the worker did not refuse, then the alias and metadata by their own
// generations among the events kept. An event is refused when its
// confirmation says rejected, failed or skipped; when the team's settings
// of its time forbade it (unless its confirmation says it was applied);
// or when its value fails authentication with the keyring, as it did for
// the worker. Each refused event is returned with its reason, and the
// previous good event decides. A value that cannot be opened for another
// reason (a KMS outage, a key id this keyring lacks) with no confirmation
// saying it was refused fails the key instead: falling back could write an
// older value than the workers applied.
func resolve(ctx context.Context, op events.Opener, confOf confirmationOf, team, key string, k *keyState) ([]SkippedEvent, error) {
	var skipped []SkippedEvent
	skip := func(pe pitEvent, why string) {
		skipped = append(skipped, skippedEvent(team, key, pe, why))
	}
	ck := checker{op: op, confOf: confOf, team: team, key: key}
	refusedBy := func(pe pitEvent) (string, events.Status, bool, error) { return ck.refusedBy(ctx, pe) }
	var chosen *pitEvent
	refused := map[int]bool{} // by order
	for _, pe := range byGen(k.values) {
		why, err := ck.valueRefused(ctx, pe)
		if err != nil {
			return skipped, err
		}
		if why != "" {
			skip(pe, why)
			refused[pe.order] = true
			continue
		}
		chosen = &pe
		break
	}
	if chosen != nil {
		k.gen, k.eventID, k.sealed, k.sealedGen, k.noValue = chosen.gen, chosen.id, chosen.sealed, chosen.evGen, false
		switch chosen.typ {
		case events.KeyCreated:
			k.status = events.StatusStored
		case events.KeyRotated:
			k.status = events.StatusRotated
		case events.KeyDeleted:
			k.status, k.sealed, k.sealedGen = events.StatusDeleted, nil, 0
		}
	} else if len(k.values) > 0 || k.refusedValues {
		k.refusedOnly = true
	}
	// The alias and metadata: the workers' rule over the events they
	// applied (value events not refused, updates not refused), in fold
	// order. The update that decides is checked like a value event; a
	// refused one is dropped and the rule runs again.
	for {
		var kept []pitEvent
		for _, pe := range k.values {
			if !refused[pe.order] {
				kept = append(kept, pe)
			}
		}
		for _, pe := range k.updates {
			if !refused[pe.order] {
				kept = append(kept, pe)
			}
		}
		slices.SortFunc(kept, func(a, b pitEvent) int { return cmp.Compare(a.order, b.order) })
		var win *pitEvent
		m := k.base // the events compact folded, all applied
		for i, pe := range kept {
			if m.step(pe) {
				win = &kept[i]
			}
		}
		k.metaGen, k.alias, k.metadata = m.gen, m.alias, m.metadata
		if win == nil || win.typ != events.KeyUpdated {
			break
		}
		why, _, _, err := refusedBy(*win)
		if err != nil {
			return skipped, err
		}
		if why == "" {
			break
		}
		skip(*win, why)
		refused[win.order] = true
	}
	return skipped, nil
}

// target is where Copy and PointInTime write.
type target struct {
	to            string
	options       map[string]string
	dryRun, adopt bool
	// past: the state written is a past one (PointInTime), never written
	// where the key lives now (see inUse).
	past bool
}

// inUse says why the target's secret name is where key lives now, so a
// past state must not be written there ("": it is not, as far as the
// ledger tells): the ledger places the key at that backend and name, and
// either no provider options point elsewhere or the secret there holds
// the ledger's newest value.
func (s *session) inUse(ctx context.Context, c target, team, key, name string, cur *providers.Secret) (string, error) {
	if s.d.Ledger == nil {
		return "", nil
	}
	e, _, err := s.d.Ledger.Get(ctx, team, key)
	if err != nil {
		return "", fmt.Errorf("read the ledger: %w", err)
	}
	if e == nil || e.Provider != c.to || e.SecretRef != name {
		return "", nil
	}
	const why = "the key lives here now (the ledger places it at this backend and name): a past state is never written over the backend in use; rebuild into another backend"
	if len(c.options) == 0 {
		return why, nil
	}
	if cur == nil || e.Sealed == nil || e.Status == events.StatusDeleted {
		return "", nil
	}
	want, err := s.digest(ctx, team, key, e)
	if err != nil {
		return "", fmt.Errorf("open the ledger's sealed value: %w", err)
	}
	got := sha256.Sum256(cur.Value)
	if subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
		return why, nil
	}
	return "", nil
}

// toTarget brings one key's state into the target: a live key's value is
// written unless the target holds it already, a deleted key's secret is
// removed where keyrelay owns it; names and tags follow ts, the team's
// settings (current for Copy, as of --until for PointInTime).
func (s *session) toTarget(ctx context.Context, c target, ts *events.TeamSettings, team, key string, k *keyState) RestoreRow {
	row := RestoreRow{Row: Row{Team: team, Key: key, Backend: c.to, Generation: k.gen, LedgerStatus: k.status}}
	failed := func(what string, err error) RestoreRow {
		row.Action, row.Why = ActionFailed, what+": "+sanitize(err)
		return row
	}
	p, res, err := s.open(ctx, ts, c.to, c.options)
	if err != nil {
		return failed("open the target", err)
	}
	name, err := res.SecretName(team, key, k.alias)
	if err != nil {
		return failed("secret name", err)
	}
	row.SecretRef = name
	owner := providers.Owner{TeamID: team, KeyID: key}
	cur, err := s.get(ctx, p, c.to, name)
	found := err == nil
	if err != nil && !errors.Is(err, providers.ErrNotFound) {
		return failed("read the target", err)
	}
	owned := !found || !p.Capabilities().Tags || providers.IsOwnedBy(cur.Tags, owner)
	if found {
		defer clear(cur.Value)
	}
	if c.past {
		var held *providers.Secret
		if found {
			held = cur
		}
		why, err := s.inUse(ctx, c, team, key, name, held)
		if err != nil {
			return failed("check the target is not where the key lives", err)
		}
		if why != "" {
			row.Action, row.Why = ActionSkipped, why
			return row
		}
	}
	if k.status == events.StatusDeleted {
		switch {
		case !found:
			row.Status, row.Action, row.Why = StatusOK, ActionSkipped, "deleted; absent in the target"
			return row
		case !owned && !c.adopt:
			row.Status, row.Action, row.Why = StatusUnowned, ActionSkipped, ownerOf(cur.Tags)+"; --adopt to delete"
			return row
		}
		row.Status = StatusResurrected
		if c.dryRun {
			row.Action = ActionPlanned
			return row
		}
		if err := ownLimitRetry(ctx, func() error {
			return p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: owner, Adopt: c.adopt})
		}); err != nil && !errors.Is(err, providers.ErrNotFound) {
			return failed("delete", err)
		}
		row.Action = ActionDeleted
		return row
	}
	value, err := s.d.Opener.Open(ctx, k.sealed, events.Binding{TeamID: team, KeyID: key, Generation: k.sealedGen})
	if err != nil {
		return failed("open the event's sealed value", err)
	}
	defer clear(value)
	switch {
	case !found:
		row.Status = StatusMissing
	case !owned && !c.adopt:
		row.Status, row.Action, row.Why = StatusUnowned, ActionSkipped, ownerOf(cur.Tags)+"; --adopt to overwrite"
		return row
	default:
		want, got := sha256.Sum256(value), sha256.Sum256(cur.Value)
		if subtle.ConstantTimeCompare(want[:], got[:]) == 1 {
			row.Status, row.Action, row.Why = StatusOK, ActionSkipped, "the target already holds this value"
			return row
		}
		row.Status = StatusStale
	}
	if c.dryRun {
		row.Action = ActionPlanned
		return row
	}
	if l := s.limiter(c.to); l != nil {
		if err := l.Wait(ctx); err != nil {
			return failed("rate limit", err)
		}
	}
	if _, err := s.put(ctx, p, c.to, providers.PutRequest{Name: name, Value: value, IdempotencyKey: k.eventID, Owner: owner,
		Description: res.Description, Tags: worker.SecretTags(res.Tags, k.metadata, k.alias), Adopt: c.adopt}); err != nil {
		return failed("write", err)
	}
	row.Action = ActionWritten
	return row
}
