package providers_test

import (
	"context"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
)

type plain struct{}

func (plain) Put(context.Context, providers.PutRequest) (providers.PutResult, error) {
	return providers.PutResult{}, nil
}
func (plain) Get(context.Context, string, string) (*providers.Secret, error) { return nil, nil }
func (plain) Delete(context.Context, providers.DeleteRequest) error          { return nil }
func (plain) Capabilities() providers.Capabilities                           { return providers.Capabilities{} }

type listing struct{ plain }

func (listing) List(context.Context, providers.ListRequest, func(providers.Listed) error) error {
	return nil
}

type wrapper struct {
	providers.Provider
	inner providers.Provider
}

func (w wrapper) Unwrap() providers.Provider { return w.inner }

type loop struct{ plain }

func (l *loop) Unwrap() providers.Provider { return l }

func TestAsLister(t *testing.T) {
	tests := map[string]struct {
		p    providers.Provider
		want bool
	}{
		"nil":                {nil, false},
		"plain":              {plain{}, false},
		"lister":             {listing{}, true},
		"wrapped lister":     {wrapper{plain{}, listing{}}, true},
		"twice wrapped":      {wrapper{plain{}, wrapper{plain{}, listing{}}}, true},
		"wrapped non-lister": {wrapper{plain{}, plain{}}, false},
		"self-wrapping":      {&loop{}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, ok := providers.AsLister(tc.p); ok != tc.want {
				t.Errorf("AsLister = %v, want %v", ok, tc.want)
			}
		})
	}
}

func TestListOwned(t *testing.T) {
	owned := providers.OwnerTags(providers.Owner{TeamID: "t1", KeyID: "k"}, nil)
	tests := map[string]struct {
		req  providers.ListRequest
		name string
		tags map[string]string
		want bool
	}{
		"all":          {providers.ListRequest{}, "a/b", owned, true},
		"team":         {providers.ListRequest{TeamID: "t1"}, "a/b", owned, true},
		"other team":   {providers.ListRequest{TeamID: "t2"}, "a/b", owned, false},
		"prefix":       {providers.ListRequest{Prefix: "a/"}, "a/b", owned, true},
		"other prefix": {providers.ListRequest{Prefix: "b/"}, "a/b", owned, false},
		"unowned":      {providers.ListRequest{}, "a/b", map[string]string{"x": "y"}, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := providers.ListOwned(tc.req, tc.name, tc.tags); got != tc.want {
				t.Errorf("ListOwned = %v, want %v", got, tc.want)
			}
		})
	}
}
