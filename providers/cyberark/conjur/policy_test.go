package conjur_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
)

// wantConflict checks that err is Conjur's policy conflict as keyrelay
// reports it: a retryable ErrConflict carrying Conjur's Retry-After.
func wantConflict(t *testing.T, what string, err error) {
	t.Helper()
	wantErr(t, what, err, providers.ErrConflict, true)
	if ra := providers.RetryAfter(err); ra < time.Second {
		t.Errorf("%s: RetryAfter %v, want Conjur's Retry-After (at least 1s): %v", what, ra, err)
	}
}

// Puts of different names load policy into the one branch; Conjur refuses
// a load that overlaps another load of the branch (409 policy_conflict),
// so the provider serializes its loads per branch, also across provider
// instances of the process.
func TestConcurrentPutsOfDifferentNames(t *testing.T) {
	srv := newFake(t)
	srv.SetPolicyLoadTime(50 * time.Millisecond) // overlaps are certain
	ps := []*conjur.Provider{newProvider(t, config(srv)), newProvider(t, config(srv))}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req := providers.PutRequest{Name: fmt.Sprintf("parallel-%d", i), Value: []byte(fmt.Sprint("v", i)), IdempotencyKey: fmt.Sprint("ev-", i), Owner: ownerA}
			_, err := ps[i%2].Put(context.Background(), req)
			if err != nil {
				// Allowed only as Conjur's conflict, and then a retry
				// after the hint succeeds.
				wantConflict(t, fmt.Sprintf("Put %d", i), err)
				time.Sleep(providers.RetryAfter(err))
				_, err = ps[i%2].Put(context.Background(), req)
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put %d: %v", i, err)
			continue
		}
		vs, err := ps[0].Versions(context.Background(), fmt.Sprintf("parallel-%d", i))
		if err != nil || len(vs) != 1 {
			t.Errorf("parallel-%d: versions %+v %v, want one", i, vs, err)
		}
	}
	if c := srv.PolicyConflicts(); c != 0 {
		t.Errorf("%d policy loads of one process conflicted; its loads of a branch must be serialized", c)
	}
}

// A policy load of the branch by another client: the provider waits the
// Retry-After Conjur asks for and tries once more when its deadline
// allows; otherwise the error is a retryable ErrConflict with the hint.
func TestPolicyConflictWithAnotherClient(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))

	release := srv.HoldPolicyLoad("keyrelay")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Put(ctx, providers.PutRequest{Name: "held", Value: []byte("v"), IdempotencyKey: "ev-1", Owner: ownerA})
	wantConflict(t, "Put while another client loads the branch", err)
	if !strings.Contains(err.Error(), "policy_conflict") {
		t.Errorf("error does not name Conjur's code: %v", err)
	}
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("Put waited %v for a retry its deadline had no room for", d)
	}
	if srv.Exists("keyrelay/held") {
		t.Error("a refused load declared the variable")
	}
	err = p.Delete(ctx, providers.DeleteRequest{Name: "held", Owner: ownerA})
	wantErr(t, "Delete of a missing variable", err, providers.ErrNotFound, false)

	// The other client's load ends before the retry: the Put goes through.
	go func() {
		for deadline := time.Now().Add(10 * time.Second); srv.PolicyConflicts() < 2 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		release() // once the Put met the other load
	}()
	r, err := p.Put(context.Background(), providers.PutRequest{Name: "held", Value: []byte("v"), IdempotencyKey: "ev-1", Owner: ownerA})
	if err != nil || r.Version != "1" {
		t.Fatalf("Put retried after the other load: %+v %v", r, err)
	}
	if c := srv.PolicyConflicts(); c != 2 {
		t.Errorf("PolicyConflicts() = %d, want 2", c)
	}

	// UpdateTags and Delete load policy too.
	release = srv.HoldPolicyLoad("keyrelay")
	defer release()
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	wantConflict(t, "UpdateTags", p.UpdateTags(ctx, providers.TagRequest{Name: "held", Owner: ownerA, Tags: map[string]string{"a": "b"}}))
	wantConflict(t, "Delete", p.Delete(ctx, providers.DeleteRequest{Name: "held", Owner: ownerA}))
	if !srv.Exists("keyrelay/held") {
		t.Error("a refused delete removed the variable")
	}
}

// Put records its event against the version it expects to write; when
// another writer's version comes in between, a second load records the
// version actually written. If that load fails, the redelivery of the
// event must still find the version and write no second one.
func TestRedeliveryAfterUnrecordedEvent(t *testing.T) {
	srv := newFake(t)
	p := newProvider(t, config(srv))
	ctx := context.Background()
	const id = "keyrelay/raced"
	var once sync.Once
	srv.BeforeRequest(func(r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/secrets/") {
			once.Do(func() {
				// Another tool adds a version between the declaration and
				// the value, and the load recording the event fails.
				srv.SetVariable("keyrelay", id, nil, []byte("litellm-value"))
				srv.FailNext("/policies/", http.StatusInternalServerError, 1)
			})
		}
	})
	req := providers.PutRequest{Name: "raced", Value: []byte("keyrelay-value"), IdempotencyKey: "ev-raced", Owner: ownerA}
	_, err := p.Put(ctx, req)
	wantErr(t, "Put whose event could not be recorded", err, providers.ErrUnavailable, true)
	if !strings.Contains(err.Error(), "version 2 was written") {
		t.Errorf("error does not say the value was written: %v", err)
	}
	for i := range 2 {
		r, err := p.Put(ctx, req)
		if err != nil || !r.Duplicate || r.Version != "2" || r.Created {
			t.Fatalf("redelivery %d: %+v %v, want a Duplicate of version 2", i+1, r, err)
		}
	}
	vs, err := p.Versions(ctx, "raced")
	if err != nil || len(vs) != 2 {
		t.Fatalf("versions %+v %v, want 2 (the other tool's and the event's)", vs, err)
	}
	if vs[1].Version != "2" || vs[1].IdempotencyKey != req.IdempotencyKey || vs[0].IdempotencyKey != "" {
		t.Errorf("the event is not recorded against version 2: %+v", vs)
	}
	if a := srv.Annotations(id); a[conjur.AnnotationEventVersion] != "2" {
		t.Errorf("annotations %v, want the event recorded against version 2", a)
	}
	s, err := p.Get(ctx, "raced", "")
	if err != nil || string(s.Value) != "keyrelay-value" {
		t.Fatalf("Get: %v", err)
	}

	// Another writer's newer value on top: the event's version is still
	// found, and the newer value is not overwritten.
	srv.SetVariable("keyrelay", id, nil, []byte("edited by hand"))
	r, err := p.Put(ctx, req)
	if err != nil || !r.Duplicate || r.Version != "2" {
		t.Fatalf("redelivery after another writer's newer value: %+v %v, want a Duplicate of version 2", r, err)
	}
	// A declaration whose value was never added is not a write either.
	srv.FailNext("/secrets/", http.StatusInternalServerError, 1)
	req2 := providers.PutRequest{Name: "raced", Value: []byte("next"), IdempotencyKey: "ev-next", Owner: ownerA}
	if _, err := p.Put(ctx, req2); !errors.Is(err, providers.ErrUnavailable) {
		t.Fatalf("Put with a failing add: %v", err)
	}
	r, err = p.Put(ctx, req2)
	if err != nil || r.Duplicate || r.Version != "4" {
		t.Fatalf("retry of a Put whose value was never added: %+v %v, want version 4 written", r, err)
	}
}
