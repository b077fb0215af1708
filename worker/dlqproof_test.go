package worker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/worker"
)

// refusePuts fails every Put of the keys in keys with a permanent error
// (a backend refusing the write for good).
type refusePuts struct {
	providers.Provider
	keys map[string]bool
}

func (r *refusePuts) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	if r.keys[req.Owner.KeyID] {
		return providers.PutResult{}, providers.NewError("refuse", "put", req.Name, providers.Permanent, fmt.Errorf("403 access denied"))
	}
	return r.Provider.Put(ctx, req)
}

// rawKeyEvent is a valid key.created event of team and key whose value
// is the envelope JSON given.
func rawKeyEvent(t *testing.T, id, team, key, value string) *events.Event {
	t.Helper()
	ev := &events.Event{SpecVersion: events.SpecVersion, ID: id, Type: events.KeyCreated, Time: time.Now().UTC(),
		TeamID: team, KeyID: key, Generation: 1, Data: []byte(`{"value":` + value + `}`)}
	if err := ev.Validate(); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return ev
}

// TestDLQKeepsOnlyProvenSealedValues: the DLQ keeps an event's original
// bytes only when its value opened as a sealed envelope, or it carries no
// value. A value that does not open (a plaintext key as the ct of an
// A256GCM envelope with a known kid and a valid nonce, an unknown kid, an
// algorithm the keyring does not open) and, with allow_plaintext_values
// on, a plaintext value whose event is later rejected (read_only) or
// failed by the provider, are all kept as the redacted summary, and
// `dlq retry` refuses them. A sealed event failed by the provider, and a
// key.deleted one, keep their original bytes.
func TestDLQKeepsOnlyProvenSealedValues(t *testing.T) {
	const sentinel = "sk-SENTINEL-4f2c81-not-sealed"
	refuse := &refusePuts{keys: map[string]bool{"key-plain-refused": true, "key-sealed-refused": true}}
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { refuse.Provider = p; return refuse }}})
	b.kr.AllowPlaintext(true)
	b.startWorker(nil)

	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	nonce, ct := b64("123456789012"), b64(sentinel)
	pv := `{"alg":"plaintext","ct":"` + ct + `"}`
	redactedIDs := map[string]*events.Event{
		"open-failed": rawKeyEvent(t, "open-failed", "team-a", "key-open", `{"alg":"A256GCM","kid":"t1","nonce":"`+nonce+`","ct":"`+ct+`"}`),
		"unknown-kid": rawKeyEvent(t, "unknown-kid", "team-a", "key-kid", `{"alg":"A256GCM","kid":"zz","nonce":"`+nonce+`","ct":"`+ct+`"}`),
		"unsupported-alg": rawKeyEvent(t, "unsupported-alg", "team-a", "key-alg",
			`{"alg":"A256GCM-KMS","kid":"alias/x","edk":"`+b64("wrapped-data-key")+`","nonce":"`+nonce+`","ct":"`+ct+`"}`),
		"plain-read-only": rawKeyEvent(t, "plain-read-only", "team-ro", "key-plain-ro", pv),
		"plain-refused":   rawKeyEvent(t, "plain-refused", "team-a", "key-plain-refused", pv),
	}
	sealedRefused := b.keyEvent(events.KeyCreated, "team-a", "key-sealed-refused", 1, sentinel)
	deleted := b.keyEvent(events.KeyDeleted, "team-ro", "key-del", 1, "")
	b.publish(b.settingsEvent("team-ro", 1, &events.TeamSettings{AccessMode: events.AccessReadOnly}))
	for _, ev := range redactedIDs {
		b.publish(ev)
	}
	b.publish(sealedRefused, deleted)

	cs := byEventID(b.confirmations(len(redactedIDs)+3, 30*time.Second))
	for id := range redactedIDs {
		if c := cs[id]; c == nil || (c.Status != events.StatusRejected && c.Status != events.StatusFailed) {
			t.Errorf("%s: %+v, want rejected or failed", id, c)
		}
	}
	for _, id := range []string{"open-failed", "unknown-kid", "unsupported-alg"} {
		if c := cs[id]; c != nil && !strings.Contains(c.Reason, "cannot open value") {
			t.Errorf("%s was not refused by the opener: %q", id, c.Reason)
		}
	}
	dl := b.rawMessages(worker.DLQStream)
	if len(dl) != len(redactedIDs)+2 {
		t.Fatalf("%d dead letters, want %d", len(dl), len(redactedIDs)+2)
	}
	for _, m := range dl {
		id := m.Header.Get(worker.HdrEventID)
		switch id {
		case sealedRefused.ID, deleted.ID:
			ev := map[string]*events.Event{sealedRefused.ID: sealedRefused, deleted.ID: deleted}[id]
			raw, _ := ev.Encode()
			if string(m.Data) != string(raw) || m.Header.Get(worker.HdrRedacted) != "" {
				t.Errorf("%s: the dead letter is not the original bytes", id)
			}
			continue
		}
		if redactedIDs[id] == nil {
			t.Errorf("unexpected dead letter %q", id)
			continue
		}
		if all := string(m.Data) + fmt.Sprint(m.Header); containsSentinel(all, sentinel) {
			t.Errorf("%s: the dead letter keeps the value: %s", id, all)
		}
		var e worker.RedactedEntry
		if err := json.Unmarshal(m.Data, &e); err != nil || !e.Redacted || e.SHA256 == "" {
			t.Errorf("%s: the dead letter is not a redacted summary: %s", id, m.Data)
		}
		if m.Header.Get(worker.HdrRedacted) != "true" {
			t.Errorf("%s: the dead letter lacks %s", id, worker.HdrRedacted)
		}
	}
	if containsSentinel(b.logs.String(), sentinel) {
		t.Error("the logs carry the value")
	}
	dls, err := worker.ListDeadLetters(b.ctx, b.js, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dls {
		if !d.Redacted {
			continue
		}
		if err := worker.RetryDeadLetter(b.ctx, b.js, d.Seq); err == nil || !strings.Contains(err.Error(), "redacted") {
			t.Errorf("retry of the redacted entry of %s: %v, want refused", d.EventID, err)
		}
	}
}

// TestDLQRetryRefusesEntriesThatDoNotMatch: `dlq retry` resends only the
// original of a valid event filed under the subject and event id the
// entry records. An entry whose data does not decode, or whose event
// belongs to another team, key or type than its recorded subject, or has
// another id than its recorded one, is refused: nothing is republished
// and no confirmation is cleared (the other event's stays).
func TestDLQRetryRefusesEntriesThatDoNotMatch(t *testing.T) {
	b := setup(t, setupOptions{})
	b.startWorker(nil)
	// team-b's event, confirmed: its confirmation must survive.
	victim := b.keyEvent(events.KeyCreated, "team-b", "key-1", 1, "sk-victim")
	b.publish(victim)
	b.confirmations(1, 30*time.Second)
	victimRaw, _ := victim.Encode()
	other := b.keyEvent(events.KeyCreated, "team-a", "key-1", 1, "sk-other")
	otherRaw, _ := other.Encode()

	plant := func(n int, subject, eventID string, data []byte) uint64 {
		t.Helper()
		m := &nats.Msg{Subject: events.DLQSubject("team-a", "key-1"), Data: data, Header: nats.Header{}}
		m.Header.Set(worker.HdrSubject, subject)
		m.Header.Set(worker.HdrStatus, string(events.StatusFailed))
		m.Header.Set(worker.HdrStreamSeq, fmt.Sprint(1000+n))
		if eventID != "" {
			m.Header.Set(worker.HdrEventID, eventID)
		}
		ack, err := b.js.PublishMsg(b.ctx, m, jetstream.WithExpectStream(worker.DLQStream))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	subjA := "keyrelay.events.team-a.key-1.key.created"
	cases := map[string]uint64{
		// the body is team-b's event; the entry says team-a's subject
		"another team's event": plant(1, subjA, victim.ID, victimRaw),
		"another id":           plant(2, subjA, victim.ID, otherRaw),
		"not an event":         plant(3, subjA, other.ID, []byte(`{"id":"`+other.ID+`","team_id":"team-a"`)),
		"another type":         plant(4, "keyrelay.events.team-a.key-1.key.rotated", other.ID, otherRaw),
	}
	before := b.lastSeq(worker.StreamOf(events.LaneInteractive))
	for name, seq := range cases {
		if err := worker.RetryDeadLetter(b.ctx, b.js, seq); err == nil || !strings.Contains(err.Error(), "not retrying") {
			t.Errorf("%s: retry %v, want refused", name, err)
		}
	}
	if after := b.lastSeq(worker.StreamOf(events.LaneInteractive)); after != before {
		t.Errorf("%d events republished by refused retries", after-before)
	}
	s, err := b.js.Stream(b.ctx, worker.ConfirmationsStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(b.ctx, events.ConfirmationSubject("team-b", "key-1", victim.ID)); err != nil {
		t.Errorf("the other team's confirmation was cleared: %v", err)
	}
	if got := len(b.rawMessages(worker.DLQStream)); got != len(cases) {
		t.Errorf("%d dead letters left, want %d", got, len(cases))
	}
	// A matching entry is still retried.
	ok := plant(5, subjA, other.ID, otherRaw)
	if err := worker.RetryDeadLetter(b.ctx, b.js, ok); err != nil {
		t.Fatalf("retry of a matching entry: %v", err)
	}
	if c := byEventID(b.confirmations(2, 30*time.Second))[other.ID]; c == nil || c.Status != events.StatusStored {
		t.Errorf("the retried event: %+v, want stored", c)
	}
}

// lastSeq is the last sequence a stream stored.
func (b *bundle) lastSeq(stream string) uint64 {
	b.t.Helper()
	s, err := b.js.Stream(b.ctx, stream)
	if err != nil {
		b.t.Fatal(err)
	}
	info, err := s.Info(b.ctx)
	if err != nil {
		b.t.Fatal(err)
	}
	return info.State.LastSeq
}
