package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers"
)

// stamper gives every write a stamp of its own (as Google's provider
// gives a version's create time) and records the retirements it gets.
type stamper struct {
	providers.Provider
	mu      sync.Mutex
	n       int
	stamps  map[string]string // version -> stamp of the write that made it
	retired []providers.RetireRequest
}

func (s *stamper) Unwrap() providers.Provider { return s.Provider }

func (s *stamper) Put(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	res, err := s.Provider.Put(ctx, req)
	if err == nil {
		s.mu.Lock()
		if s.stamps[res.Version] == "" {
			s.n++
			s.stamps[res.Version] = time.Unix(int64(s.n), 0).UTC().Format(time.RFC3339Nano)
		}
		res.Stamp = s.stamps[res.Version]
		s.mu.Unlock()
	}
	return res, err
}

func (s *stamper) Retire(ctx context.Context, req providers.RetireRequest) error {
	s.mu.Lock()
	s.retired = append(s.retired, req)
	s.mu.Unlock()
	rt, _ := providers.AsRetirer(s.Provider)
	return rt.Retire(ctx, req)
}

func (s *stamper) seen() []providers.RetireRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]providers.RetireRequest(nil), s.retired...)
}

// TestRetirementCarriesTheReplacingWritesStamp: a retirement scheduled by
// a rotation tells the backend which write replaced the version
// (RetireRequest.ReplacedBy, the rotation's PutResult.Stamp), so that a
// backend whose version numbers start again after a delete and re-create
// (Google) never retires the re-created secret's version of that number.
func TestRetirementCarriesTheReplacingWritesStamp(t *testing.T) {
	st := &stamper{stamps: map[string]string{}}
	b := setup(t, setupOptions{wrap: map[string]func(providers.Provider) providers.Provider{
		"local": func(p providers.Provider) providers.Provider { st.Provider = p; return st },
	}})
	b.startWorker(nil)
	b.publish(b.keyEvent(events.KeyCreated, "team-a", "k1", 1, "v1"))
	b.confirmations(1, 30*time.Second)
	le, _, err := b.ledgerGet("team-a", "k1")
	if err != nil {
		t.Fatal(err)
	}
	v1 := le.ProviderVersion
	ev, err := events.NewKeyEvent(b.ctx, b.kr, events.KeyRotated, "team-a", "k1", 2, []byte("v2"), events.KeyData{GracePeriodSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.publish(ev)
	b.confirmations(2, 30*time.Second)
	le, _, err = b.ledgerGet("team-a", "k1")
	if err != nil {
		t.Fatal(err)
	}
	v2 := le.ProviderVersion
	waitFor(t, func() bool { return len(st.seen()) > 0 })
	r := st.seen()[0]
	st.mu.Lock()
	want := st.stamps[v2]
	st.mu.Unlock()
	if r.Version != v1 || want == "" || r.ReplacedBy != want {
		t.Fatalf("retirement %+v; want version %s replaced by the stamp of the write of %s (%q)", r, v1, v2, want)
	}
}
