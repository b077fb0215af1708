package conjur_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
)

// redeliver puts req again and wants a Duplicate of version want that
// wrote nothing.
func redeliver(t *testing.T, p *conjur.Provider, req providers.PutRequest, want string) {
	t.Helper()
	before, err := p.Versions(context.Background(), req.Name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Put(context.Background(), req)
	if err != nil || !r.Duplicate || r.Created || r.Version != want {
		t.Fatalf("redelivery of %s: %+v %v, want a Duplicate of version %s", req.IdempotencyKey, r, err, want)
	}
	after, err := p.Versions(context.Background(), req.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || after[len(after)-1].Version != before[len(before)-1].Version {
		t.Errorf("redelivery of %s wrote: versions %+v, then %+v", req.IdempotencyKey, before, after)
	}
}

func wantCurrent(t *testing.T, p *conjur.Provider, name, version, value string) {
	t.Helper()
	s, err := p.Get(context.Background(), name, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != version || string(s.Value) != value {
		t.Errorf("current version %s (%d bytes), want version %s holding the newer writer's value", s.Version, len(s.Value), version)
	}
}

// A writer outside keyrelay (LiteLLM, an operator) adds a version after
// the event's: a redelivery of the event is a Duplicate of the event's
// version and neither adds a version nor overwrites the newer value.
func TestRedeliveryAfterForeignVersion(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	req := providers.PutRequest{Name: "foreign-after", Value: []byte("keyrelay-value"), IdempotencyKey: "ev-1", Owner: ownerA}
	if r, err := p.Put(context.Background(), req); err != nil || r.Version != "1" {
		t.Fatalf("Put: %+v %v", r, err)
	}
	for i := range 3 {
		srv.SetVariable("keyrelay", "keyrelay/foreign-after", nil, []byte(fmt.Sprintf("edited by hand %d", i)))
		redeliver(t, p, req, "1")
		redeliver(t, p, req, "1")
	}
	wantCurrent(t, p, "foreign-after", "4", "edited by hand 2")
}

// A newer keyrelay event wrote after the event: the redelivery of the
// older one finds its version in the history.
func TestRedeliveryAfterNewerEvent(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	ctx := context.Background()
	r1 := providers.PutRequest{Name: "newer", Value: []byte("first"), IdempotencyKey: "ev-1", Owner: ownerA}
	r2 := providers.PutRequest{Name: "newer", Value: []byte("second"), IdempotencyKey: "ev-2", Owner: ownerA}
	for _, req := range []providers.PutRequest{r1, r2} {
		if _, err := p.Put(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	srv.SetVariable("keyrelay", "keyrelay/newer", nil, []byte("third, by hand"))
	redeliver(t, p, r1, "1")
	redeliver(t, p, r2, "2")
	wantCurrent(t, p, "newer", "3", "third, by hand")
	vs, err := p.Versions(ctx, "newer")
	if err != nil || len(vs) != 3 {
		t.Fatalf("Versions: %+v %v", vs, err)
	}
	for i, want := range []string{"ev-1", "ev-2", ""} {
		if vs[i].IdempotencyKey != want {
			t.Errorf("version %s: IdempotencyKey %q, want %q", vs[i].Version, vs[i].IdempotencyKey, want)
		}
	}
	// UpdateTags keeps the history.
	if err := p.UpdateTags(ctx, providers.TagRequest{Name: "newer", Owner: ownerA, Tags: map[string]string{"env": "x"}}); err != nil {
		t.Fatal(err)
	}
	redeliver(t, p, r1, "1")
	if s, err := p.Get(ctx, "newer", ""); err != nil || s.Tags[conjur.AnnotationEventHistory] != "" {
		t.Errorf("Get shows the history as a tag: %v %v", s, err)
	}
}

// Once MaxVersions newer versions pushed the event's version out, the
// redelivery cannot be checked: it fails with a permanent ErrSuperseded
// and writes nothing.
func TestRedeliveryAfterVersionPushedOut(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	ctx := context.Background()
	req := providers.PutRequest{Name: "pushed", Value: []byte("keyrelay-value"), IdempotencyKey: "ev-old", Owner: ownerA}
	if _, err := p.Put(ctx, req); err != nil {
		t.Fatal(err)
	}
	for i := range conjur.MaxVersions {
		if i%2 == 0 {
			srv.SetVariable("keyrelay", "keyrelay/pushed", nil, []byte(fmt.Sprintf("by hand %d", i)))
			continue
		}
		if _, err := p.Put(ctx, providers.PutRequest{Name: "pushed", Value: []byte(fmt.Sprintf("keyrelay %d", i)), IdempotencyKey: fmt.Sprintf("ev-%d", i), Owner: ownerA}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := p.Put(ctx, req)
	wantErr(t, "redelivery of an event whose version is no longer retained", err, providers.ErrConflict, false)
	if !errors.Is(err, conjur.ErrSuperseded) {
		t.Errorf("error %v does not match ErrSuperseded", err)
	}
	wantCurrent(t, p, "pushed", "21", "keyrelay 19")
	// The newer events are still recognised.
	redeliver(t, p, providers.PutRequest{Name: "pushed", Value: []byte("keyrelay 19"), IdempotencyKey: "ev-19", Owner: ownerA}, "21")
	redeliver(t, p, providers.PutRequest{Name: "pushed", Value: []byte("keyrelay 1"), IdempotencyKey: "ev-1", Owner: ownerA}, "3")
}

// An event declared against a version whose value was never added (the
// add failed) and whose number another writer's value then took did not
// write: its redelivery writes, it is no Duplicate of the other value.
func TestRedeliveryAfterFailedAddAndForeignVersion(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	ctx := context.Background()
	if _, err := p.Put(ctx, providers.PutRequest{Name: "lost", Value: []byte("v1"), IdempotencyKey: "ev-first", Owner: ownerA}); err != nil {
		t.Fatal(err)
	}
	req := providers.PutRequest{Name: "lost", Value: []byte("keyrelay-value"), IdempotencyKey: "ev-lost", Owner: ownerA}
	srv.FailNext("/secrets/", http.StatusInternalServerError, 1)
	if _, err := p.Put(ctx, req); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Put with a failing add: %v", err)
	}
	srv.SetVariable("keyrelay", "keyrelay/lost", nil, []byte("by hand"))
	r, err := p.Put(ctx, req)
	if err != nil || r.Duplicate || r.Version != "3" {
		t.Fatalf("redelivery: %+v %v, want version 3 written", r, err)
	}
	wantCurrent(t, p, "lost", "3", "keyrelay-value")
	redeliver(t, p, req, "3")
}

// A version that goes away while a redelivery reads it (pushed out by
// newer writes, or the variable deleted) is no reason to fail the event
// for good: the error is a retryable conflict.
func TestRedeliveryVersionGoneMeanwhile(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	req := providers.PutRequest{Name: "gone", Value: []byte("keyrelay-value"), IdempotencyKey: "ev-1", Owner: ownerA}
	if _, err := p.Put(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	srv.BeforeRequest(func(r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/secrets/") && r.URL.Query().Get("version") != "" {
			once.Do(func() { srv.DeleteVariable("keyrelay/gone") })
		}
	})
	_, err := p.Put(context.Background(), req)
	wantErr(t, "redelivery whose version went away meanwhile", err, providers.ErrConflict, true)
}
