package vault_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/keyrelay/keyrelay/internal/testenv"
	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/vault"
)

// requestCounter counts the HTTP requests that reach Vault, as
// "METHOD kind" (kind: data, metadata, destroy, undelete, ...).
type requestCounter struct {
	base http.RoundTripper
	mu   sync.Mutex
	seen []string
}

func (c *requestCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	kind := r.URL.Path
	for _, k := range []string{"/data/", "/metadata/", "/destroy/", "/undelete/"} {
		if strings.Contains(r.URL.Path, k) {
			kind = strings.Trim(k, "/")
		}
	}
	c.mu.Lock()
	c.seen = append(c.seen, r.Method+" "+kind)
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

// take returns the requests seen since the last call, and forgets them.
func (c *requestCounter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.seen
	c.seen = nil
	return out
}

func counted(t *testing.T, p *vault.Provider) *requestCounter {
	t.Helper()
	c := &requestCounter{}
	vault.WrapTransport(p, func(base http.RoundTripper) http.RoundTripper { c.base = base; return c })
	return c
}

// TestVaultRequestCounts pins down the Vault requests each operation costs
// against the real server (the figures in doc.go and BENCHMARKS.md), so a
// regression shows: a rotation with the worker's hint is one request, a
// create two, a redelivery whose first write landed two and writes
// nothing.
func TestVaultRequestCounts(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	root := v.Client(t)
	p := openToken(t, v, nil)
	ctx := ctxT(t)
	c := counted(t, p)
	put(t, p, "warmup", "x", "ev-w", ownerA) // the one-time mount check
	c.take()

	type step struct {
		req     providers.PutRequest
		want    []string
		version string
		dup     bool
		created bool
		err     error
	}
	putReq := func(name, value, event, expected string, o providers.Owner) providers.PutRequest {
		return providers.PutRequest{Name: name, Value: []byte(value), IdempotencyKey: event, Owner: o, ExpectedVersion: expected}
	}
	run := func(t *testing.T, what string, s step) {
		t.Helper()
		res, err := p.Put(ctx, s.req)
		got := c.take()
		switch {
		case s.err != nil:
			wantErr(t, what, err, s.err, false)
		case err != nil:
			t.Fatalf("%s: %v", what, err)
		case res.Version != s.version || res.Duplicate != s.dup || res.Created != s.created:
			t.Errorf("%s: %+v, want version %s duplicate %v created %v", what, res, s.version, s.dup, s.created)
		}
		if strings.Join(got, ", ") != strings.Join(s.want, ", ") {
			t.Errorf("%s: %d requests [%s], want %d [%s]", what, len(got), strings.Join(got, ", "), len(s.want), strings.Join(s.want, ", "))
		}
		t.Logf("%s: %d requests (%s)", what, len(got), strings.Join(got, ", "))
	}

	t.Run("create, rotate, delete, restore", func(t *testing.T) {
		name := "counts/k"
		run(t, "create (no hint)", step{req: putReq(name, "sk-1", "ev-1", "", ownerA),
			want: []string{"PUT data", "PATCH metadata"}, version: "1", created: true})
		run(t, "rotation with the ledger's version", step{req: putReq(name, "sk-2", "ev-2", "1", ownerA),
			want: []string{"PUT data"}, version: "2"})
		run(t, "rotation without a hint", step{req: putReq(name, "sk-3", "ev-3", "", ownerA),
			want: []string{"PUT data", "GET data", "PUT data"}, version: "3"})
		run(t, "rotation with new tags", step{req: providers.PutRequest{Name: name, Value: []byte("sk-4"), IdempotencyKey: "ev-4", Owner: ownerA,
			ExpectedVersion: "3", Tags: map[string]string{"env": "prod"}}, want: []string{"PUT data", "PATCH metadata"}, version: "4"})
		run(t, "same tags again", step{req: providers.PutRequest{Name: name, Value: []byte("sk-5"), IdempotencyKey: "ev-5", Owner: ownerA,
			ExpectedVersion: "4", Tags: map[string]string{"env": "prod"}}, want: []string{"PUT data"}, version: "5"})
		run(t, "a hint that is not a version number", step{req: putReq(name, "sk-6", "ev-6", "AWSCURRENT", ownerA),
			want: []string{"PUT data", "GET data", "PUT data"}, version: "6"})
		if err := p.Delete(ctx, providers.DeleteRequest{Name: name, Owner: ownerA}); err != nil {
			t.Fatal(err)
		}
		if got := c.take(); len(got) != 2 {
			t.Errorf("delete: %d requests %v, want 2 (GET metadata, DELETE data)", len(got), got)
		}
		run(t, "restore after a delete (no hint)", step{req: putReq(name, "sk-7", "ev-7", "", ownerA),
			want: []string{"PUT data", "GET data", "PUT data", "PUT undelete"}, version: "7", created: true})
		wantValue(t, p, name, "", "sk-7")
		wantValue(t, p, name, "6", "sk-6")
	})

	t.Run("redelivery after the write landed", func(t *testing.T) {
		// The worker wrote version 2 for ev-2, crashed before its ledger
		// commit, and ev-2 comes again with the ledger's version 1.
		name := "counts/redelivery"
		put(t, p, name, "sk-1", "ev-1", ownerA)
		if _, err := p.Put(ctx, putReq(name, "sk-2", "ev-2", "1", ownerA)); err != nil {
			t.Fatal(err)
		}
		c.take()
		run(t, "redelivery with a stale hint", step{req: putReq(name, "sk-2", "ev-2", "1", ownerA),
			want: []string{"PUT data", "GET data"}, version: "2", dup: true})
		run(t, "redelivery without a hint", step{req: putReq(name, "sk-2", "ev-2", "", ownerA),
			want: []string{"PUT data", "GET data"}, version: "2", dup: true})
		wantVersions(t, p, name, "ev-1", "ev-2")
	})

	t.Run("someone else wrote since", func(t *testing.T) {
		name := "counts/foreign"
		put(t, p, name, "sk-1", "ev-1", ownerA)
		// Not keyrelay: a version of its own, and the secret taken over.
		if _, err := root.Logical().WriteWithContext(ctx, "secret/data/"+name, map[string]any{"data": map[string]any{"key": "sk-theirs"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := root.Logical().WriteWithContext(ctx, "secret/metadata/"+name, map[string]any{"custom_metadata": map[string]any{"owner": "someone"}}); err != nil {
			t.Fatal(err)
		}
		c.take()
		run(t, "rotation after a foreign write", step{req: putReq(name, "sk-2", "ev-2", "1", ownerA),
			want: []string{"PUT data", "GET data"}, err: providers.ErrNotOwned})
		wantValue(t, p, name, "", "sk-theirs")
	})

	t.Run("a keyrelay-owned secret written by someone else", func(t *testing.T) {
		// LiteLLM or a hand edit wrote a version, owner tags untouched:
		// the guard lets keyrelay write on top of it, as before.
		name := "counts/edited"
		put(t, p, name, "sk-1", "ev-1", ownerA)
		if _, err := root.Logical().WriteWithContext(ctx, "secret/data/"+name, map[string]any{"data": map[string]any{"key": "sk-edited"}}); err != nil {
			t.Fatal(err)
		}
		c.take()
		run(t, "rotation after an edit", step{req: putReq(name, "sk-2", "ev-2", "1", ownerA),
			want: []string{"PUT data", "GET data", "PUT data"}, version: "3"})
	})

	t.Run("owner changed without a new version", func(t *testing.T) {
		// Another key adopted the secret with UpdateTags (no new
		// version): the hint still matches. The write is taken back.
		name := "counts/adopted"
		put(t, p, name, "sk-a", "ev-1", ownerA)
		if err := p.UpdateTags(ctx, providers.TagRequest{Name: name, Owner: ownerB, Adopt: true}); err != nil {
			t.Fatal(err)
		}
		c.take()
		run(t, "rotation by the former owner", step{req: putReq(name, "sk-mine", "ev-2", "1", ownerA),
			want: []string{"PUT data", "GET data", "PUT data", "PUT destroy"}, err: providers.ErrNotOwned})
		s := wantValue(t, p, name, "", "sk-a")
		if s.Version != "3" || !providers.IsOwnedBy(s.Tags, ownerB) {
			t.Errorf("after the take-back: version %s tags %v", s.Version, s.Tags)
		}
		vs, err := p.Versions(ctx, name)
		if err != nil || len(vs) != 3 || !vs[1].Destroyed {
			t.Errorf("versions %+v %v: want version 2 (the former owner's) destroyed", vs, err)
		}
		_, err = p.Get(ctx, name, "2")
		wantErr(t, "Get of the taken-back version", err, providers.ErrNotFound, false)
	})

	t.Run("a hint from elsewhere", func(t *testing.T) {
		// A version number that does not match: the checked path.
		name := "counts/elsewhere"
		c.take() // the reads of the subtests before
		run(t, "hint on a missing secret", step{req: putReq(name, "sk-1", "ev-1", "7", ownerA),
			want: []string{"PUT data", "GET data", "GET metadata", "PUT data", "PATCH metadata"}, version: "1", created: true})
		run(t, "hint ahead of the secret", step{req: putReq(name, "sk-2", "ev-2", "5", ownerA),
			want: []string{"PUT data", "GET data", "PUT data"}, version: "2"})
	})
}

// TestVaultReadsTheFormerFormat: secrets whose event ids are recorded in
// custom_metadata (keyrelay-event-<version>), as written before the event
// id moved into the data, keep working: Get and Versions report the event,
// a redelivery is a Duplicate, and a new version records its id in the
// data.
func TestVaultReadsTheFormerFormat(t *testing.T) {
	v := testenv.StartVault(t, testenv.VaultOptions{})
	root := v.Client(t)
	p := openToken(t, v, nil)
	ctx := ctxT(t)
	name := "former/k"
	if _, err := root.Logical().WriteWithContext(ctx, "secret/metadata/"+name, map[string]any{"custom_metadata": map[string]any{
		providers.ManagedByTag: "keyrelay", providers.TeamTag: ownerA.TeamID, providers.KeyTag: ownerA.KeyID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().WriteWithContext(ctx, "secret/data/"+name, map[string]any{"data": map[string]any{"key": "sk-old"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().JSONMergePatch(ctx, "secret/metadata/"+name, map[string]any{"custom_metadata": map[string]any{"keyrelay-event-1": "ev-old"}}); err != nil {
		t.Fatal(err)
	}
	if s := wantValue(t, p, name, "", "sk-old"); s.Tags[providers.EventTag] != "ev-old" {
		t.Errorf("Get tags %v", s.Tags)
	}
	// A redelivery of the event that wrote version 1 (the worker passes
	// no hint for the event its ledger records).
	r, err := p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-old"), IdempotencyKey: "ev-old", Owner: ownerA})
	if err != nil || !r.Duplicate || r.Version != "1" {
		t.Errorf("redelivery: %+v %v", r, err)
	}
	// The next rotation, with the ledger's version, writes the new format
	// and leaves the former record alone.
	r, err = p.Put(ctx, providers.PutRequest{Name: name, Value: []byte("sk-new"), IdempotencyKey: "ev-new", Owner: ownerA, ExpectedVersion: "1"})
	if err != nil || r.Version != "2" {
		t.Fatalf("rotation of a former-format secret: %+v %v", r, err)
	}
	wantVersions(t, p, name, "ev-old", "ev-new")
	if s := wantValue(t, p, name, "", "sk-new"); s.Tags[providers.EventTag] != "ev-new" {
		t.Errorf("Get tags %v", s.Tags)
	}
}

// wantVersions checks the event id of each version, oldest first.
func wantVersions(t *testing.T, p *vault.Provider, name string, events ...string) {
	t.Helper()
	vs, err := p.Versions(ctxT(t), name)
	if err != nil {
		t.Fatalf("Versions %s: %v", name, err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, v.IdempotencyKey)
	}
	if fmt.Sprint(got) != fmt.Sprint(events) {
		t.Errorf("Versions %s: events %v, want %v", name, got, events)
	}
}
