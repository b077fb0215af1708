package worker

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/local"
)

// bare implements only the core interface.
type bare struct{ providers.Provider }

func TestInstrumentProviderKeepsCapabilities(t *testing.T) {
	store, err := local.New(local.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(nil)
	full := m.InstrumentProvider("local", store)
	if _, ok := full.(providers.TagUpdater); !ok {
		t.Error("wrapper of a TagUpdater lost UpdateTags")
	}
	if _, ok := full.(providers.Versioner); !ok {
		t.Error("wrapper of a Versioner lost Versions")
	}
	if _, err := full.Put(context.Background(), providers.PutRequest{Name: "a", Value: []byte("v"), IdempotencyKey: "e1"}); err != nil {
		t.Fatal(err)
	}
	plain := m.InstrumentProvider("bare", bare{store})
	if _, ok := plain.(providers.TagUpdater); ok {
		t.Error("wrapper claims UpdateTags its provider lacks")
	}
	if _, ok := plain.(providers.Versioner); ok {
		t.Error("wrapper claims Versions its provider lacks")
	}
	// Listing: found through the wrapper, and counted.
	l, ok := providers.AsLister(full)
	if !ok {
		t.Fatal("wrapper of a Lister lost List")
	}
	if err := l.List(context.Background(), providers.ListRequest{}, func(providers.Listed) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.ProviderCalls.WithLabelValues("local", "list", "ok")); got != 1 {
		t.Errorf("list calls counted: %v, want 1", got)
	}
	if _, ok := providers.AsLister(plain); ok {
		t.Error("wrapper claims List its provider lacks")
	}
}

// Every event is counted by type and outcome, and timed by type, through
// the cached children as through the vectors themselves.
func TestEventHandledCounts(t *testing.T) {
	m := NewMetrics(nil)
	for range 3 {
		m.eventHandled("key.created", "stored", time.Millisecond)
	}
	m.eventHandled("key.created", "nak", time.Millisecond)
	m.eventHandled("key.deleted", "deleted", time.Millisecond)
	for _, c := range []struct {
		typ, outcome string
		want         float64
	}{{"key.created", "stored", 3}, {"key.created", "nak", 1}, {"key.deleted", "deleted", 1}, {"key.deleted", "stored", 0}} {
		if got := testutil.ToFloat64(m.Events.WithLabelValues(c.typ, c.outcome)); got != c.want {
			t.Errorf("events{%s,%s} = %v, want %v", c.typ, c.outcome, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.EventDuration); n != 2 {
		t.Errorf("%d duration series, want 2 (one per type)", n)
	}
}
