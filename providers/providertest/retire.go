package providertest

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyrelay/keyrelay/providers"
)

// retirer returns the provider's Retirer, looking through wrappers.
func (e *env) retirer() (providers.Retirer, bool) {
	return providers.AsRetirer(e.sh.p)
}

func (e *env) retire(req providers.RetireRequest) error {
	return e.retireCtx(e.ctx, req)
}

func (e *env) retireCtx(ctx context.Context, req providers.RetireRequest) error {
	e.t.Helper()
	r, ok := e.retirer()
	if !ok {
		e.t.Fatalf("Retire: %T is not a providers.Retirer", e.sh.p)
	}
	err := r.Retire(ctx, req)
	e.check("Retire", err)
	return err
}

func (e *env) mustRetire(req providers.RetireRequest) {
	e.t.Helper()
	if err := e.retire(req); err != nil {
		e.t.Fatalf("Retire %q version %q: %v", req.Name, req.Version, err)
	}
}

// retiredByHook asks Options.Retired, when set, whether version is retired.
func (e *env) retiredByHook(name, version string) (retired, asked bool) {
	e.t.Helper()
	hook := e.sh.opts.Retired
	if hook == nil {
		return false, false
	}
	retired, err := hook(e.ctx, e.sh.p, name, version)
	if err != nil {
		e.t.Fatalf("Options.Retired %q version %q: %v", name, version, err)
	}
	return retired, true
}

// wantRetired checks that version of name is retired: Get fails with a
// permanent ErrNotFound (unless Features.RetireKeepsValue), Options.Retired
// says so, and Versioner does not list it as current.
func (e *env) wantRetired(name, version string) {
	e.t.Helper()
	if !e.features().RetireKeepsValue {
		_, err := e.get(name, version)
		e.wantErr(fmt.Sprintf("Get of retired version %q", version), err, providers.ErrNotFound)
	}
	if retired, asked := e.retiredByHook(name, version); asked && !retired {
		e.t.Errorf("Options.Retired: version %q of %q is not retired", version, name)
	}
	if vs, ok := e.mustVersions(name); ok {
		for _, v := range vs {
			if v.Version == version && v.Current {
				e.t.Errorf("Versions: retired version %q is listed as current: %+v", version, vs)
			}
		}
	}
}

// wantNotRetired checks that version of name still holds value.
func (e *env) wantNotRetired(name, version string, value []byte) {
	e.t.Helper()
	if !e.features().RetireKeepsValue {
		e.wantValue(name, version, value)
	}
	if retired, asked := e.retiredByHook(name, version); asked && retired {
		e.t.Errorf("Options.Retired: version %q of %q is retired, want it untouched", version, name)
	}
}

// wantCurrent checks that the current version is version, holding value.
func (e *env) wantCurrent(name, version string, value []byte) {
	e.t.Helper()
	if s := e.wantValue(name, "", value); s.Version != version {
		e.t.Errorf("Get %q: current version %q, want %q", name, s.Version, version)
	}
	e.wantValue(name, version, value)
	if vs, ok := e.mustVersions(name); ok {
		for _, v := range vs {
			if v.Current != (v.Version == version) {
				e.t.Errorf("Versions %q: %q marked Current=%v, the current version is %q: %+v", name, v.Version, v.Current, version, vs)
			}
		}
	}
}

// testRetire checks providers.Retirer: an earlier version is retired, the
// current one never is; retiring is idempotent, checks ownership, and
// tells a missing secret.
func testRetire(e *env) {
	if _, ok := e.retirer(); !ok {
		e.t.Skip("provider does not implement providers.Retirer (its backend cannot retire one version)")
	}
	if e.features().RetireKeepsValue && e.sh.opts.Retired == nil {
		e.t.Fatal("Features.RetireKeepsValue needs Options.Retired to tell a retired version")
	}
	// twoVersions writes two versions of a fresh name.
	twoVersions := func(e *env, label string) (name string, r1, r2 providers.PutResult, v1, v2 []byte) {
		e.t.Helper()
		name = e.name(label)
		v1, v2 = e.value("old"), e.value("new")
		r1 = e.write(name, v1)
		r2 = e.write(name, v2)
		return name, r1, r2, v1, v2
	}
	e.run("Earlier", func(e *env) {
		name, r1, r2, _, v2 := twoVersions(e, "retire")
		e.mustRetire(providers.RetireRequest{Name: name, Version: r1.Version, Owner: ownerA})
		e.wantRetired(name, r1.Version)
		e.wantCurrent(name, r2.Version, v2)
		// Retiring again is done already.
		if err := e.retire(providers.RetireRequest{Name: name, Version: r1.Version, Owner: ownerA}); err != nil {
			e.t.Errorf("Retire of a version already retired: %v", err)
		}
		e.wantRetired(name, r1.Version)
		e.wantCurrent(name, r2.Version, v2)
		// A later write still works, and the retired version stays retired.
		v3 := e.value("third")
		r3 := e.write(name, v3)
		e.wantCurrent(name, r3.Version, v3)
		e.wantRetired(name, r1.Version)
	})
	e.run("Current", func(e *env) {
		name, r1, r2, v1, v2 := twoVersions(e, "retire-current")
		err := e.retire(providers.RetireRequest{Name: name, Version: r2.Version, Owner: ownerA})
		e.wantErr("Retire of the current version", err, providers.ErrConflict)
		if err != nil && providers.IsRetryable(err) {
			e.t.Errorf("Retire of the current version: %q is classified retryable, want permanent", err)
		}
		e.wantCurrent(name, r2.Version, v2)
		e.wantNotRetired(name, r1.Version, v1)
	})
	e.run("OnlyVersion", func(e *env) {
		name := e.name("retire-only")
		v := e.value("only")
		r := e.write(name, v)
		err := e.retire(providers.RetireRequest{Name: name, Version: r.Version, Owner: ownerA})
		e.wantErr("Retire of a secret's only version", err, providers.ErrConflict)
		if err != nil && providers.IsRetryable(err) {
			e.t.Errorf("Retire of the only version: %q is classified retryable, want permanent", err)
		}
		e.wantCurrent(name, r.Version, v)
	})
	e.run("MissingSecret", func(e *env) {
		name := e.name("retire-missing")
		err := e.retire(providers.RetireRequest{Name: name, Version: "1", Owner: ownerA})
		e.wantErr("Retire on a missing secret", err, providers.ErrNotFound)
		_, err = e.get(name, "")
		e.wantErr("Get after Retire on a missing secret", err, providers.ErrNotFound)
	})
	e.run("MissingVersion", func(e *env) {
		// A version the backend does not have is gone already; a backend
		// may also refuse an id that cannot name a version (ErrInvalid).
		name, r1, r2, v1, v2 := twoVersions(e, "retire-noversion")
		err := e.retire(providers.RetireRequest{Name: name, Version: "999999", Owner: ownerA})
		if err != nil && !errors.Is(err, providers.ErrInvalid) {
			e.t.Errorf("Retire of a version that does not exist: %v, want success (or ErrInvalid)", err)
		}
		if err != nil && providers.IsRetryable(err) {
			e.t.Errorf("Retire of a version that does not exist: %q is classified retryable", err)
		}
		e.wantCurrent(name, r2.Version, v2)
		e.wantNotRetired(name, r1.Version, v1)
	})
	e.run("Deleted", func(e *env) {
		for _, force := range []bool{false, true} {
			name, r1, _, _, _ := twoVersions(e, "retire-deleted")
			e.mustDel(providers.DeleteRequest{Name: name, Owner: ownerA, Force: force})
			err := e.retire(providers.RetireRequest{Name: name, Version: r1.Version, Owner: ownerA})
			e.wantErr(fmt.Sprintf("Retire on a deleted secret (force=%v)", force), err, providers.ErrNotFound)
		}
	})
	e.run("Ownership", func(e *env) {
		e.skipUnless(e.caps().Tags, "Capabilities.Tags (ownership is recorded in tags)")
		name, r1, r2, v1, v2 := twoVersions(e, "retire-owned")
		for _, o := range []providers.Owner{ownerB, ownerA2} {
			err := e.retire(providers.RetireRequest{Name: name, Version: r1.Version, Owner: o})
			e.wantErr(fmt.Sprintf("Retire by %+v", o), err, providers.ErrNotOwned)
		}
		e.wantNotRetired(name, r1.Version, v1)
		e.mustRetire(providers.RetireRequest{Name: name, Version: r1.Version, Owner: ownerB, Adopt: true})
		e.wantRetired(name, r1.Version)
		e.wantCurrent(name, r2.Version, v2)
	})
	e.run("CancelledContext", func(e *env) {
		name, r1, r2, v1, v2 := twoVersions(e, "retire-ctx")
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		err := e.retireCtx(ctx, providers.RetireRequest{Name: name, Version: r1.Version, Owner: ownerA})
		if !errors.Is(err, context.Canceled) {
			e.t.Errorf("Retire with a cancelled context: %v, want context.Canceled", err)
		}
		e.wantNotRetired(name, r1.Version, v1)
		e.wantCurrent(name, r2.Version, v2)
	})
}
