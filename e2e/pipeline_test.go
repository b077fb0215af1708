package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers/local"
)

func value(team, key string, gen uint64) string { return fmt.Sprintf("sk-%s-%s-g%d", team, key, gen) }

// TestPipelineThreeWorkersKill is the core end-to-end proof with the
// file-backed local provider (fsync on): three worker processes share one
// consumer; 10,000 events over 1,000 keys, including exact duplicates
// published again after the dedupe window and older generations
// re-published under new ids; one worker is killed with SIGKILL midway and
// restarted. Afterwards every key holds its newest value, no key has an
// extra provider version, and every event id has exactly one confirmation.
func TestPipelineThreeWorkersKill(t *testing.T) {
	sc := scenario{keys: 1000, teams: 10, fresh: 8, dupWindow: 2 * time.Second, seed: 1}
	e := newEnv(t, envOptions{dupWindow: sc.dupWindow})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	out := sc.run(ctx, t, e)

	store, err := local.New(local.Config{Path: e.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := sc.check(ctx, t, out, backendCheck{store: store})
	sc.report(t, local.Name, out, r)
	sc.checkLookups(ctx, t, out)
	if r.unrecorded != 0 {
		t.Errorf("%d local versions without their event id", r.unrecorded)
	}
}
