package conjur_test

import (
	"context"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur/conjurfake"
)

// List with Every must name every variable under the prefix, whoever
// declared it: a drift scan takes a name it does not list for missing.
// Conjur's search=keyrelay finds only the variables whose id or
// annotations hold the word keyrelay: in a policy branch named otherwise,
// a variable another tool declared was left out.
func TestListEveryFindsForeignVariablesInAnyBranch(t *testing.T) {
	srv := conjurfake.New(account)
	t.Cleanup(srv.Close)
	srv.AddBranch("llm")
	srv.AddUser("host/gw", "gw-key", "llm")
	cfg := conjur.Config{APIBase: srv.URL, Account: account, Username: "host/gw", APIKey: "gw-key",
		CAPEM: srv.CACertPEM(), SSLVerify: true, PolicyBranch: "llm", ListPageSize: 2}
	p := newProvider(t, cfg)
	ctx := context.Background()
	for _, n := range []string{"team-x/a", "team-x/b", "team-x/c"} {
		if _, err := p.Put(ctx, providers.PutRequest{Name: n, Value: []byte("v"), IdempotencyKey: "e-" + n,
			Owner: providers.Owner{TeamID: "team-x", KeyID: n}}); err != nil {
			t.Fatalf("Put %s: %v", n, err)
		}
	}
	id, err := p.VariableID("team-x/foreign")
	if err != nil {
		t.Fatal(err)
	}
	srv.SetVariable("llm", id, map[string]string{"owner-tool": "terraform"}, []byte("theirs"))

	got := listAll(t, p, providers.ListRequest{Prefix: "team-x/", Every: true})
	wantNames(t, "List Every", got, "team-x/a", "team-x/b", "team-x/c", "team-x/foreign")
	// Without Every only keyrelay's.
	got = listAll(t, p, providers.ListRequest{Prefix: "team-x/"})
	wantNames(t, "List", got, "team-x/a", "team-x/b", "team-x/c")
}
