package recovery

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/jsread"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

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
	// Events counts the events applied or superseded; Invalid the messages
	// skipped because they failed validation (as the workers reject them).
	Events  int `json:"events"`
	Invalid int `json:"invalid"`
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
}

type pitTeam struct {
	gen      uint64
	settings *events.TeamSettings
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

	keys, teams := map[string]*keyState{}, map[string]*pitTeam{}
	if err := replay(ctx, js, stream, st, events.LaneInteractive, c, rep, keys, teams); err != nil {
		return nil, err
	}
	// The bulk lane (bulk jobs' events) is its own stream; its events carry
	// generations, so folding them after the interactive ones gives the
	// same per-key outcome as the workers, whatever the interleaving.
	if err := replayBulk(ctx, js, stream, c, rep, keys, teams); err != nil {
		return nil, err
	}
	if rep.Invalid > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d messages failed validation and were skipped, as the workers reject them", rep.Invalid))
	}

	type job struct {
		team, key string
		k         *keyState
	}
	var jobs []job
	for lk, k := range keys {
		team, key, _ := worker.ParseLedgerKey(lk)
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
		return s.toTarget(ctx, target{to: c.To, options: c.Options, dryRun: c.DryRun, adopt: c.Adopt}, ts, j.team, j.key, j.k)
	}, func(_ int, r RestoreRow) { tr.add(r.Action) })
	rep.Rows = append(rep.Rows, out...)
	t := tally(rep.Rows)
	rep.Written, rep.Deleted, rep.Skipped, rep.Failed = t.Written, t.Deleted, t.Skipped, t.Failed
	return rep, ctx.Err()
}

// replayBulk folds the bulk lane's stream over the same range: from the
// time of --from-seq's event (or --since) to --until.
func replayBulk(ctx context.Context, js jetstream.JetStream, evStream jetstream.Stream, c PointInTimeConfig, rep *PointInTimeReport, keys map[string]*keyState, teams map[string]*pitTeam) error {
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
	return replay(ctx, js, bulk, info.State, events.LaneBulk, bc, rep, keys, teams)
}

// replay reads the range of lane's stream and folds it into key and team
// states. The read either covers the whole range or fails: a read that
// stalls (a node lost, the stream between leaders) resumes after the last
// message folded, and fails after a bound; it never ends early.
func replay(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, st jetstream.StreamState, lane events.Lane, c PointInTimeConfig, rep *PointInTimeReport, keys map[string]*keyState, teams map[string]*pitTeam) error {
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
		fold(msg, md, lane, keys, teams, rep)
		return md.Sequence.Stream < last
	})
	if err != nil {
		return fmt.Errorf("point in time: read the %s stream: %w", lane, err)
	}
	return nil
}

// fold applies one stream message to the states, by the workers' rules. A
// message that fails validation is counted and skipped.
func fold(msg jetstream.Msg, md *jetstream.MsgMetadata, lane events.Lane, keys map[string]*keyState, teams map[string]*pitTeam, rep *PointInTimeReport) {
	ev, err := events.Decode(msg.Data())
	if err != nil || ev.SubjectIn(lane) != msg.Subject() || ev.ValidateLane(lane) != nil {
		rep.Invalid++
		return
	}
	gen := ev.Generation
	if gen == 0 {
		gen = md.Sequence.Stream
	}
	rep.Events++
	if ev.Type.IsSettings() {
		t := teams[ev.TeamID]
		if t == nil {
			t = &pitTeam{}
			teams[ev.TeamID] = t
		}
		if gen <= t.gen {
			return
		}
		if ev.Type == events.TeamSettingsDeleted {
			t.gen, t.settings = gen, nil
			return
		}
		sd, err := ev.SettingsData()
		if err != nil {
			rep.Invalid++
			rep.Events--
			return
		}
		ts := sd.Settings
		t.gen, t.settings = gen, &ts
		return
	}
	lk := worker.LedgerKey(ev.TeamID, ev.KeyID)
	k := keys[lk]
	if k == nil {
		k = &keyState{noValue: true}
		keys[lk] = k
	}
	switch ev.Type {
	case events.KeyCreated, events.KeyRotated:
		kd, err := ev.KeyData()
		if err != nil {
			rep.Invalid++
			rep.Events--
			return
		}
		if gen > k.gen {
			k.gen, k.eventID, k.sealed, k.sealedGen, k.noValue = gen, ev.ID, kd.Value, ev.Generation, false
			k.status = events.StatusStored
			if ev.Type == events.KeyRotated {
				k.status = events.StatusRotated
			}
		}
		if gen > k.metaGen {
			k.metaGen, k.alias, k.metadata = gen, ev.KeyAlias, kd.Metadata
		}
	case events.KeyUpdated:
		upd, err := ev.UpdateData()
		if err != nil {
			rep.Invalid++
			rep.Events--
			return
		}
		if gen > k.metaGen {
			k.metaGen, k.alias = gen, ev.KeyAlias
			if upd.Metadata != nil {
				k.metadata = upd.Metadata
			}
		}
	case events.KeyDeleted:
		if gen > k.gen {
			k.gen, k.eventID, k.sealed, k.sealedGen, k.noValue = gen, ev.ID, nil, 0, false
			k.status = events.StatusDeleted
		}
		if gen > k.metaGen {
			k.metaGen, k.alias, k.metadata = gen, ev.KeyAlias, nil
		}
	}
}

// target is where Copy and PointInTime write.
type target struct {
	to            string
	options       map[string]string
	dryRun, adopt bool
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
