package providers

import (
	"maps"
	"testing"
)

func TestKeptOwner(t *testing.T) {
	managed := OwnerTags(Owner{TeamID: "t1", KeyID: "k1"}, map[string]string{"env": "prod"})
	foreign := map[string]string{TeamTag: "t1", KeyTag: "k1"} // no managed-by tag
	for name, tc := range map[string]struct {
		old   map[string]string
		o     Owner
		adopt bool
		want  Owner
	}{
		"full owner wins":              {old: managed, o: Owner{TeamID: "t2", KeyID: "k2"}, want: Owner{TeamID: "t2", KeyID: "k2"}},
		"any owner keeps both":         {old: managed, o: Owner{}, want: Owner{TeamID: "t1", KeyID: "k1"}},
		"team only keeps the key":      {old: managed, o: Owner{TeamID: "t2"}, want: Owner{TeamID: "t2", KeyID: "k1"}},
		"key only keeps the team":      {old: managed, o: Owner{KeyID: "k2"}, want: Owner{TeamID: "t1", KeyID: "k2"}},
		"adopt takes o as it is":       {old: managed, o: Owner{TeamID: "t2"}, adopt: true, want: Owner{TeamID: "t2"}},
		"not managed: nothing kept":    {old: foreign, o: Owner{}, want: Owner{}},
		"no old tags":                  {old: nil, o: Owner{KeyID: "k2"}, want: Owner{KeyID: "k2"}},
		"managed without ids keeps ''": {old: OwnerTags(Owner{}, nil), o: Owner{}, want: Owner{}},
	} {
		t.Run(name, func(t *testing.T) {
			before := maps.Clone(tc.old)
			if got := KeptOwner(tc.old, tc.o, tc.adopt); got != tc.want {
				t.Fatalf("KeptOwner = %+v, want %+v", got, tc.want)
			}
			if !maps.Equal(tc.old, before) {
				t.Fatal("KeptOwner changed the old tags")
			}
		})
	}
}
