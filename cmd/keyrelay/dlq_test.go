package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/worker"
)

// TestDLQRedactCommand: `keyrelay dlq redact --dry-run` names the entry it
// would redact and changes nothing; `keyrelay dlq redact` replaces it by
// its summary and keeps the sealed one; neither prints the value.
func TestDLQRedactCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, js := startTopology(ctx, t)
	cfg, _, kr := commandConfig(t, srv.URL, "")
	const sentinel = "sk-SENTINEL-dlq-redact-cmd"
	sealed, err := events.NewKeyEvent(ctx, kr, events.KeyCreated, "team-a", "key-sealed", 1, []byte(sentinel), events.KeyData{})
	if err != nil {
		t.Fatal(err)
	}
	plain := &events.Event{SpecVersion: events.SpecVersion, ID: "old-plain", Type: events.KeyCreated, Time: time.Now().UTC(),
		TeamID: "team-a", KeyID: "key-plain", Generation: 1,
		Data: []byte(`{"value":{"alg":"plaintext","ct":"` + base64.StdEncoding.EncodeToString([]byte(sentinel)) + `"}}`)}
	for _, ev := range []*events.Event{sealed, plain} {
		data, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		m := &nats.Msg{Subject: "keyrelay.dlq.team-a." + ev.KeyID, Data: data, Header: nats.Header{}}
		m.Header.Set(worker.HdrSubject, ev.Subject())
		m.Header.Set(worker.HdrEventID, ev.ID)
		m.Header.Set(worker.HdrStatus, string(events.StatusFailed))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	redacted := func() int {
		dls, err := worker.ListDeadLetters(ctx, js, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, d := range dls {
			if d.Redacted {
				n++
			}
		}
		return n
	}
	out, err := runCommand(ctx, dlqCmd(&globals{configPath: cfg}), "redact", "--dry-run")
	if err != nil || !strings.Contains(out, `would redact 2 (keyrelay.events.team-a.key-plain.key.created, event "old-plain"): its value is not sealed`) ||
		!strings.Contains(out, "2 originals checked: 1 kept (proven safe), 1 would redact, 0 undecided") || redacted() != 0 {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, err = runCommand(ctx, dlqCmd(&globals{configPath: cfg}), "redact")
	if err != nil || !strings.Contains(out, "1 redacted") || redacted() != 1 {
		t.Fatalf("redact: %v\n%s", err, out)
	}
	if strings.Contains(out, sentinel) || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(sentinel))) {
		t.Fatal("a value was printed")
	}
}
