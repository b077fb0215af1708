package worker_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestRedactDeadLettersAfterTheFact: DLQ entries stored before keyrelay
// redacted unproven values (originals of events whose value is plaintext
// or does not open, and of messages that are not events) are replaced by
// their redacted summary, under the same subject and headers, and their
// originals are deleted; originals proven safe (a sealed value that opens,
// an event without a value) and summaries are left alone. A dry run
// changes nothing; a second run finds nothing to do; no sentinel value is
// left in the DLQ stream.
func TestRedactDeadLettersAfterTheFact(t *testing.T) {
	const sentinel = "sk-SENTINEL-7d31e0-old-dlq"
	b := setup(t, setupOptions{})
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	nonce, ct := b64("123456789012"), b64(sentinel)

	sealed := b.keyEvent(events.KeyCreated, "team-a", "key-sealed", 1, sentinel)
	deleted := b.keyEvent(events.KeyDeleted, "team-a", "key-del", 1, "")
	entries := []struct {
		name   string
		ev     *events.Event // nil: raw
		raw    string
		redact bool
	}{
		{"plaintext", rawKeyEvent(t, "old-plain", "team-a", "key-plain", `{"alg":"plaintext","ct":"`+ct+`"}`), "", true},
		{"does not open", rawKeyEvent(t, "old-open", "team-a", "key-open", `{"alg":"A256GCM","kid":"t1","nonce":"`+nonce+`","ct":"`+ct+`"}`), "", true},
		{"not an event", nil, `{"value":"` + sentinel + `"`, true},
		{"sealed", sealed, "", false},
		{"deleted", deleted, "", false},
	}
	subjectOf := func(ev *events.Event) string {
		if ev == nil {
			return "keyrelay.events.team-a.key-raw.key.created"
		}
		return ev.Subject()
	}
	for i, e := range entries {
		data := []byte(e.raw)
		if e.ev != nil {
			var err error
			if data, err = json.Marshal(e.ev); err != nil {
				t.Fatal(err)
			}
		}
		// As a worker before the eighteenth session stored them: the
		// original bytes, not marked redacted.
		m := &nats.Msg{Subject: "keyrelay.dlq.team-a.key-" + strconv.Itoa(i), Data: data, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, "dlq-"+strconv.Itoa(100+i))
		m.Header.Set(worker.HdrSubject, subjectOf(e.ev))
		m.Header.Set(worker.HdrStreamSeq, strconv.Itoa(100+i))
		m.Header.Set(worker.HdrStatus, string(events.StatusRejected))
		m.Header.Set(worker.HdrReason, "entry "+e.name)
		if e.ev != nil {
			m.Header.Set(worker.HdrEventID, e.ev.ID)
		}
		if _, err := b.js.PublishMsg(b.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// A summary stored the way workers store them now is left alone.
	summary := &nats.Msg{Subject: "keyrelay.dlq.team-a.key-s", Data: []byte(`{"redacted":true}`), Header: nats.Header{}}
	summary.Header.Set(worker.HdrRedacted, "true")
	summary.Header.Set(worker.HdrReason, "already a summary")
	if _, err := b.js.PublishMsg(b.ctx, summary); err != nil {
		t.Fatal(err)
	}

	dry, err := worker.RedactDeadLetters(b.ctx, b.js, b.kr, true)
	if err != nil {
		t.Fatal(err)
	}
	if dry.Checked != 5 || dry.Kept != 2 || len(dry.Redacted) != 3 {
		t.Fatalf("dry run: %+v", dry)
	}
	if before, _ := worker.ListDeadLetters(b.ctx, b.js, 0); len(before) != 6 || !dlqHolds(t, b, sentinel) {
		t.Fatalf("the dry run changed the DLQ: %d entries", len(before))
	}

	rep, err := worker.RedactDeadLetters(b.ctx, b.js, b.kr, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 5 || rep.Kept != 2 || len(rep.Redacted) != 3 || len(rep.Undecided) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	for _, r := range rep.Redacted {
		if r.NewSeq == 0 || strings.Contains(r.Why, sentinel) {
			t.Errorf("row %+v", r)
		}
	}
	dls, err := worker.ListDeadLetters(b.ctx, b.js, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 6 {
		t.Fatalf("%d entries after redaction, want 6", len(dls))
	}
	newSeqs := map[uint64]bool{}
	for _, r := range rep.Redacted {
		newSeqs[r.NewSeq] = true
	}
	for _, d := range dls {
		if d.Redacted && d.Reason != "already a summary" && !newSeqs[d.Seq] {
			t.Errorf("entry %d (event %q) is not one of the summaries stored %v", d.Seq, d.EventID, newSeqs)
		}
	}
	kept := map[string]bool{}
	for _, d := range dls {
		if !d.Redacted {
			kept[d.EventID] = true
			continue
		}
		var s worker.RedactedEntry
		if err := json.Unmarshal(d.Data, &s); err != nil || !s.Redacted {
			t.Errorf("entry %d: %v %s", d.Seq, err, d.Data)
		}
		if d.Reason != "already a summary" && (d.Status != events.StatusRejected || !strings.HasPrefix(d.Reason, "entry ") ||
			!strings.Contains(s.Reason, "redacted after the fact") || d.Subject != s.Subject || d.StreamSeq < 100) {
			t.Errorf("entry %d lost its headers: %+v, summary %+v", d.Seq, d, s)
		}
	}
	if len(kept) != 2 || !kept[sealed.ID] || !kept[deleted.ID] {
		t.Fatalf("originals kept: %v", kept)
	}
	if dlqHolds(t, b, sentinel) {
		t.Fatal("the sentinel value is still in the DLQ stream")
	}
	// Nothing left to do; a retry of the kept sealed entry still works.
	again, err := worker.RedactDeadLetters(b.ctx, b.js, b.kr, false)
	if err != nil || again.Checked != 2 || len(again.Redacted) != 0 {
		t.Fatalf("second run: %+v %v", again, err)
	}
}

// dlqHolds reports whether any message of the DLQ stream holds s in its
// data or headers (the sentinel appears in the sealed entry only sealed).
func dlqHolds(t *testing.T, b *bundle, s string) bool {
	t.Helper()
	st, err := b.js.Stream(b.ctx, worker.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	enc := []byte(base64.StdEncoding.EncodeToString([]byte(s)))
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(b.ctx, seq)
		if err != nil {
			continue
		}
		all := append(bytes.Clone(m.Data), []byte(strings.Join(flatten(m.Header), "\n"))...)
		if bytes.Contains(all, []byte(s)) || bytes.Contains(all, enc) {
			return true
		}
	}
	return false
}

func flatten(h nats.Header) []string {
	var out []string
	for k, vs := range h {
		out = append(out, k)
		out = append(out, vs...)
	}
	return out
}
