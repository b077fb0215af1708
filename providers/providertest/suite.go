package providertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyrelay/keyrelay/providers"
)

// Run runs the conformance suite against the providers newProvider builds
// (one per top-level subtest). It checks, skipping what the backend does not
// declare:
//
//   - PutGet: values round trip (ASCII, Unicode, 16 KB, binary when
//     Features.BinaryValues, 0 bytes per Features.EmptyValues); Get returns
//     the version Put reported; neither Put nor Get aliases the caller's or
//     the stored bytes.
//   - Versions: a second Put creates a new current version; with
//     Capabilities.Versions the previous one stays readable by
//     Get(name, version); Versioner lists both, exactly one current.
//   - Idempotency: a Put carrying the current version's IdempotencyKey is a
//     Duplicate of that version and writes nothing; another key after the
//     same value writes; an empty key never deduplicates.
//   - NotFound: Get, Delete, Versions and UpdateTags of a missing name fail
//     with ErrNotFound, classified permanent.
//   - Delete: soft and forced deletes hide the secret; deleting again is
//     ErrNotFound; a Put afterwards restores it (Created, and with
//     Capabilities.SoftDelete and Versions the old versions are kept).
//   - Ownership (Capabilities.Tags): a secret owned by one key is neither
//     overwritten, deleted nor retagged for another (ErrNotOwned) unless the
//     request sets Adopt, which transfers ownership.
//   - Tags (Capabilities.Tags): extra tags and the ownership tags round trip
//     and a request cannot forge managed-by; TagUpdater replaces the extra
//     tags without a new version.
//   - Concurrency: Features.Concurrency writers on one name fail with
//     nothing but a retryable ErrConflict, every successful write is a
//     distinct, readable version and none is lost; with retries all of them
//     land; writers on distinct names do not interfere.
//   - Names: names with slashes, and names that differ only in '/', '-',
//     '_', '.' or case, are distinct secrets; names up to
//     Features.MaxNameLength work and do not collide.
//   - ErrorHygiene: no error ever contains a value the suite wrote (checked
//     on every call, and with a planted "SENTINEL-c0ffee" value through an
//     ownership error, a not-found, a cancelled call and, for a
//     providers.Retirer, a refused Retire).
//   - List (when the provider is a providers.Lister, found with
//     providers.AsLister): List returns exactly the live secrets keyrelay
//     owns (not one written by CreateUnmanaged), each once, under the name
//     Put took and with its owner; ListRequest.TeamID and Prefix narrow it;
//     soft- and force-deleted secrets disappear; more than two pages
//     (Features.ListPageSize) of one team's secrets are all listed; an error
//     from fn stops the listing and is returned; a cancelled context fails.
//   - Retire (when the provider is a providers.Retirer, found with
//     providers.AsRetirer; skipped otherwise): after two writes, retiring
//     the first version makes Get of it fail with a permanent ErrNotFound
//     (with Features.RetireKeepsValue, Options.Retired reports it retired
//     instead) while the second stays current and readable; retiring it
//     again succeeds; retiring the current (or only) version fails with a
//     permanent ErrConflict and changes nothing; a version the backend does
//     not have is gone already (success, or ErrInvalid for an id that
//     cannot name one); a missing or deleted secret is ErrNotFound; with
//     Capabilities.Tags another owner is refused (ErrNotOwned) unless
//     Adopt; a cancelled context retires nothing.
//   - Context: a call with an already cancelled context fails with an error
//     matching context.Canceled and writes or deletes nothing.
//
// Every error any call returns must be a *providers.Error, or wrap one of
// the providers sentinels or a context error.
func Run(t *testing.T, newProvider func(t *testing.T) providers.Provider, opts Options) {
	t.Helper()
	opts = opts.withDefaults()
	runID := randHex(4)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if opts.Parallel {
				t.Parallel()
			}
			p := newProvider(t)
			if p == nil {
				t.Fatal("newProvider returned nil")
			}
			ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
			t.Cleanup(cancel)
			sh := &shared{p: p, opts: opts, caps: p.Capabilities(), base: opts.Prefix + runID + "/" + strings.ToLower(c.name) + "-" + randHex(3) + "/"}
			e := &env{t: t, ctx: ctx, sh: sh}
			t.Cleanup(sh.cleanup)
			c.run(e)
		})
	}
}

type testCase struct {
	name string
	run  func(e *env)
}

// shared is the state of one top-level subtest, shared by its children.
type shared struct {
	p    providers.Provider
	opts Options
	caps providers.Capabilities
	base string

	mu     sync.Mutex
	n      int
	names  []string
	values [][]byte
}

func (sh *shared) cleanup() {
	sh.mu.Lock()
	names := append([]string(nil), sh.names...)
	sh.mu.Unlock()
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = sh.p.Delete(ctx, providers.DeleteRequest{Name: n, Force: true, Adopt: true})
		cancel()
	}
}

// env is one (sub)test's handle on the provider under test. Every call goes
// through it so that every returned error is checked for classification and
// for leaked values.
type env struct {
	t   *testing.T
	ctx context.Context
	sh  *shared
}

func (e *env) run(name string, f func(e *env)) {
	e.t.Helper()
	e.t.Run(name, func(t *testing.T) {
		f(&env{t: t, ctx: e.ctx, sh: e.sh})
	})
}

func (e *env) features() Features              { return e.sh.opts.Features }
func (e *env) caps() providers.Capabilities    { return e.sh.caps }
func (e *env) provider() providers.Provider    { return e.sh.p }
func (e *env) skipUnless(ok bool, what string) { e.t.Helper(); skipUnless(e.t, ok, what) }

func skipUnless(t *testing.T, ok bool, what string) {
	t.Helper()
	if !ok {
		t.Skipf("backend does not declare %s", what)
	}
}

// name returns a fresh name ending in suffix and registers it for cleanup.
func (e *env) name(suffix string) string {
	e.sh.mu.Lock()
	defer e.sh.mu.Unlock()
	e.sh.n++
	n := fmt.Sprintf("%s%d/%s", e.sh.base, e.sh.n, suffix)
	e.sh.names = append(e.sh.names, n)
	return n
}

// exactName registers a name built by the caller for cleanup.
func (e *env) exactName(n string) string {
	e.sh.mu.Lock()
	defer e.sh.mu.Unlock()
	e.sh.names = append(e.sh.names, n)
	return n
}

// value returns a unique value starting with label and remembers it, so
// that any error containing it is reported.
func (e *env) value(label string) []byte {
	return e.remember([]byte(label + "-" + randHex(8)))
}

func (e *env) remember(v []byte) []byte {
	e.sh.mu.Lock()
	defer e.sh.mu.Unlock()
	if len(v) >= 8 {
		e.sh.values = append(e.sh.values, bytes.Clone(v))
	}
	return v
}

func (e *env) key(label string) string { return "idem-" + label + "-" + randHex(6) }

var (
	ownerA = providers.Owner{TeamID: "team-a", KeyID: "key-a"}
	ownerB = providers.Owner{TeamID: "team-b", KeyID: "key-b"}
	// ownerA2 is another key of ownerA's team.
	ownerA2 = providers.Owner{TeamID: "team-a", KeyID: "key-a2"}
)

var sentinels = []error{
	providers.ErrNotFound, providers.ErrNotOwned, providers.ErrConflict,
	providers.ErrAccessDenied, providers.ErrInvalid, providers.ErrThrottled,
	providers.ErrUnavailable, context.Canceled, context.DeadlineExceeded,
}

// check verifies the invariants every returned error must satisfy.
func (e *env) check(op string, err error) {
	e.t.Helper()
	if err == nil {
		return
	}
	var pe *providers.Error
	classified := errors.As(err, &pe)
	for _, s := range sentinels {
		if errors.Is(err, s) {
			classified = true
		}
	}
	if !classified {
		e.t.Errorf("%s: error %T %q is neither a *providers.Error nor wraps a providers sentinel or context error", op, err, err)
	}
	if pe != nil && (pe.Provider == "" || pe.Op == "") {
		e.t.Errorf("%s: *providers.Error without Provider or Op: %q", op, err)
	}
	e.sh.mu.Lock()
	values := e.sh.values
	e.sh.mu.Unlock()
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, v := range values {
			if strings.Contains(s, string(v)) {
				e.t.Errorf("%s: error text contains a secret value: %q", op, s)
			}
		}
	}
}

func (e *env) put(req providers.PutRequest) (providers.PutResult, error) {
	return e.putCtx(e.ctx, req)
}

func (e *env) putCtx(ctx context.Context, req providers.PutRequest) (providers.PutResult, error) {
	e.t.Helper()
	e.remember(req.Value)
	res, err := e.sh.p.Put(ctx, req)
	e.check("Put", err)
	return res, err
}

func (e *env) mustPut(req providers.PutRequest) providers.PutResult {
	e.t.Helper()
	res, err := e.put(req)
	if err != nil {
		e.t.Fatalf("Put %q: %v", req.Name, err)
	}
	if res.Version == "" {
		e.t.Fatalf("Put %q: empty Version in result %+v", req.Name, res)
	}
	return res
}

// write is mustPut with the usual owner and a fresh idempotency key.
func (e *env) write(name string, value []byte) providers.PutResult {
	e.t.Helper()
	return e.mustPut(providers.PutRequest{Name: name, Value: value, IdempotencyKey: e.key("w"), Owner: ownerA})
}

func (e *env) get(name, version string) (*providers.Secret, error) {
	return e.getCtx(e.ctx, name, version)
}

func (e *env) getCtx(ctx context.Context, name, version string) (*providers.Secret, error) {
	e.t.Helper()
	s, err := e.sh.p.Get(ctx, name, version)
	e.check("Get", err)
	if err == nil && s == nil {
		e.t.Fatalf("Get %q %q: nil secret and nil error", name, version)
	}
	return s, err
}

func (e *env) mustGet(name, version string) *providers.Secret {
	e.t.Helper()
	s, err := e.get(name, version)
	if err != nil {
		e.t.Fatalf("Get %q version %q: %v", name, version, err)
	}
	return s
}

// wantValue reads name at version and compares the value.
func (e *env) wantValue(name, version string, want []byte) *providers.Secret {
	e.t.Helper()
	s := e.mustGet(name, version)
	if !bytes.Equal(s.Value, want) {
		e.t.Errorf("Get %q version %q: value mismatch (got %d bytes, want %d bytes)", name, version, len(s.Value), len(want))
	}
	if version != "" && s.Version != version {
		e.t.Errorf("Get %q version %q: Secret.Version = %q", name, version, s.Version)
	}
	return s
}

func (e *env) del(req providers.DeleteRequest) error {
	return e.delCtx(e.ctx, req)
}

func (e *env) delCtx(ctx context.Context, req providers.DeleteRequest) error {
	e.t.Helper()
	err := e.sh.p.Delete(ctx, req)
	e.check("Delete", err)
	return err
}

func (e *env) mustDel(req providers.DeleteRequest) {
	e.t.Helper()
	if err := e.del(req); err != nil {
		e.t.Fatalf("Delete %q: %v", req.Name, err)
	}
}

// versions lists versions; ok is false when the provider has no Versioner
// (or reports it unsupported).
func (e *env) versions(name string) (vs []providers.VersionInfo, ok bool, err error) {
	e.t.Helper()
	v, isV := e.sh.p.(providers.Versioner)
	if !isV {
		return nil, false, nil
	}
	vs, err = v.Versions(e.ctx, name)
	if errors.Is(err, errors.ErrUnsupported) {
		return nil, false, nil
	}
	e.check("Versions", err)
	return vs, true, err
}

// mustVersions lists the versions of name, skipping the caller's checks
// (ok=false) when there is no Versioner.
func (e *env) mustVersions(name string) ([]providers.VersionInfo, bool) {
	e.t.Helper()
	vs, ok, err := e.versions(name)
	if err != nil {
		e.t.Fatalf("Versions %q: %v", name, err)
	}
	return vs, ok
}

// wantVersionCount checks the number of versions Versioner lists, when
// there is one, accounting for Features.MaxVersions.
func (e *env) wantVersionCount(name string, n int) []providers.VersionInfo {
	e.t.Helper()
	vs, ok := e.mustVersions(name)
	if !ok {
		return nil
	}
	if m := e.features().MaxVersions; m > 0 && n > m {
		n = m
	}
	if len(vs) != n {
		e.t.Errorf("Versions %q: %d versions, want %d: %+v", name, len(vs), n, vs)
	}
	cur := 0
	for _, v := range vs {
		if v.Current {
			cur++
		}
	}
	if n > 0 && cur != 1 {
		e.t.Errorf("Versions %q: %d versions marked current, want 1: %+v", name, cur, vs)
	}
	return vs
}

// list collects what List returns for req, failing the test on an error or
// on a name listed twice.
func (e *env) list(l providers.Lister, req providers.ListRequest) map[string]providers.Owner {
	e.t.Helper()
	got := map[string]providers.Owner{}
	err := l.List(e.ctx, req, func(it providers.Listed) error {
		if _, dup := got[it.Name]; dup {
			e.t.Errorf("List %+v: %q listed twice", req, it.Name)
		}
		got[it.Name] = it.Owner
		return nil
	})
	e.check("List", err)
	if err != nil {
		e.t.Fatalf("List %+v: %v", req, err)
	}
	return got
}

func (e *env) tagUpdater() (providers.TagUpdater, bool) {
	u, ok := e.sh.p.(providers.TagUpdater)
	return u, ok
}

// updateTags calls UpdateTags; ok is false when the provider has no
// TagUpdater (or reports it unsupported).
func (e *env) updateTags(req providers.TagRequest) (ok bool, err error) {
	e.t.Helper()
	u, isU := e.tagUpdater()
	if !isU {
		return false, nil
	}
	err = u.UpdateTags(e.ctx, req)
	if errors.Is(err, errors.ErrUnsupported) {
		return false, nil
	}
	e.check("UpdateTags", err)
	return true, err
}

// wantErr checks that err matches target and, for the sentinels that are
// never worth retrying, that it is classified permanent.
func (e *env) wantErr(what string, err, target error) {
	e.t.Helper()
	if err == nil {
		e.t.Errorf("%s: no error, want %v", what, target)
		return
	}
	if !errors.Is(err, target) {
		e.t.Errorf("%s: error %q does not match %v", what, err, target)
		return
	}
	switch target {
	case providers.ErrNotFound, providers.ErrNotOwned, providers.ErrInvalid:
		if providers.IsRetryable(err) {
			e.t.Errorf("%s: %q is classified retryable, want permanent", what, err)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
