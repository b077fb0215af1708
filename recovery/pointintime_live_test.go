package recovery_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
	"github.com/keyrelay/keyrelay/recovery"
)

// TestPointInTimeNeverOverwritesTheLiveBackend: a rebuild as of T aimed at
// the backend the team's keys live in (--to names it) must not write the
// values of T over the newer ones written since: the key keeps its newest
// value and the row says why it was left alone.
func TestPointInTimeNeverOverwritesTheLiveBackend(t *testing.T) {
	p := newPipeline(t)
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel+"-g1"))
	time.Sleep(20 * time.Millisecond)
	until := time.Now()
	time.Sleep(20 * time.Millisecond)
	p.publish(t, p.event(t, events.KeyRotated, "team-a", "key-00", 2, sentinel+"-g2"))
	name := secretName("team-a", "key-00")
	if got := value(t, p, p.store, name); got != sentinel+"-g2" {
		t.Fatalf("live value before the rebuild is not the newest")
	}

	rep, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{
		Config: recovery.Config{Teams: []string{"team-a"}}, Until: until, To: "local"})
	if err != nil {
		t.Fatal(err)
	}
	if got := value(t, p, p.store, name); got != sentinel+"-g2" {
		t.Fatalf("the rebuild wrote the value as of --until over the live, newer one (rows %+v)", rep.Rows)
	}
	if rep.Written != 0 || len(rep.Rows) != 1 || rep.Rows[0].Action == recovery.ActionWritten {
		t.Fatalf("rows: %+v", rep.Rows)
	}
	if strings.Contains(rep.Rows[0].Why, sentinel) {
		t.Fatalf("a value in the report")
	}
}

// TestPointInTimeNamesEachInvalidMessage: garbled messages in the replayed
// range (a truncated event, JSON that is not an event, a valid event under
// another key's subject) are skipped, never applied, and each one is
// reported with its sequence and a reason (never its bytes), while the
// rest of the range is rebuilt.
func TestPointInTimeNamesEachInvalidMessage(t *testing.T) {
	p := newPipeline(t)
	fresh, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p.reg.Register("aws_secret_manager", func(context.Context, providers.Config) (providers.Provider, error) { return fresh, nil })

	good := p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel+"-g1")
	p.publish(t, good)
	raw, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	subj := good.SubjectIn(events.LaneInteractive)
	other := p.event(t, events.KeyRotated, "team-a", "key-01", 5, sentinel+"-other")
	otherRaw, _ := json.Marshal(other)
	bad := map[string][]byte{
		"truncated":     raw[:len(raw)/2],
		"not an event":  []byte(`{"value":"` + sentinel + `"}`),
		"wrong subject": otherRaw,
	}
	seqs := map[uint64]string{}
	for name, b := range bad {
		ack, err := p.js.Publish(p.ctx, subj, b)
		if err != nil {
			t.Fatal(err)
		}
		seqs[ack.Sequence] = name
	}

	rep, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "aws_secret_manager"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Invalid != len(bad) || rep.Written != 1 || rep.Failed != 0 {
		t.Fatalf("invalid %d written %d failed %d: %+v", rep.Invalid, rep.Written, rep.Failed, rep.Rows)
	}
	if got := value(t, p, fresh, secretName("team-a", "key-00")); got != sentinel+"-g1" {
		t.Fatalf("key-00 rebuilt as %q", got)
	}
	if len(rep.InvalidMessages) != len(bad) {
		t.Fatalf("invalid messages reported: %+v", rep.InvalidMessages)
	}
	for _, im := range rep.InvalidMessages {
		if seqs[im.Seq] == "" || im.Lane != events.LaneInteractive || im.Reason == "" {
			t.Errorf("invalid message %+v (published: %v)", im, seqs)
		}
	}
	b, _ := json.Marshal(rep)
	if strings.Contains(string(b), "SENTINEL") || strings.Contains(strings.Join(rep.Warnings, "\n"), "SENTINEL") {
		t.Fatal("the report carries a value")
	}
}

// TestPointInTimeSkipsSettingsThatCanNeverNameASecret: the workers reject
// a settings event whose naming can never form a secret name, and the team
// keeps its settings; the rebuild does the same (before, it applied them
// and every later key of the team failed its row).
func TestPointInTimeSkipsSettingsThatCanNeverNameASecret(t *testing.T) {
	p := newPipeline(t)
	fresh, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p.reg.Register("aws_secret_manager", func(context.Context, providers.Config) (providers.Provider, error) { return fresh, nil })
	prefix, broken := "pit/", "{team_id}"
	p.settingsData(t, "team-a", 1, events.TeamSettings{Prefix: &prefix})
	p.settingsData(t, "team-a", 2, events.TeamSettings{NameTemplate: broken})
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel+"-n1"))
	rep, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "aws_secret_manager"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Invalid != 1 || rep.Written != 1 || rep.Failed != 0 {
		t.Fatalf("invalid %d written %d failed %d: %+v", rep.Invalid, rep.Written, rep.Failed, rep.Rows)
	}
	if len(rep.InvalidMessages) != 1 || !strings.Contains(rep.InvalidMessages[0].Reason, "never name a secret") {
		t.Fatalf("invalid messages: %+v", rep.InvalidMessages)
	}
}

// TestPointInTimeSkipsSettingsNamingAnUnknownBackend: the workers reject a
// settings event naming a backend this build does not have, and the team
// keeps its settings; the rebuild does the same (before, it applied them
// and the team's later key was a failed row: no backend to write to).
func TestPointInTimeSkipsSettingsNamingAnUnknownBackend(t *testing.T) {
	p := newPipeline(t)
	fresh, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p.reg.Register("aws_secret_manager", func(context.Context, providers.Config) (providers.Provider, error) { return fresh, nil })
	prefix := "pit/"
	p.settingsData(t, "team-a", 1, events.TeamSettings{Prefix: &prefix})
	p.settingsData(t, "team-a", 2, events.TeamSettings{Backend: "hashicorp_vaultt"})
	p.publish(t, p.event(t, events.KeyCreated, "team-a", "key-00", 1, sentinel+"-u1"))
	rep, err := recovery.PointInTime(p.ctx, p.deps(), p.js, recovery.PointInTimeConfig{Config: recovery.Config{All: true}, To: "aws_secret_manager"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Invalid != 1 || rep.Written != 1 || rep.Failed != 0 {
		t.Fatalf("invalid %d written %d failed %d: %+v", rep.Invalid, rep.Written, rep.Failed, rep.Rows)
	}
	if len(rep.InvalidMessages) != 1 || !strings.Contains(rep.InvalidMessages[0].Reason, "backend this build does not have") {
		t.Fatalf("invalid messages: %+v", rep.InvalidMessages)
	}
	if got, err := fresh.Get(p.ctx, "pit/team-a/key-00", ""); err != nil || string(got.Value) != sentinel+"-u1" {
		t.Fatalf("the key is not rebuilt under the team's earlier settings: %v", err)
	}
}
