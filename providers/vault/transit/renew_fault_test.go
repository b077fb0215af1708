package transit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keyrelay/keyrelay/events"
	"github.com/keyrelay/keyrelay/providers/vault/transit"
)

// A periodic token (the usual token of a long-running service that does
// not log in) lives only as long as it is renewed within its period. The
// KV provider renews its token; the Transit sealer must too, or sealing
// stops with a permanent access denied once the first period ends.
func TestPeriodicTokenIsRenewed(t *testing.T) {
	v, root := startTransit(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	sec, err := root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"root"}, Period: "3s"})
	if err != nil {
		t.Fatal(err)
	}
	tok := sec.Auth.ClientToken
	s, err := transit.New(ctx, map[string]string{transit.OptionAddress: v.Addr, transit.OptionToken: tok, transit.OptionKeyName: "keyrelay"},
		func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(8 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		// A team of its own each time: a new data key, so a Transit call.
		b := events.Binding{TeamID: fmt.Sprintf("team-%d", i), KeyID: "key-1", Generation: 1}
		if _, err := s.Seal(ctx, []byte("sk-periodic"), b); err != nil {
			t.Fatalf("Seal %v after start: %v", time.Until(deadline)*-1+8*time.Second, err)
		}
		time.Sleep(time.Second)
	}
}
