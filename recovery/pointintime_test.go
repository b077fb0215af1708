package recovery_test

import (
	"bytes"
	"context"

	"encoding/json"
	"fmt"
	"github.com/nats-io/nats.go/jetstream"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/recovery"
	"github.com/keyrelay/keyrelay/worker"
)

// snapshot lists every keyrelay-owned secret of team in s: name -> value.
func snapshot(t *testing.T, p *pipeline, s *local.Provider, team string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := s.List(p.ctx, providers.ListRequest{TeamID: team}, func(l providers.Listed) error {
		out[l.Name] = value(t, p, s, l.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func (p *pipeline) settingsData(t *testing.T, team string, gen uint64, ts events.TeamSettings) {
	t.Helper()
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("s-%s-%d", team, gen), Type: events.TeamSettingsUpdated,
		Time: time.Now().UTC(), TeamID: team, Generation: gen}
	ev.Data, _ = json.Marshal(events.SettingsData{Settings: ts})
	p.publish(t, ev)
}

// TestPointInTimeRebuildsTheStateAsOfUntil: the live store's state at T is
// snapshotted; rotations, deletions, new keys and a settings change (new
// names) follow. `restore --until T` into a fresh store rebuilds exactly
// the snapshot (names and values), and again writes nothing.
func TestPointInTimeRebuildsTheStateAsOfUntil(t *testing.T) {
	p := newPipeline(t)
	fresh, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p.reg.Register("aws_secret_manager", func(_ context.Context, _ providers.Config) (providers.Provider, error) { return fresh, nil })

	prefix := "pit/"
	p.settingsData(t, "team-a", 1, events.TeamSettings{Prefix: &prefix, Tags: map[string]string{"env": "prod"}})
	var evs []*events.Event
	for i := range 30 {
		evs = append(evs, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, fmt.Sprintf("%s-%d-g1", sentinel, i)))
	}
	for i := range 3 {
		evs = append(evs, p.event(t, events.KeyCreated, "team-b", fmt.Sprintf("key-%02d", i), 1, sentinel))
	}
	p.publish(t, evs...)
	evs = evs[:0]
	for i := range 10 {
		evs = append(evs, p.event(t, events.KeyRotated, "team-a", fmt.Sprintf("key-%02d", i), 2, fmt.Sprintf("%s-%d-g2", sentinel, i)))
	}
	for i := 25; i < 30; i++ {
		evs = append(evs, p.event(t, events.KeyDeleted, "team-a", fmt.Sprintf("key-%02d", i), 2, ""))
	}
	// A superseded (older) rotation arriving late changes nothing.
	evs = append(evs, p.event(t, events.KeyRotated, "team-a", "key-00", 1, sentinel+"-stale"))
	p.publish(t, evs...)
	want := snapshot(t, p, p.store, "team-a")
	if len(want) != 25 {
		t.Fatalf("snapshot holds %d secrets, want 25", len(want))
	}
	time.Sleep(20 * time.Millisecond)
	until := time.Now()
	time.Sleep(20 * time.Millisecond)

	// After T: more rotations, deletions, new keys, and new names.
	newPrefix := "after/"
	p.settingsData(t, "team-a", 2, events.TeamSettings{Prefix: &newPrefix})
	evs = evs[:0]
	for i := range 5 {
		evs = append(evs, p.event(t, events.KeyRotated, "team-a", fmt.Sprintf("key-%02d", i), 3, sentinel+"-after"))
	}
	for i := 10; i < 15; i++ {
		evs = append(evs, p.event(t, events.KeyDeleted, "team-a", fmt.Sprintf("key-%02d", i), 3, ""))
	}
	for i := 30; i < 35; i++ {
		evs = append(evs, p.event(t, events.KeyCreated, "team-a", fmt.Sprintf("key-%02d", i), 1, sentinel+"-new"))
	}
	p.publish(t, evs...)

	cfg := recovery.PointInTimeConfig{Config: recovery.Config{Teams: []string{"team-a"}}, Until: until, To: "aws_secret_manager"}
	rep, err := recovery.PointInTime(p.ctx, p.deps(), p.js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed != 0 || rep.Written != 25 || rep.Incomplete || rep.Invalid != 0 {
		t.Fatalf("written %d failed %d incomplete %v invalid %d: %+v", rep.Written, rep.Failed, rep.Incomplete, rep.Invalid, rep.Rows)
	}
	got := snapshot(t, p, fresh, "team-a")
	if !maps.Equal(got, want) {
		t.Errorf("rebuilt state differs from the snapshot at T:\n got %d secrets\nwant %d", len(got), len(want))
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: got %q want %q", k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: not in the snapshot", k)
			}
		}
	}
	if sec, err := fresh.Get(p.ctx, "pit/team-a/key-00", ""); err != nil || sec.Tags["env"] != "prod" {
		t.Errorf("tags of the settings as of T: %+v %v", sec, err)
	}
	if len(snapshot(t, p, fresh, "team-b")) != 0 {
		t.Error("a team out of scope was rebuilt")
	}
	b, _ := json.Marshal(rep)
	if strings.Contains(string(b), "SENTINEL") {
		t.Fatal("the report carries a value")
	}
	// Again: nothing to write.
	again, err := recovery.PointInTime(p.ctx, p.deps(), p.js, cfg)
	if err != nil || again.Written != 0 || again.Deleted != 0 || again.Failed != 0 {
		t.Fatalf("second run: written %d deleted %d failed %d (%v)", again.Written, again.Deleted, again.Failed, err)
	}
	// --from-seq past the start replays only the later changes (over a
	// store that already holds the earlier state).
	s, _ := p.js.Stream(p.ctx, worker.EventsStream)
	info, _ := s.Info(p.ctx)
	all, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "aws_secret_manager", FromSeq: info.State.LastSeq})
	if err != nil || all.Events != 1 || all.LastSeq != info.State.LastSeq {
		t.Fatalf("from the last sequence: %+v %v", all, err)
	}
}

// TestPointInTimeSaysWhatRetentionDropped: with the oldest events gone the
// replay is marked incomplete and names the range; --until before the
// oldest event kept is refused.
func TestPointInTimeSaysWhatRetentionDropped(t *testing.T) {
	p := newPipeline(t)
	fresh, _ := local.New(local.Config{})
	p.reg.Register("aws_secret_manager", func(_ context.Context, _ providers.Config) (providers.Provider, error) { return fresh, nil })
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel), p.event(t, events.KeyCreated, "team-a", "key-01", 1, sentinel))
	before := time.Now()
	time.Sleep(20 * time.Millisecond)
	upd := &events.Event{SpecVersion: events.SpecVersion, ID: "upd-1", Type: events.KeyUpdated, Time: time.Now().UTC(), TeamID: "team-a", KeyID: "key-00", Generation: 2, KeyAlias: "renamed"}
	p.publish(t, upd, p.event(t, events.KeyCreated, "team-a", "key-02", 1, sentinel))
	s, _ := p.js.Stream(p.ctx, worker.EventsStream)
	if err := s.Purge(p.ctx, jetstream.WithPurgeSequence(3)); err != nil { // what max_age would drop
		t.Fatal(err)
	}
	rep, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "aws_secret_manager"})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Incomplete || len(rep.Warnings) == 0 || !strings.Contains(rep.Warnings[0], "1..2") {
		t.Fatalf("incomplete %v warnings %q", rep.Incomplete, rep.Warnings)
	}
	if rep.Written != 1 || rep.Skipped != 1 { // key-02 written; key-00 has only an update left
		t.Fatalf("written %d skipped %d: %+v", rep.Written, rep.Skipped, rep.Rows)
	}
	if _, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "aws_secret_manager", Until: before}); err == nil || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("--until before the oldest event kept: %v", err)
	}
}

// TestPointInTimeSkipsEventsTheWorkersRejected: a rotation whose value
// does not open (sealed with another key under the same key id) and a
// deletion of a team whose settings were read_only at the time are
// rejected by the workers. The rebuild does the same: the key keeps its
// previous generation's value, the deleted key is still written, and both
// events are reported skipped with a reason (never a value). With their
// confirmations (rejected) the rebuild follows them, even from after the
// settings event (settings of the time unknown to the replay); without
// any confirmation, the value's authentication and the settings in the
// stream decide.
func TestPointInTimeSkipsEventsTheWorkersRejected(t *testing.T) {
	p := newPipeline(t)
	targets := map[string]*local.Provider{}
	for _, name := range []string{"aws_secret_manager", "azure_key_vault"} {
		s, err := local.New(local.Config{})
		if err != nil {
			t.Fatal(err)
		}
		targets[name] = s
		p.reg.Register(name, func(_ context.Context, _ providers.Config) (providers.Provider, error) { return s, nil })
	}

	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel+"-g1"))
	p.publish(t, p.event(t, events.KeyCreated, "team-r", "key-00", 1, sentinel+"-r1"))
	other, err := events.NewKeyring("d1", map[string][]byte{"d1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := events.NewKeyEvent(p.ctx, other, events.KeyRotated, "team-a", "key-00", 2, []byte(sentinel+"-bad"), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	p.publish(t, bad)
	p.settingsData(t, "team-r", 1, events.TeamSettings{AccessMode: events.AccessReadOnly})
	del := p.event(t, events.KeyDeleted, "team-r", "key-00", 2, "")
	p.publish(t, del)
	// The workers rejected both: the ledger still has generation 1.
	for _, team := range []string{"team-a", "team-r"} {
		if e, _, err := p.ledger.Get(p.ctx, team, "key-00"); err != nil || e == nil || e.Generation != 1 {
			t.Fatalf("%s: ledger entry %+v %v: the worker applied a rejected event", team, e, err)
		}
	}
	check := func(rep *recovery.PointInTimeReport, to string, reasons map[string]string) {
		t.Helper()
		if rep.Failed != 0 || rep.Written != 2 || rep.Deleted != 0 {
			t.Fatalf("written %d deleted %d failed %d: %+v", rep.Written, rep.Deleted, rep.Failed, rep.Rows)
		}
		if got := value(t, p, targets[to], secretName("team-a", "key-00")); got != sentinel+"-g1" {
			t.Errorf("team-a/key-00 rebuilt as %q, want generation 1's value", got)
		}
		if got := value(t, p, targets[to], secretName("team-r", "key-00")); got != sentinel+"-r1" {
			t.Errorf("team-r/key-00 rebuilt as %q, want its value (the deletion was rejected)", got)
		}
		skipped := map[string]string{}
		for _, se := range rep.SkippedEvents {
			skipped[se.EventID] = se.Reason
		}
		if len(skipped) != len(reasons) {
			t.Errorf("skipped events: %+v", rep.SkippedEvents)
		}
		for id, want := range reasons {
			if !strings.Contains(skipped[id], want) {
				t.Errorf("event %s skipped for %q, want %q", id, skipped[id], want)
			}
		}
		b, _ := json.Marshal(rep)
		if strings.Contains(string(b), "SENTINEL") {
			t.Fatal("the report carries a value")
		}
	}

	rep, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "aws_secret_manager"})
	if err != nil {
		t.Fatal(err)
	}
	check(rep, "aws_secret_manager", map[string]string{bad.ID: "confirmation says rejected", del.ID: "confirmation says rejected"})

	// From the deletion on: the replay does not know team-r's settings of
	// the time; the deletion's confirmation keeps the secret.
	rep, err = recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{Teams: []string{"team-r"}}, To: "aws_secret_manager", FromSeq: rep.LastSeq})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deleted != 0 || rep.Failed != 0 || len(rep.SkippedEvents) != 1 || rep.SkippedEvents[0].EventID != del.ID {
		t.Fatalf("from the deletion: deleted %d failed %d skipped %+v rows %+v", rep.Deleted, rep.Failed, rep.SkippedEvents, rep.Rows)
	}
	if got := value(t, p, targets["aws_secret_manager"], secretName("team-r", "key-00")); got != sentinel+"-r1" {
		t.Errorf("team-r/key-00 is %q after the replay from the deletion", got)
	}

	// Without confirmations (aged out): the stream alone decides.
	cs, err := p.js.Stream(p.ctx, worker.ConfirmationsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Purge(p.ctx); err != nil {
		t.Fatal(err)
	}
	rep, err = recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "azure_key_vault"})
	if err != nil {
		t.Fatal(err)
	}
	check(rep, "azure_key_vault", map[string]string{bad.ID: "does not open", del.ID: "read_only"})
}
