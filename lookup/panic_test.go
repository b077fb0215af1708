package lookup_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/lookup"
	"github.com/keyrelay/keyrelay/lookup/lookupclient"
	"github.com/keyrelay/keyrelay/settings"
)

// TestNATSLookupSurvivesAPanickingLoad: a load that panics (a provider
// SDK tripping over an answer it did not expect) fails that lookup. Over
// HTTP net/http recovers it; the NATS service ran the load in a goroutine
// of its own with nothing to recover it, so one lookup took the whole
// process down (the worker with it).
func TestNATSLookupSurvivesAPanickingLoad(t *testing.T) {
	srv := testenv.StartNATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	loader := lookup.LoaderFunc(func(_ context.Context, _ lookup.Scope, name string) (*lookup.Secret, error) {
		if name == "boom" {
			var m map[string]string
			m["x"] = "y" // assignment to entry in nil map
		}
		return &lookup.Secret{Name: name, Value: []byte("v"), Source: "test"}, nil
	})
	svc, err := lookup.New(lookup.Config{}, loader, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	auth, err := lookup.NewAuth(map[string]settings.LookupClient{"gw": {Global: true, Token: tokenGlobal}})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := lookup.NewServer(svc, auth, nil).ServeNATS(nc, lookup.NATSOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ms.Stop() }()
	c := &lookupclient.NATS{Conn: nc, Token: tokenGlobal, Timeout: 3 * time.Second}
	_, err = c.Get(context.Background(), "boom")
	if !errors.Is(err, lookupclient.ErrUnavailable) {
		t.Fatalf("a panicking load: %v; want a 503", err)
	}
	if s, err := c.Get(context.Background(), "fine"); err != nil || s.Value != "v" {
		t.Fatalf("after it: %v %v", s, err)
	}
}
