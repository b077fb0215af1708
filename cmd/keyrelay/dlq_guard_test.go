package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/internal/app"
	"github.com/keyrelay/keyrelay/worker"
)

// hostile is text that a terminal would act on: it clears the screen,
// sets the window title and moves the cursor home.
const hostile = "\x1b[2J\x1b]0;pwned\x07\r\x1b[H\u009b31m"

func hasControl(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r < 0xa0) {
			return true
		}
	}
	return false
}

// TestDLQListFiltersTerminalEscapes: `keyrelay dlq list` prints the
// reason, subject and ids of the entries as stored. A dead letter whose
// stored headers carry terminal control sequences (a hostile or corrupt
// entry, or a provider's error text) must not reach the terminal raw.
func TestDLQListFiltersTerminalEscapes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	m := &nats.Msg{Subject: "keyrelay.dlq.team-a.key-1", Data: []byte(`{}`), Header: nats.Header{}}
	m.Header.Set(worker.HdrSubject, "keyrelay.events.team-a.key-1"+hostile)
	m.Header.Set(worker.HdrEventID, "ev-1"+hostile)
	m.Header.Set(worker.HdrStatus, string(events.StatusFailed)+hostile)
	m.Header.Set(worker.HdrReason, "403 from the backend"+hostile)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(ctx, dlqCmd(&globals{configPath: cfg}), "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "403 from the backend") {
		t.Fatalf("the entry is not listed:\n%q", out)
	}
	if hasControl(out) {
		t.Fatalf("dlq list printed control characters:\n%q", out)
	}
}

// TestConfirmationsFiltersTerminalEscapes: the same for `keyrelay
// confirmations`, text and JSON lines, of a stored confirmation whose
// provider's version and secret ref carry control sequences.
func TestConfirmationsFiltersTerminalEscapes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	c := events.Confirmation{SpecVersion: events.SpecVersion, EventID: "ev-1", EventType: events.KeyCreated, TeamID: "team-a", KeyID: "key-1",
		Generation: 1, Status: events.StatusStored, Provider: "local", SecretRef: "litellm/x" + hostile, ProviderVersion: "v" + hostile,
		Time: time.Now().UTC()}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	// Valid JSON: the controls are \u escapes, which decode to them.
	if _, err := js.Publish(ctx, events.ConfirmationSubject("team-a", "key-1", "ev-1"), data); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--json"}} {
		out, err := runCommand(ctx, confirmationsCmd(&globals{configPath: cfg}), args...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "ev-1") {
			t.Fatalf("%v: the confirmation is not listed:\n%q", args, out)
		}
		if hasControl(out) {
			t.Fatalf("%v: confirmations printed control characters:\n%q", args, out)
		}
	}
}

// TestTermSafe: control characters become \u00XX escapes (a C1 control
// split across two writes too); text, newlines, tabs and other UTF-8 pass;
// JSON stays JSON.
func TestTermSafe(t *testing.T) {
	var b strings.Builder
	w := newTermSafe(&b)
	for _, s := range []string{"a\x1b[2Jb\tc\n", "é\u00a0ü\xc2", "\x9bd\x7f", `{"k":"` + "\u0085" + `"}`} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	want := "a\\u001b[2Jb\tc\n" + "é\u00a0ü" + "\\u009bd\\u007f" + `{"k":"\u0085"}`
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(`{"k":"\u0085"}`), &v); err != nil || v["k"] != "\u0085" {
		t.Fatal(v, err)
	}
}

// TestStatusFiltersTerminalEscapes: `keyrelay status` prints the
// heartbeat records of the serve processes as stored; a record whose host,
// version and readiness reason carry control sequences must not reach the
// terminal raw (text and --json).
func TestStatusFiltersTerminalEscapes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: app.WorkersBucket, History: 1, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	p := app.Presence{ID: "host-1-abc", Version: "v1" + hostile, Host: "host" + hostile, PID: 1, Started: time.Now(), Beat: time.Now(),
		Reason: "starting" + hostile}
	b, _ := json.Marshal(p)
	if _, err := kv.Put(ctx, "host-1-abc", b); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--json"}} {
		out, err := runCommand(ctx, statusCmd(&globals{configPath: cfg}), args...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "host-1-abc") {
			t.Fatalf("%v: the worker is not listed:\n%q", args, out)
		}
		if hasControl(out) {
			t.Fatalf("%v: status printed control characters:\n%q", args, out)
		}
	}
}

// TestConfirmationsFromSeqWithoutFollow: --from-seq without --follow was
// ignored (every retained confirmation was listed); it starts the listing
// at that confirmations-stream sequence.
func TestConfirmationsFromSeqWithoutFollow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	var second uint64
	for _, id := range []string{"ev-first", "ev-second"} {
		c := events.Confirmation{SpecVersion: events.SpecVersion, EventID: id, EventType: events.KeyCreated, TeamID: "team-a", KeyID: "key-1",
			Generation: 1, Status: events.StatusStored, Time: time.Now().UTC()}
		data, _ := json.Marshal(c)
		ack, err := js.Publish(ctx, events.ConfirmationSubject("team-a", "key-1", id), data)
		if err != nil {
			t.Fatal(err)
		}
		second = ack.Sequence
	}
	out, err := runCommand(ctx, confirmationsCmd(&globals{configPath: cfg}), "--from-seq", strconv.FormatUint(second, 10))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "ev-second") || strings.Contains(out, "ev-first") {
		t.Fatalf("--from-seq %d:\n%s", second, out)
	}
}

// TestDLQListJSONEmpty: `dlq list --json` on an empty DLQ prints an empty
// array, not null (which `jq '.[]'` refuses to iterate).
func TestDLQListJSONEmpty(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, _ := startTopology(ctx, t)
	cfg, _, _ := commandConfig(t, srv.URL, "")
	out, err := runCommand(ctx, dlqCmd(&globals{configPath: cfg}), "list", "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("%v: %q", err, out)
	}
}
