package recovery_test

import (
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
