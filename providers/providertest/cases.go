package providertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/keyrelay/keyrelay/providers"
)

// SentinelValue is the value the ErrorHygiene test plants; no error may
// contain it.
const SentinelValue = "SENTINEL-c0ffee"

var cases = []testCase{
	{"PutGet", testPutGet},
	{"Versions", testVersions},
	{"Idempotency", testIdempotency},
	{"NotFound", testNotFound},
	{"Delete", testDelete},
	{"Ownership", testOwnership},
	{"Tags", testTags},
	{"Concurrency", testConcurrency},
	{"Names", testNames},
	{"ErrorHygiene", testErrorHygiene},
	{"Context", testContext},
	{"List", testList},
	{"Retire", testRetire},
}

func testPutGet(e *env) {
	roundTrip := func(e *env, v []byte) {
		e.t.Helper()
		name := e.name("secret")
		res := e.write(name, v)
		if !res.Created || res.Duplicate {
			e.t.Errorf("first Put: %+v, want Created and not Duplicate", res)
		}
		s := e.wantValue(name, "", v)
		if s.Name != name {
			e.t.Errorf("Get: Secret.Name = %q, want %q", s.Name, name)
		}
		if s.Version != res.Version {
			e.t.Errorf("Get: Secret.Version = %q, Put returned %q", s.Version, res.Version)
		}
		if e.caps().Versions {
			e.wantValue(name, res.Version, v)
		}
	}
	e.run("ASCII", func(e *env) { roundTrip(e, e.value("plain-sk-1234567890abcdef")) })
	e.run("Unicode", func(e *env) { roundTrip(e, e.value("clé 🔑 ключ 鍵 \u00e9\u0301 \t\n")) })
	e.run("Large", func(e *env) {
		v := e.value("large")
		v = append(v, bytes.Repeat([]byte("0123456789abcdef"), 1000)...)
		roundTrip(e, e.remember(v))
	})
	e.run("Binary", func(e *env) {
		e.skipUnless(e.features().BinaryValues, "Features.BinaryValues")
		v := make([]byte, 0, 300)
		for i := 0; i < 256; i++ {
			v = append(v, byte(i))
		}
		v = append(v, 0xff, 0xfe, 0x00, 0xc3, 0x28) // invalid UTF-8
		v = append(v, e.value("bin")...)
		if utf8.Valid(v) {
			e.t.Fatal("test value unexpectedly valid UTF-8")
		}
		roundTrip(e, e.remember(v))
	})
	e.run("Empty", func(e *env) {
		name := e.name("empty")
		res, err := e.put(providers.PutRequest{Name: name, Value: []byte{}, IdempotencyKey: e.key("empty"), Owner: ownerA})
		if err != nil {
			if e.features().EmptyValues {
				e.t.Fatalf("Put of a 0-byte value: %v (Features.EmptyValues is set)", err)
			}
			e.wantErr("Put of a 0-byte value", err, providers.ErrInvalid)
			_, err = e.get(name, "")
			e.wantErr("Get after a rejected empty Put", err, providers.ErrNotFound)
			return
		}
		s := e.mustGet(name, "")
		if len(s.Value) != 0 {
			e.t.Errorf("0-byte value read back as %d bytes", len(s.Value))
		}
		if s.Version != res.Version {
			e.t.Errorf("Get: Version %q, Put returned %q", s.Version, res.Version)
		}
	})
	e.run("NoAliasing", func(e *env) {
		// Neither the caller's buffers nor the returned ones are shared
		// with what the provider stores.
		name := e.name("alias")
		v := e.value("alias")
		in := bytes.Clone(v)
		tags := map[string]string{"env": "test"}
		e.mustPut(providers.PutRequest{Name: name, Value: in, IdempotencyKey: e.key("a"), Owner: ownerA, Tags: tags})
		for i := range in {
			in[i] = 'X'
		}
		tags["env"] = "changed"
		s := e.wantValue(name, "", v)
		for i := range s.Value {
			s.Value[i] = 'Y'
		}
		if s.Tags != nil {
			s.Tags["env"] = "changed-too"
		}
		s = e.wantValue(name, "", v)
		if e.caps().Tags && s.Tags["env"] != "test" {
			e.t.Errorf("stored tags changed with the caller's map: env=%q", s.Tags["env"])
		}
	})
}

func testVersions(e *env) {
	name := e.name("versioned")
	v1, v2 := e.value("first"), e.value("second")
	k1, k2 := e.key("1"), e.key("2")
	r1 := e.mustPut(providers.PutRequest{Name: name, Value: v1, IdempotencyKey: k1, Owner: ownerA})
	r2 := e.mustPut(providers.PutRequest{Name: name, Value: v2, IdempotencyKey: k2, Owner: ownerA})
	if r2.Created || r2.Duplicate {
		e.t.Errorf("second Put: %+v, want neither Created nor Duplicate", r2)
	}
	if r2.Version == r1.Version {
		e.t.Errorf("second Put returned the first version %q again", r1.Version)
	}
	if s := e.wantValue(name, "", v2); s.Version != r2.Version {
		e.t.Errorf("Get current: Version %q, want %q", s.Version, r2.Version)
	}
	vs := e.wantVersionCount(name, 2)
	for _, vi := range vs {
		if vi.Current && vi.Version != r2.Version {
			e.t.Errorf("Versions: current is %q, want %q", vi.Version, r2.Version)
		}
		if vi.IdempotencyKey != "" && vi.IdempotencyKey != map[string]string{r1.Version: k1, r2.Version: k2}[vi.Version] {
			e.t.Errorf("Versions: version %q has IdempotencyKey %q", vi.Version, vi.IdempotencyKey)
		}
		if vi.Version != r1.Version && vi.Version != r2.Version {
			e.t.Errorf("Versions: unexpected version %q", vi.Version)
		}
	}
	if !e.caps().Versions {
		return
	}
	e.wantValue(name, r1.Version, v1)
	e.wantValue(name, r2.Version, v2)
	_, err := e.get(name, "999999")
	if err == nil || !(errors.Is(err, providers.ErrNotFound) || errors.Is(err, providers.ErrInvalid)) {
		e.t.Errorf("Get of a version that does not exist: %v, want ErrNotFound or ErrInvalid", err)
	}
}

func testIdempotency(e *env) {
	e.run("SameKeyIsDuplicate", func(e *env) {
		name := e.name("dup")
		v, k := e.value("dup"), e.key("dup")
		r1 := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: k, Owner: ownerA})
		r2 := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: k, Owner: ownerA})
		if !r2.Duplicate || r2.Created || r2.Version != r1.Version {
			e.t.Errorf("repeated Put: %+v, want Duplicate of version %q", r2, r1.Version)
		}
		e.wantValue(name, "", v)
		e.wantVersionCount(name, 1)
	})
	e.run("DuplicateOfNewerVersion", func(e *env) {
		name := e.name("dup2")
		e.write(name, e.value("old"))
		v, k := e.value("new"), e.key("new")
		r2 := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: k, Owner: ownerA})
		r3 := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: k, Owner: ownerA})
		if !r3.Duplicate || r3.Version != r2.Version {
			e.t.Errorf("repeated Put: %+v, want Duplicate of version %q", r3, r2.Version)
		}
		e.wantVersionCount(name, 2)
	})
	e.run("OtherKeySameValueWrites", func(e *env) {
		name := e.name("rewrite")
		v := e.value("same")
		r1 := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: e.key("a"), Owner: ownerA})
		r2 := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: e.key("b"), Owner: ownerA})
		if r2.Duplicate {
			e.t.Errorf("Put with a new idempotency key: %+v, want a write", r2)
		}
		if e.caps().Versions && r2.Version == r1.Version {
			e.t.Errorf("Put with a new idempotency key kept version %q", r1.Version)
		}
		e.wantVersionCount(name, 2)
	})
	e.run("EmptyKeyNeverDuplicate", func(e *env) {
		name := e.name("nokey")
		v := e.value("nokey")
		e.mustPut(providers.PutRequest{Name: name, Value: v, Owner: ownerA})
		r2 := e.mustPut(providers.PutRequest{Name: name, Value: v, Owner: ownerA})
		if r2.Duplicate {
			e.t.Errorf("Put without idempotency key reported Duplicate: %+v", r2)
		}
	})
}

func testNotFound(e *env) {
	name := e.name("missing")
	_, err := e.get(name, "")
	e.wantErr("Get missing", err, providers.ErrNotFound)
	_, err = e.get(name, "1")
	e.wantErr("Get missing version 1", err, providers.ErrNotFound)
	e.wantErr("Delete missing", e.del(providers.DeleteRequest{Name: name, Owner: ownerA}), providers.ErrNotFound)
	e.wantErr("forced Delete missing", e.del(providers.DeleteRequest{Name: name, Owner: ownerA, Force: true}), providers.ErrNotFound)
	if _, ok, err := e.versions(name); ok {
		e.wantErr("Versions missing", err, providers.ErrNotFound)
	}
	if ok, err := e.updateTags(providers.TagRequest{Name: name, Owner: ownerA, Tags: map[string]string{"a": "b"}}); ok {
		e.wantErr("UpdateTags missing", err, providers.ErrNotFound)
	}
	// Nothing of the above may have created it.
	_, err = e.get(name, "")
	e.wantErr("Get missing after the failed calls", err, providers.ErrNotFound)
}

func testDelete(e *env) {
	for _, force := range []bool{false, true} {
		label := map[bool]string{false: "Soft", true: "Force"}[force]
		e.run(label, func(e *env) {
			name := e.name("del")
			r := e.write(name, e.value("del"))
			e.mustDel(providers.DeleteRequest{Name: name, Owner: ownerA, Force: force})
			_, err := e.get(name, "")
			e.wantErr("Get after Delete", err, providers.ErrNotFound)
			_, err = e.get(name, r.Version)
			e.wantErr("Get version after Delete", err, providers.ErrNotFound)
			e.wantErr("Delete again", e.del(providers.DeleteRequest{Name: name, Owner: ownerA}), providers.ErrNotFound)
		})
		e.run("RestoreAfter"+label, func(e *env) {
			name := e.name("restore")
			v1, v2 := e.value("before"), e.value("after")
			r1 := e.write(name, v1)
			e.mustDel(providers.DeleteRequest{Name: name, Owner: ownerA, Force: force})
			r2 := e.write(name, v2)
			if !r2.Created || r2.Duplicate {
				e.t.Errorf("Put after Delete: %+v, want Created", r2)
			}
			e.wantValue(name, "", v2)
			if !force && e.caps().SoftDelete && e.caps().Versions {
				if r2.Version == r1.Version {
					e.t.Errorf("Put after soft Delete reused version %q", r1.Version)
				}
				e.wantValue(name, r1.Version, v1)
			}
			if e.caps().Tags {
				err := e.del(providers.DeleteRequest{Name: name, Owner: ownerB})
				e.wantErr("Delete of a restored secret by another owner", err, providers.ErrNotOwned)
			}
		})
	}
	e.run("RestoreWithSameIdempotencyKey", func(e *env) {
		// A deleted secret has no current version: a Put must bring it
		// back even when it carries the key of the version last written.
		name := e.name("restore-same")
		v, k := e.value("same"), e.key("same")
		e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: k, Owner: ownerA})
		e.mustDel(providers.DeleteRequest{Name: name, Owner: ownerA})
		r := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: k, Owner: ownerA})
		if !r.Created {
			e.t.Errorf("Put after Delete: %+v, want Created", r)
		}
		e.wantValue(name, "", v)
	})
}

func testOwnership(e *env) {
	e.skipUnless(e.caps().Tags, "Capabilities.Tags (ownership is recorded in tags)")
	e.run("OtherOwnerCannotOverwrite", func(e *env) {
		name := e.name("owned")
		v := e.value("a")
		e.write(name, v)
		for _, o := range []providers.Owner{ownerB, ownerA2} {
			_, err := e.put(providers.PutRequest{Name: name, Value: e.value("b"), IdempotencyKey: e.key("b"), Owner: o})
			e.wantErr(fmt.Sprintf("Put by %+v", o), err, providers.ErrNotOwned)
		}
		e.wantValue(name, "", v)
		e.wantVersionCount(name, 1)
	})
	e.run("OtherOwnerCannotDelete", func(e *env) {
		name := e.name("owned")
		v := e.value("a")
		e.write(name, v)
		for _, force := range []bool{false, true} {
			err := e.del(providers.DeleteRequest{Name: name, Owner: ownerB, Force: force})
			e.wantErr(fmt.Sprintf("Delete (force=%v) by another owner", force), err, providers.ErrNotOwned)
		}
		e.wantValue(name, "", v)
	})
	e.run("OtherOwnerCannotRestore", func(e *env) {
		name := e.name("owned")
		e.write(name, e.value("a"))
		e.mustDel(providers.DeleteRequest{Name: name, Owner: ownerA})
		if !e.caps().SoftDelete {
			return
		}
		_, err := e.put(providers.PutRequest{Name: name, Value: e.value("b"), IdempotencyKey: e.key("b"), Owner: ownerB})
		e.wantErr("Put by another owner on a soft-deleted secret", err, providers.ErrNotOwned)
	})
	e.run("AdoptTransfersOwnership", func(e *env) {
		name := e.name("adopt")
		e.write(name, e.value("a"))
		vb := e.value("b")
		r := e.mustPut(providers.PutRequest{Name: name, Value: vb, IdempotencyKey: e.key("b"), Owner: ownerB, Adopt: true})
		if r.Duplicate {
			e.t.Errorf("adopting Put: %+v, want a write", r)
		}
		s := e.wantValue(name, "", vb)
		if !providers.IsOwnedBy(s.Tags, ownerB) {
			e.t.Errorf("after adoption tags %v do not name the new owner", s.Tags)
		}
		_, err := e.put(providers.PutRequest{Name: name, Value: e.value("a2"), IdempotencyKey: e.key("a2"), Owner: ownerA})
		e.wantErr("Put by the previous owner after adoption", err, providers.ErrNotOwned)
		e.wantErr("Delete by the previous owner after adoption", e.del(providers.DeleteRequest{Name: name, Owner: ownerA}), providers.ErrNotOwned)
		e.mustDel(providers.DeleteRequest{Name: name, Owner: ownerB})
	})
	e.run("AdoptDelete", func(e *env) {
		name := e.name("adopt-del")
		e.write(name, e.value("a"))
		e.mustDel(providers.DeleteRequest{Name: name, Owner: ownerB, Adopt: true})
		_, err := e.get(name, "")
		e.wantErr("Get after adopting Delete", err, providers.ErrNotFound)
	})
	e.run("UpdateTagsGuard", func(e *env) {
		name := e.name("tags-guard")
		e.write(name, e.value("a"))
		ok, err := e.updateTags(providers.TagRequest{Name: name, Owner: ownerB, Tags: map[string]string{"env": "x"}})
		e.skipUnless(ok, "providers.TagUpdater")
		e.wantErr("UpdateTags by another owner", err, providers.ErrNotOwned)
		if _, err := e.updateTags(providers.TagRequest{Name: name, Owner: ownerB, Tags: map[string]string{"env": "x"}, Adopt: true}); err != nil {
			e.t.Errorf("adopting UpdateTags: %v", err)
		}
		if s := e.mustGet(name, ""); !providers.IsOwnedBy(s.Tags, ownerB) || s.Tags["env"] != "x" {
			e.t.Errorf("after adopting UpdateTags tags are %v", s.Tags)
		}
	})
	e.run("Unmanaged", func(e *env) {
		create := e.sh.opts.CreateUnmanaged
		e.skipUnless(create != nil, "Options.CreateUnmanaged")
		name := e.name("foreign")
		v := e.value("foreign")
		if err := create(e.ctx, e.provider(), name, v); err != nil {
			e.t.Fatalf("CreateUnmanaged: %v", err)
		}
		if s := e.wantValue(name, "", v); providers.IsOwnedBy(s.Tags, providers.Owner{}) {
			e.t.Errorf("CreateUnmanaged wrote keyrelay's managed-by tag: %v", s.Tags)
		}
		_, err := e.put(providers.PutRequest{Name: name, Value: e.value("mine"), IdempotencyKey: e.key("m"), Owner: ownerA})
		e.wantErr("Put over an unmanaged secret", err, providers.ErrNotOwned)
		_, err = e.put(providers.PutRequest{Name: name, Value: e.value("mine"), IdempotencyKey: e.key("m")})
		e.wantErr("Put with no owner over an unmanaged secret", err, providers.ErrNotOwned)
		e.wantErr("Delete of an unmanaged secret", e.del(providers.DeleteRequest{Name: name, Owner: ownerA, Force: true}), providers.ErrNotOwned)
		e.wantValue(name, "", v)
		vm := e.value("adopted")
		e.mustPut(providers.PutRequest{Name: name, Value: vm, IdempotencyKey: e.key("m"), Owner: ownerA, Adopt: true})
		if s := e.wantValue(name, "", vm); !providers.IsOwnedBy(s.Tags, ownerA) {
			e.t.Errorf("after adoption tags are %v", s.Tags)
		}
	})
}

func testTags(e *env) {
	e.skipUnless(e.caps().Tags, "Capabilities.Tags")
	e.run("RoundTrip", func(e *env) {
		name := e.name("tagged")
		e.mustPut(providers.PutRequest{
			Name: name, Value: e.value("t"), IdempotencyKey: e.key("t"), Owner: ownerA,
			Description: "conformance test secret",
			Tags: map[string]string{
				"env": "test", "keyrelay-alias": "my-alias",
				// A request cannot forge ownership through extra tags.
				providers.ManagedByTag: "intruder", providers.TeamTag: "team-z",
			},
		})
		s := e.mustGet(name, "")
		want := map[string]string{
			providers.ManagedByTag: providers.ManagedByValue,
			providers.TeamTag:      ownerA.TeamID,
			providers.KeyTag:       ownerA.KeyID,
			"env":                  "test",
			"keyrelay-alias":       "my-alias",
		}
		for k, v := range want {
			if s.Tags[k] != v {
				e.t.Errorf("tag %q = %q, want %q (all tags %v)", k, s.Tags[k], v, s.Tags)
			}
		}
	})
	e.run("PutUpdatesTags", func(e *env) {
		name := e.name("retag")
		e.mustPut(providers.PutRequest{Name: name, Value: e.value("1"), IdempotencyKey: e.key("1"), Owner: ownerA, Tags: map[string]string{"env": "test"}})
		e.mustPut(providers.PutRequest{Name: name, Value: e.value("2"), IdempotencyKey: e.key("2"), Owner: ownerA, Tags: map[string]string{"env": "prod"}})
		if s := e.mustGet(name, ""); s.Tags["env"] != "prod" || !providers.IsOwnedBy(s.Tags, ownerA) {
			e.t.Errorf("tags after second Put: %v", s.Tags)
		}
	})
	e.run("UpdateTags", func(e *env) {
		name := e.name("update-tags")
		v := e.value("v")
		r := e.mustPut(providers.PutRequest{Name: name, Value: v, IdempotencyKey: e.key("v"), Owner: ownerA, Tags: map[string]string{"env": "test", "keyrelay-alias": "old"}})
		ok, err := e.updateTags(providers.TagRequest{Name: name, Owner: ownerA, Description: "renamed", Tags: map[string]string{"env": "prod", "keyrelay-alias": "new", "extra": "1"}})
		e.skipUnless(ok, "providers.TagUpdater")
		if err != nil {
			e.t.Fatalf("UpdateTags: %v", err)
		}
		s := e.wantValue(name, "", v)
		if s.Version != r.Version {
			e.t.Errorf("UpdateTags changed the current version from %q to %q", r.Version, s.Version)
		}
		for k, want := range map[string]string{"env": "prod", "keyrelay-alias": "new", "extra": "1"} {
			if s.Tags[k] != want {
				e.t.Errorf("after UpdateTags tag %q = %q, want %q", k, s.Tags[k], want)
			}
		}
		if !providers.IsOwnedBy(s.Tags, ownerA) {
			e.t.Errorf("UpdateTags lost the ownership tags: %v", s.Tags)
		}
		e.wantVersionCount(name, 1)
		// Replacing drops tags not in the request.
		if _, err := e.updateTags(providers.TagRequest{Name: name, Owner: ownerA, Tags: map[string]string{"env": "prod"}}); err != nil {
			e.t.Fatalf("UpdateTags: %v", err)
		}
		if s := e.mustGet(name, ""); s.Tags["extra"] != "" || s.Tags["env"] != "prod" || !providers.IsOwnedBy(s.Tags, ownerA) {
			e.t.Errorf("UpdateTags did not replace the extra tags: %v", s.Tags)
		}
	})
	e.run("UpdateTagsPartialOwner", func(e *env) {
		// A request that names only part of the owner (the team, or no
		// owner at all: "any keyrelay owner") keeps the recorded team and
		// key; it never erases them.
		name := e.name("tags-partial")
		e.mustPut(providers.PutRequest{Name: name, Value: e.value("p"), IdempotencyKey: e.key("p"), Owner: ownerA, Tags: map[string]string{"env": "test"}})
		for _, o := range []providers.Owner{{TeamID: ownerA.TeamID}, {KeyID: ownerA.KeyID}, {}} {
			ok, err := e.updateTags(providers.TagRequest{Name: name, Owner: o, Tags: map[string]string{"env": "prod"}})
			e.skipUnless(ok, "providers.TagUpdater")
			if err != nil {
				e.t.Fatalf("UpdateTags with owner %+v: %v", o, err)
			}
			s := e.mustGet(name, "")
			if s.Tags[providers.TeamTag] != ownerA.TeamID || s.Tags[providers.KeyTag] != ownerA.KeyID || s.Tags["env"] != "prod" {
				e.t.Errorf("after UpdateTags with owner %+v the tags are %v, want the recorded owner %+v kept", o, s.Tags, ownerA)
			}
		}
	})
}

func testConcurrency(e *env) {
	n := e.features().Concurrency
	e.run("SameName", func(e *env) {
		name := e.name("contended")
		type result struct {
			value []byte
			res   providers.PutResult
			err   error
		}
		results := make([]result, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range results {
			results[i].value = e.value(fmt.Sprintf("writer-%d", i))
			wg.Add(1)
			go func(r *result, k string) {
				defer wg.Done()
				<-start
				r.res, r.err = e.put(providers.PutRequest{Name: name, Value: r.value, IdempotencyKey: k, Owner: ownerA})
			}(&results[i], e.key(fmt.Sprint(i)))
		}
		close(start)
		wg.Wait()
		ok, created := 0, 0
		seen := map[string]int{}
		for i, r := range results {
			if r.err != nil {
				if e.features().SerializedWrites || !errors.Is(r.err, providers.ErrConflict) || !providers.IsRetryable(r.err) {
					e.t.Errorf("writer %d: %v (only a retryable ErrConflict is allowed%s)", i, r.err,
						map[bool]string{true: ", and none with Features.SerializedWrites"}[e.features().SerializedWrites])
				}
				continue
			}
			if r.res.Duplicate {
				e.t.Errorf("writer %d: Duplicate with a fresh idempotency key: %+v", i, r.res)
				continue
			}
			ok++
			if r.res.Created {
				created++
			}
			if j, dup := seen[r.res.Version]; dup {
				e.t.Errorf("writers %d and %d both got version %q", j, i, r.res.Version)
			}
			seen[r.res.Version] = i
		}
		if ok == 0 {
			e.t.Fatalf("no writer of %d succeeded", n)
		}
		if created != 1 {
			e.t.Errorf("%d writers report Created, want exactly 1", created)
		}
		vs := e.wantVersionCount(name, ok)
		listed := map[string]bool{}
		for _, v := range vs {
			listed[v.Version] = true
		}
		cur := e.mustGet(name, "")
		curOK := false
		for _, r := range results {
			if r.err != nil {
				continue
			}
			if bytes.Equal(cur.Value, r.value) && cur.Version == r.res.Version {
				curOK = true
			}
		}
		if !curOK {
			e.t.Errorf("current version %q is not the value of any successful writer", cur.Version)
		}
		if !e.caps().Versions {
			return
		}
		for i, r := range results {
			if r.err != nil || r.res.Duplicate {
				continue
			}
			if m := e.features().MaxVersions; m > 0 && ok > m {
				continue // may have been pruned
			}
			if vs != nil && !listed[r.res.Version] {
				e.t.Errorf("writer %d: version %q missing from Versions", i, r.res.Version)
			}
			e.wantValue(name, r.res.Version, r.value)
		}
	})
	e.run("SameNameWithRetries", func(e *env) {
		// Each writer puts several versions in a row, retrying retryable
		// errors with the same idempotency key: every put lands exactly once.
		const rounds = 4
		name := e.name("contended-retry")
		values := make([][]byte, n*rounds)
		versions := make([]string, n*rounds)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := 0; w < n; w++ {
			for r := 0; r < rounds; r++ {
				values[w*rounds+r] = e.value(fmt.Sprintf("retrier-%d-%d", w, r))
			}
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				<-start
				for r := 0; r < rounds; r++ {
					i, k := w*rounds+r, e.key(fmt.Sprint(w, "-", r))
					for attempt := 1; ; attempt++ {
						res, err := e.put(providers.PutRequest{Name: name, Value: values[i], IdempotencyKey: k, Owner: ownerA})
						if err == nil {
							versions[i] = res.Version
							break
						}
						if !providers.IsRetryable(err) || attempt == 100 {
							e.t.Errorf("writer %d, put %d, attempt %d: %v", w, r, attempt, err)
							return
						}
						select {
						case <-time.After(time.Duration(rand.IntN(20)+1) * time.Millisecond):
						case <-e.ctx.Done():
							e.t.Errorf("writer %d: %v", w, e.ctx.Err())
							return
						}
					}
				}
			}(w)
		}
		close(start)
		wg.Wait()
		if e.t.Failed() {
			return
		}
		seen := map[string]int{}
		for i, v := range versions {
			if j, dup := seen[v]; dup {
				e.t.Errorf("puts %d and %d both got version %q", j, i, v)
			}
			seen[v] = i
		}
		e.wantVersionCount(name, len(versions))
		if e.caps().Versions && (e.features().MaxVersions == 0 || len(versions) <= e.features().MaxVersions) {
			for i, v := range versions {
				e.wantValue(name, v, values[i])
			}
		}
	})
	e.run("DistinctNames", func(e *env) {
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			name := e.name(fmt.Sprintf("parallel-%d", i))
			v := e.value(fmt.Sprintf("parallel-%d", i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := e.put(providers.PutRequest{Name: name, Value: v, IdempotencyKey: e.key("p"), Owner: ownerA})
				if err != nil {
					e.t.Errorf("Put %q: %v", name, err)
					return
				}
				if !res.Created {
					e.t.Errorf("Put %q: %+v, want Created", name, res)
				}
				s, err := e.get(name, "")
				if err != nil {
					e.t.Errorf("Get %q: %v", name, err)
					return
				}
				if !bytes.Equal(s.Value, v) {
					e.t.Errorf("Get %q returned another writer's value", name)
				}
			}()
		}
		wg.Wait()
	})
}

func testNames(e *env) {
	e.run("Slashes", func(e *env) {
		for _, suffix := range []string{"prefix/team/key", "a/b/c/d/e/f", "team-1/sk-key_1"} {
			name := e.name(suffix)
			v := e.value("slash")
			e.write(name, v)
			if s := e.wantValue(name, "", v); s.Name != name {
				e.t.Errorf("Get %q: Secret.Name = %q", name, s.Name)
			}
		}
	})
	e.run("NoCollisions", func(e *env) {
		// Names a backend with narrower rules maps onto one another are
		// still distinct secrets.
		base := e.name("x")
		suffixes := []string{"a/b", "a-b", "a_b", "a.b", "ab", "A/B", "A-b", "a--b", "a/bc"}
		names := map[string][]byte{}
		for _, s := range suffixes {
			name := e.exactName(base + "/" + s)
			if _, dup := names[name]; dup {
				continue
			}
			names[name] = e.value("n")
			e.write(name, names[name])
		}
		for name, v := range names {
			e.wantValue(name, "", v)
		}
	})
	e.run("Long", func(e *env) {
		max := e.features().MaxNameLength
		base := e.name("long-")
		if len(base) >= max {
			e.t.Fatalf("name prefix %q is already %d bytes, Features.MaxNameLength is %d", base, len(base), max)
		}
		a := base + strings.Repeat("a", max-len(base)-1) + "1"
		b := base + strings.Repeat("a", max-len(base)-1) + "2"
		c := base + strings.Repeat("a", (max-len(base))/2) + "1"
		va, vb, vc := e.value("long-a"), e.value("long-b"), e.value("long-c")
		for name, v := range map[string][]byte{e.exactName(a): va, e.exactName(b): vb, e.exactName(c): vc} {
			e.write(name, v)
		}
		if s := e.wantValue(a, "", va); s.Name != a {
			e.t.Errorf("Get long name: Secret.Name is %d bytes, want %d", len(s.Name), len(a))
		}
		e.wantValue(b, "", vb)
		e.wantValue(c, "", vc)
	})
}

func testErrorHygiene(e *env) {
	sentinel := e.remember([]byte(SentinelValue))
	name := e.name("hygiene")
	e.mustPut(providers.PutRequest{Name: name, Value: sentinel, IdempotencyKey: e.key("s"), Owner: ownerA})
	var errs []error
	add := func(what string, err error) {
		e.t.Helper()
		if err == nil {
			e.t.Errorf("%s: no error", what)
			return
		}
		errs = append(errs, err)
	}
	if e.caps().Tags {
		_, err := e.put(providers.PutRequest{Name: name, Value: []byte(SentinelValue + "-2"), IdempotencyKey: e.key("s2"), Owner: ownerB})
		add("Put by another owner", err)
		add("Delete by another owner", e.del(providers.DeleteRequest{Name: name, Owner: ownerB}))
	}
	if _, ok := e.retirer(); ok {
		if e.caps().Tags {
			add("Retire by another owner", e.retire(providers.RetireRequest{Name: name, Version: e.mustGet(name, "").Version, Owner: ownerB}))
		}
		add("Retire of the current version", e.retire(providers.RetireRequest{Name: name, Version: e.mustGet(name, "").Version, Owner: ownerA}))
	}
	_, err := e.get(name+"-missing", "")
	add("Get missing", err)
	if e.caps().Versions {
		_, err = e.get(name, "999999")
		add("Get missing version", err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	_, err = e.putCtx(ctx, providers.PutRequest{Name: name, Value: []byte(SentinelValue + "-3"), IdempotencyKey: e.key("s3"), Owner: ownerA})
	add("Put with a cancelled context", err)
	for _, err := range errs {
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			if strings.Contains(s, SentinelValue) {
				e.t.Errorf("error text contains the secret value: %s", s)
			}
		}
	}
	e.wantValue(name, "", sentinel)
}

func testContext(e *env) {
	cancelled, cancel := context.WithCancel(e.ctx)
	cancel()
	wantCancelled := func(what string, err error) {
		e.t.Helper()
		if err == nil {
			e.t.Errorf("%s with a cancelled context: no error", what)
		} else if !errors.Is(err, context.Canceled) {
			e.t.Errorf("%s with a cancelled context: %q does not match context.Canceled", what, err)
		} else if providers.IsRetryable(err) {
			e.t.Errorf("%s with a cancelled context: %q is classified retryable", what, err)
		}
	}
	e.run("PutNew", func(e *env) {
		name := e.name("ctx-new")
		_, err := e.putCtx(cancelled, providers.PutRequest{Name: name, Value: e.value("c"), IdempotencyKey: e.key("c"), Owner: ownerA})
		wantCancelled("Put", err)
		_, err = e.get(name, "")
		e.wantErr("Get after a cancelled Put", err, providers.ErrNotFound)
	})
	e.run("PutExisting", func(e *env) {
		name := e.name("ctx-existing")
		v := e.value("keep")
		r := e.write(name, v)
		_, err := e.putCtx(cancelled, providers.PutRequest{Name: name, Value: e.value("c"), IdempotencyKey: e.key("c"), Owner: ownerA})
		wantCancelled("Put", err)
		if s := e.wantValue(name, "", v); s.Version != r.Version {
			e.t.Errorf("current version moved to %q after a cancelled Put", s.Version)
		}
		e.wantVersionCount(name, 1)
	})
	e.run("GetAndDelete", func(e *env) {
		name := e.name("ctx-del")
		v := e.value("keep")
		e.write(name, v)
		_, err := e.getCtx(cancelled, name, "")
		wantCancelled("Get", err)
		wantCancelled("Delete", e.delCtx(cancelled, providers.DeleteRequest{Name: name, Owner: ownerA}))
		wantCancelled("forced Delete", e.delCtx(cancelled, providers.DeleteRequest{Name: name, Owner: ownerA, Force: true}))
		e.wantValue(name, "", v)
	})
}

func testList(e *env) {
	l, ok := providers.AsLister(e.provider())
	e.skipUnless(ok, "providers.Lister")
	// Names are built under this subtest's base, so that listings by prefix
	// see nothing of other tests sharing the backend.
	base := e.sh.base
	want := map[string]providers.Owner{}
	put := func(name string, o providers.Owner) {
		e.t.Helper()
		e.mustPut(providers.PutRequest{Name: e.exactName(name), Value: e.value("list"), IdempotencyKey: e.key("l"), Owner: o})
		want[name] = o
	}
	nA := 2*e.features().ListPageSize + 1
	for i := 0; i < nA; i++ {
		owner := ownerA
		if i%2 == 1 {
			owner = ownerA2
		}
		put(fmt.Sprintf("%steam-a/key-%02d", base, i), owner)
	}
	put(base+"team-b/key-0", ownerB)
	put(base+"team-b/key-1", ownerB)
	put(base+"other/deep/key", ownerB)
	if create := e.sh.opts.CreateUnmanaged; create != nil {
		name := e.exactName(base + "team-a/foreign")
		if err := create(e.ctx, e.provider(), name, e.value("foreign")); err != nil {
			e.t.Fatalf("CreateUnmanaged: %v", err)
		}
	}
	subset := func(keep func(name string, o providers.Owner) bool) map[string]providers.Owner {
		m := map[string]providers.Owner{}
		for n, o := range want {
			if keep(n, o) {
				m[n] = o
			}
		}
		return m
	}
	check := func(e *env, req providers.ListRequest, want map[string]providers.Owner) {
		e.t.Helper()
		got := e.list(l, req)
		for n, o := range want {
			g, ok := got[n]
			switch {
			case !ok:
				e.t.Errorf("List %+v: %q missing", req, n)
			case g != o:
				e.t.Errorf("List %+v: %q owner %+v, want %+v", req, n, g, o)
			}
		}
		for n := range got {
			if _, ok := want[n]; !ok {
				e.t.Errorf("List %+v: unexpected %q", req, n)
			}
		}
	}
	e.run("All", func(e *env) {
		check(e, providers.ListRequest{Prefix: base}, want)
	})
	e.run("Team", func(e *env) {
		check(e, providers.ListRequest{Prefix: base, TeamID: ownerA.TeamID},
			subset(func(_ string, o providers.Owner) bool { return o.TeamID == ownerA.TeamID }))
		check(e, providers.ListRequest{Prefix: base, TeamID: ownerB.TeamID},
			subset(func(_ string, o providers.Owner) bool { return o.TeamID == ownerB.TeamID }))
		check(e, providers.ListRequest{Prefix: base, TeamID: "team-none"}, nil)
	})
	e.run("Prefix", func(e *env) {
		for _, p := range []string{base + "team-b/", base + "team-a/key-0", base + "other/", base + "nothing/"} {
			check(e, providers.ListRequest{Prefix: p},
				subset(func(n string, _ providers.Owner) bool { return strings.HasPrefix(n, p) }))
		}
		check(e, providers.ListRequest{Prefix: base + "team-b/", TeamID: ownerA.TeamID}, nil)
	})
	e.run("Every", func(e *env) {
		// Every name under the prefix, whoever owns it (the foreign secret
		// too); owners are not promised.
		// A backend that maps names may answer ErrUnnamed instead, when
		// the foreign secret (written without keyrelay's name tag) could
		// be under the prefix.
		names := func(req providers.ListRequest) (map[string]bool, bool) {
			got := map[string]bool{}
			err := l.List(e.ctx, req, func(ls providers.Listed) error {
				got[ls.Name] = true
				return nil
			})
			if errors.Is(err, providers.ErrUnnamed) && e.sh.opts.CreateUnmanaged != nil &&
				strings.HasPrefix(e.exactName(base+"team-a/foreign"), req.Prefix) {
				e.t.Logf("List %+v: %v (the foreign secret)", req, err)
				return nil, false
			}
			e.check("List", err)
			if err != nil {
				e.t.Errorf("List %+v: %v", req, err)
			}
			return got, err == nil
		}
		every := maps.Clone(want)
		if e.sh.opts.CreateUnmanaged != nil {
			every[e.exactName(base+"team-a/foreign")] = providers.Owner{}
		}
		for _, p := range []string{base, base + "team-a/", base + "team-b/", base + "nothing/"} {
			req := providers.ListRequest{Prefix: p, Every: true, TeamID: "team-none"}
			got, ok := names(req)
			if !ok {
				continue
			}
			for n := range every {
				if strings.HasPrefix(n, p) && !got[n] {
					e.t.Errorf("List %+v: %q missing", req, n)
				}
			}
			for n := range got {
				if _, ok := every[n]; !ok || !strings.HasPrefix(n, p) {
					e.t.Errorf("List %+v: unexpected %q", req, n)
				}
			}
		}
	})
	e.run("StopEarly", func(e *env) {
		stop := errors.New("stop listing")
		calls := 0
		err := l.List(e.ctx, providers.ListRequest{Prefix: base}, func(providers.Listed) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) {
			e.t.Errorf("List with fn failing: error %v, want it to wrap fn's error", err)
		}
		if calls != 1 {
			e.t.Errorf("List with fn failing: fn called %d times, want 1", calls)
		}
	})
	e.run("CancelledContext", func(e *env) {
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		err := l.List(ctx, providers.ListRequest{Prefix: base}, func(providers.Listed) error { return nil })
		e.check("List", err)
		if !errors.Is(err, context.Canceled) {
			e.t.Errorf("List with a cancelled context: error %v, want context.Canceled", err)
		}
	})
	e.run("Deleted", func(e *env) {
		soft, forced := base+"team-b/key-0", base+"team-a/key-00"
		e.mustDel(providers.DeleteRequest{Name: soft, Owner: want[soft]})
		e.mustDel(providers.DeleteRequest{Name: forced, Owner: want[forced], Force: true})
		delete(want, soft)
		delete(want, forced)
		check(e, providers.ListRequest{Prefix: base}, want)
	})
}
