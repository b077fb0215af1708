package recovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// foldMsg is a stream message as the fold reads it.
type foldMsg struct {
	jetstream.Msg
	data    []byte
	subject string
}

func (m foldMsg) Data() []byte    { return m.data }
func (m foldMsg) Subject() string { return m.subject }

// TestPointInTimeFoldHoldsBoundedEventsPerKey: a replay over a long range
// folded every event of a key into memory (1,200 here, each with its
// sealed value or metadata). The fold now keeps only the events that can
// still decide the key's state, and resolves it exactly as from the whole
// list: the newest value that opens (the newest, forged, is refused and
// reported once), and the newest alias and metadata.
func TestPointInTimeFoldHoldsBoundedEventsPerKey(t *testing.T) {
	ctx := context.Background()
	kr, err := events.NewKeyring("d1", map[string][]byte{"d1": bytes.Repeat([]byte{9}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	forger, err := events.NewKeyring("d1", map[string][]byte{"d1": bytes.Repeat([]byte{7}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	var msgs []foldMsg
	add := func(ev *events.Event) {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, foldMsg{data: b, subject: ev.SubjectIn(events.LaneInteractive)})
	}
	for i := 1; i <= n; i++ {
		s := events.Sealer(kr)
		if i == n {
			s = forger
		}
		typ := events.KeyRotated
		if i == 1 {
			typ = events.KeyCreated
		}
		ev, err := events.NewKeyEvent(ctx, s, typ, "team-a", "key-00", uint64(i), []byte(fmt.Sprintf("v-%d", i)), events.KeyData{Metadata: map[string]string{"g": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		ev.KeyAlias = fmt.Sprintf("alias-%d", i)
		add(ev)
		if i%5 == 0 { // a rename at generation i*10 (ahead of the values until the end)
			gen := uint64(i * 10)
			if gen > n {
				gen = uint64(i) // late renames, behind the values
			}
			add(&events.Event{SpecVersion: events.SpecVersion, ID: fmt.Sprintf("upd-%d", i), Type: events.KeyUpdated, Time: time.Now().UTC(),
				TeamID: "team-a", KeyID: "key-00", Generation: gen, KeyAlias: fmt.Sprintf("renamed-%d", gen)})
		}
	}
	run := func(compacting bool) (*keyState, *PointInTimeReport) {
		rep := &PointInTimeReport{}
		f := &folder{keys: map[string]*keyState{}, teams: map[string]*pitTeam{}, rep: rep, settingsComplete: true}
		if compacting {
			f.ctx, f.op = ctx, kr
		}
		now := time.Now()
		for i, m := range msgs {
			f.fold(m, &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: uint64(i + 1)}, Timestamp: now}, events.LaneInteractive)
		}
		k := f.keys[worker.LedgerKey("team-a", "key-00")]
		if compacting && (len(k.values) > 2*compactAt || len(k.updates) > 2*compactAt) {
			t.Fatalf("the fold holds %d value events and %d updates of one key", len(k.values), len(k.updates))
		}
		skipped, err := resolve(ctx, kr, nil, "team-a", "key-00", k)
		if err != nil {
			t.Fatal(err)
		}
		rep.SkippedEvents = append(rep.SkippedEvents, skipped...)
		return k, rep
	}
	whole, wrep := run(false)
	k, rep := run(true)
	if k.gen != n-1 || k.status != events.StatusRotated || k.eventID != whole.eventID {
		t.Fatalf("rebuilt generation %d (%s), want %d", k.gen, k.eventID, n-1)
	}
	v, err := kr.Open(ctx, k.sealed, events.Binding{TeamID: "team-a", KeyID: "key-00", Generation: k.sealedGen})
	if err != nil || string(v) != fmt.Sprintf("v-%d", n-1) {
		t.Fatalf("rebuilt value: %v", err)
	}
	if k.alias != whole.alias || k.metaGen != whole.metaGen || !maps.Equal(k.metadata, whole.metadata) {
		t.Fatalf("alias %q gen %d metadata %v, want %q gen %d metadata %v", k.alias, k.metaGen, k.metadata, whole.alias, whole.metaGen, whole.metadata)
	}
	if len(rep.SkippedEvents) != 1 || len(wrep.SkippedEvents) != 1 || rep.SkippedEvents[0].Generation != n {
		t.Fatalf("skipped %+v, want the forged generation %d once (whole list: %+v)", rep.SkippedEvents, n, wrep.SkippedEvents)
	}
}
