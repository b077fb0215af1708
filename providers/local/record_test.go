package local

import (
	"maps"
	"reflect"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
)

// mergeTagsReference is mergeTags as it was before it returned old when
// nothing changed: a new map every time.
func mergeTagsReference(old map[string]string, o providers.Owner, extra map[string]string, keepExtra, adopt bool) map[string]string {
	src := extra
	if keepExtra {
		src = old
	}
	t := map[string]string{}
	for k, v := range src {
		if !isOwnerTag(k) {
			t[k] = v
		}
	}
	return providers.OwnerTags(providers.KeptOwner(old, o, adopt), t)
}

func TestMergeTags(t *testing.T) {
	owned := func(team, key string, extra ...string) map[string]string {
		m := providers.OwnerTags(providers.Owner{TeamID: team, KeyID: key}, nil)
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	o := providers.Owner{TeamID: "t1", KeyID: "k1"}
	for name, tc := range map[string]struct {
		old, extra map[string]string
		owner      providers.Owner
		keep       bool
		adopt      bool
		wantSame   bool // the result is old itself
	}{
		"new secret":                      {old: nil, extra: map[string]string{"env": "prod"}, owner: o},
		"new secret, no tags":             {old: nil, owner: o},
		"rotation keeping extra tags":     {old: owned("t1", "k1", "env", "prod"), owner: o, keep: true, wantSame: true},
		"rotation with the same tags":     {old: owned("t1", "k1", "env", "prod"), extra: map[string]string{"env": "prod"}, owner: o, wantSame: true},
		"rotation, a tag changed":         {old: owned("t1", "k1", "env", "prod"), extra: map[string]string{"env": "dev"}, owner: o},
		"rotation, a tag added":           {old: owned("t1", "k1", "env", "prod"), extra: map[string]string{"env": "prod", "x": "y"}, owner: o},
		"rotation, a tag dropped":         {old: owned("t1", "k1", "env", "prod"), extra: map[string]string{}, owner: o},
		"rotation, tag value empty":       {old: owned("t1", "k1", "env", ""), extra: map[string]string{"env": ""}, owner: o, wantSame: true},
		"extra tries an ownership tag":    {old: owned("t1", "k1"), extra: map[string]string{providers.TeamTag: "evil"}, owner: o, wantSame: true},
		"owner moves to another key":      {old: owned("t1", "k1"), owner: providers.Owner{TeamID: "t1", KeyID: "k2"}, keep: true, adopt: true},
		"any-owner request keeps the ids": {old: owned("t1", "k1", "a", "b"), owner: providers.Owner{}, keep: true, wantSame: true},
		"adopt by any owner drops ids":    {old: owned("t1", "k1"), owner: providers.Owner{}, keep: true, adopt: true},
		"unowned old gets owner tags":     {old: map[string]string{"env": "prod"}, owner: o, keep: true},
		"old lacks the key tag":           {old: owned("t1", ""), owner: o, keep: true},
		"old has a stray key tag":         {old: owned("t1", "k1"), owner: providers.Owner{TeamID: "t1"}, keep: true, adopt: true},
	} {
		t.Run(name, func(t *testing.T) {
			before := maps.Clone(tc.old)
			got := mergeTags(tc.old, tc.owner, tc.extra, tc.keep, tc.adopt)
			want := mergeTagsReference(tc.old, tc.owner, tc.extra, tc.keep, tc.adopt)
			if !maps.Equal(got, want) {
				t.Fatalf("mergeTags = %v, want %v", got, want)
			}
			if !maps.Equal(tc.old, before) {
				t.Fatalf("old tags changed in place: %v, were %v", tc.old, before)
			}
			same := tc.old != nil && reflect.ValueOf(got).UnsafePointer() == reflect.ValueOf(tc.old).UnsafePointer()
			if same != tc.wantSame {
				t.Fatalf("result is old itself: %v, want %v", same, tc.wantSame)
			}
		})
	}
}
