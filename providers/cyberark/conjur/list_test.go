package conjur_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur"
	"github.com/keyrelay/keyrelay/providers/cyberark/conjur/conjurfake"
)

// listAll returns the names List reports for req, failing on an error or a
// name reported twice.
func listAll(t *testing.T, p providers.Lister, req providers.ListRequest) []string {
	t.Helper()
	var got []string
	seen := map[string]bool{}
	err := p.List(context.Background(), req, func(l providers.Listed) error {
		if seen[l.Name] {
			t.Errorf("List %+v: %q reported twice", req, l.Name)
		}
		seen[l.Name] = true
		got = append(got, l.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("List %+v: %v", req, err)
	}
	sort.Strings(got)
	return got
}

func wantNames(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: listed %q, want %q", what, got, want)
	}
}

func TestListScope(t *testing.T) {
	srv := newFake(t)
	srv.AddUser("admin", "admin-key", "root")
	cfg := config(srv)
	cfg.ListPageSize = 2
	p := newProvider(t, cfg)
	put(t, p, "a/one", "v")
	put(t, p, "a/two", "v")
	ownerB := providers.Owner{TeamID: "team-b", KeyID: "key-b"}
	if _, err := p.Put(context.Background(), providers.PutRequest{Name: "b/one", Value: []byte("v"), Owner: ownerB}); err != nil {
		t.Fatal(err)
	}
	// Not keyrelay's: no managed-by annotation, or another value.
	srv.SetVariable("keyrelay", "keyrelay/a/foreign", map[string]string{"owner-tool": "terraform"}, []byte("v"))
	srv.SetVariable("keyrelay", "keyrelay/a/impostor", map[string]string{providers.ManagedByTag: "someone-else", providers.TeamTag: "team-a"}, []byte("v"))
	// Declared with keyrelay's annotations but no value (a Put that failed
	// before adding it): Get says not found, so List does not report it.
	srv.FailNext("/secrets/", http.StatusInternalServerError, 1)
	if _, err := p.Put(context.Background(), providers.PutRequest{Name: "a/declared", Value: []byte("v"), Owner: ownerA}); err == nil {
		t.Fatal("Put with a failing secret write succeeded")
	}
	if !srv.Exists("keyrelay/a/declared") {
		t.Fatal("the failed Put did not declare the variable")
	}
	// A team's own keyrelay instance, on the sub-branch keyrelay/team-a.
	teamCfg := config(srv)
	teamCfg.Username, teamCfg.APIKey, teamCfg.PolicyBranch = "host/team-a", "team-a-key", "keyrelay/team-a"
	team := newProvider(t, teamCfg)
	put(t, team, "t/one", "v")
	// Outside the branch.
	root := cfg
	root.Username, root.APIKey, root.PolicyBranch, root.AllowRootPolicy = "admin", "admin-key", "root", true
	rootP := newProvider(t, root)
	put(t, rootP, "litellm/at-root", "v")

	wantNames(t, "branch keyrelay", listAll(t, p, providers.ListRequest{}), "a/one", "a/two", "b/one")
	wantNames(t, "branch keyrelay, team-b", listAll(t, p, providers.ListRequest{TeamID: "team-b"}), "b/one")
	wantNames(t, "branch keyrelay, prefix a/", listAll(t, p, providers.ListRequest{Prefix: "a/", TeamID: "team-a"}), "a/one", "a/two")
	wantNames(t, "branch keyrelay, prefix a/o", listAll(t, p, providers.ListRequest{Prefix: "a/o"}), "a/one")
	// The team's instance lists its variable under the name it wrote, and
	// sees nothing of the parent branch.
	wantNames(t, "branch keyrelay/team-a", listAll(t, team, providers.ListRequest{}), "t/one")
	// The root policy's own variables only.
	wantNames(t, "root", listAll(t, rootP, providers.ListRequest{}), "litellm/at-root")

	// Listed owners are the ownership annotations.
	var owners []providers.Owner
	_ = p.List(context.Background(), providers.ListRequest{Prefix: "b/"}, func(l providers.Listed) error {
		owners = append(owners, l.Owner)
		return nil
	})
	if len(owners) != 1 || owners[0] != ownerB {
		t.Errorf("owners %+v, want [%+v]", owners, ownerB)
	}
}

// TestListRequests checks the requests List sends: the SDK's resources
// request with kind=variable, search=keyrelay and limit=list_page_size,
// paging on with overlapping offsets until a short page.
func TestListRequests(t *testing.T) {
	srv := newFake(t)
	cfg := config(srv)
	cfg.ListPageSize = 4
	p := newProvider(t, cfg)
	for i := 0; i < 9; i++ {
		put(t, p, fmt.Sprintf("k%02d", i), "v")
	}
	var mu sync.Mutex
	var queries []string
	srv.BeforeRequest(func(r *http.Request) {
		if strings.TrimSuffix(r.URL.Path, "/") == "/resources/"+account {
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
		}
	})
	wantNames(t, "all", listAll(t, p, providers.ListRequest{}), "k00", "k01", "k02", "k03", "k04", "k05", "k06", "k07", "k08")
	// Pages at offsets 0 (k00-k03), 3 (k03-k06), 6 (k06-k08: short).
	want := []string{
		"kind=variable&limit=4&search=keyrelay",
		"kind=variable&limit=4&offset=3&search=keyrelay",
		"kind=variable&limit=4&offset=6&search=keyrelay",
	}
	if strings.Join(queries, " ") != strings.Join(want, " ") {
		t.Errorf("queries\n%q\nwant\n%q", queries, want)
	}
}

// TestListSurvivesChangesBetweenPages deletes and adds variables between
// the pages of a listing: every variable that exists for the whole listing
// is reported, and none twice.
func TestListSurvivesChangesBetweenPages(t *testing.T) {
	for name, change := range map[string]func(srv *conjurfake.Server){
		"two deleted before the offset": func(srv *conjurfake.Server) {
			srv.DeleteVariable("keyrelay/k00")
			srv.DeleteVariable("keyrelay/k01")
		},
		"all of the first page deleted": func(srv *conjurfake.Server) {
			for _, id := range []string{"k00", "k01", "k02"} {
				srv.DeleteVariable("keyrelay/" + id)
			}
		},
		"added before the offset": func(srv *conjurfake.Server) {
			for _, id := range []string{"j0", "j1", "j2", "j3"} {
				srv.SetVariable("keyrelay", "keyrelay/"+id, map[string]string{providers.ManagedByTag: providers.ManagedByValue}, []byte("v"))
			}
		},
		"deleted and added": func(srv *conjurfake.Server) {
			srv.DeleteVariable("keyrelay/k00")
			srv.DeleteVariable("keyrelay/k02")
			srv.SetVariable("keyrelay", "keyrelay/j0", map[string]string{providers.ManagedByTag: providers.ManagedByValue}, []byte("v"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := newFake(t)
			cfg := config(srv)
			cfg.ListPageSize = 3
			p := newProvider(t, cfg)
			for i := 0; i < 10; i++ {
				put(t, p, fmt.Sprintf("k%02d", i), "v")
			}
			var mu sync.Mutex
			pages := 0
			srv.BeforeRequest(func(r *http.Request) {
				if strings.TrimSuffix(r.URL.Path, "/") != "/resources/"+account {
					return
				}
				mu.Lock()
				pages++
				second := pages == 2
				mu.Unlock()
				if second {
					change(srv)
				}
			})
			got := listAll(t, p, providers.ListRequest{})
			if pages < 2 {
				t.Fatalf("%d list requests: the change was never made", pages)
			}
			listed := map[string]bool{}
			for _, n := range got {
				listed[n] = true
			}
			for i := 3; i < 10; i++ {
				if n := fmt.Sprintf("k%02d", i); !listed[n] {
					t.Errorf("%q, present for the whole listing, was not listed (got %q)", n, got)
				}
			}
		})
	}
}

func TestListErrors(t *testing.T) {
	srv := newFake(t)
	cfg := config(srv)
	cfg.ListPageSize = 2
	p := newProvider(t, cfg)
	put(t, p, "x", "v")
	ctx := context.Background()
	list := func() error {
		return p.List(ctx, providers.ListRequest{}, func(providers.Listed) error { return nil })
	}
	for _, c := range []struct {
		status    int
		sentinel  error
		retryable bool
	}{
		{http.StatusForbidden, providers.ErrAccessDenied, false},
		{http.StatusTooManyRequests, providers.ErrThrottled, true},
		{http.StatusInternalServerError, providers.ErrUnavailable, true},
	} {
		srv.FailNext("/resources/", c.status, 1)
		wantErr(t, fmt.Sprintf("List with HTTP %d", c.status), list(), c.sentinel, c.retryable)
	}
	// One 401 re-authenticates; two are access denied.
	srv.FailNext("/resources/", http.StatusUnauthorized, 1)
	if err := list(); err != nil {
		t.Fatalf("List after one 401: %v", err)
	}
	srv.FailNext("/resources/", http.StatusUnauthorized, 2)
	wantErr(t, "List after two 401s", list(), providers.ErrAccessDenied, false)

	// A wrong API key.
	bad := config(srv)
	bad.APIKey = "wrong-" + apiKey
	err := newProvider(t, bad).List(ctx, providers.ListRequest{}, func(providers.Listed) error { return nil })
	wantErr(t, "List with a wrong API key", err, providers.ErrAccessDenied, false)

	// A page size above the appliance's api_resource_list_limit_max.
	big := config(srv)
	big.ListPageSize = conjurfake.DefaultListLimitMax + 1
	err = newProvider(t, big).List(ctx, providers.ListRequest{}, func(providers.Listed) error { return nil })
	wantErr(t, "List above the appliance's maximum", err, providers.ErrInvalid, false)
	if !strings.Contains(err.Error(), conjur.OptionListPageSize) {
		t.Errorf("error does not name the option: %v", err)
	}
}
