package secretmanager_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keyrelay/keyrelay/providers"
	"github.com/keyrelay/keyrelay/providers/google/secretmanager/smfake"
)

// Secret Manager's API is protobuf: a name or description that is not
// valid UTF-8 cannot even be marshalled (the client fails the call with
// INTERNAL "error while marshaling"). Such input must be refused as a
// permanent ErrInvalid, as the AWS provider does, not retried for hours
// as if Google were down.
func TestInvalidUTF8IsPermanentInvalid(t *testing.T) {
	fake := smfake.Start(t)
	p := open(t, fake, nil)
	ctx := context.Background()
	put(t, p, "utf8/existing", "v1", "e1")
	const bad = "bad\xffname"
	tests := map[string]func() error{
		"put name": func() error {
			_, err := p.Put(ctx, providers.PutRequest{Name: bad, Value: []byte("v"), IdempotencyKey: "e1", Owner: owner})
			return err
		},
		"put description on create": func() error {
			_, err := p.Put(ctx, providers.PutRequest{Name: "utf8/new", Value: []byte("v"), IdempotencyKey: "e1", Owner: owner, Description: "d\xff"})
			return err
		},
		"put description on update": func() error {
			_, err := p.Put(ctx, providers.PutRequest{Name: "utf8/existing", Value: []byte("v2"), IdempotencyKey: "e2", Owner: owner, Description: "d\xff"})
			return err
		},
		"update tags description": func() error {
			return p.UpdateTags(ctx, providers.TagRequest{Name: "utf8/existing", Owner: owner, Description: "d\xff"})
		},
		"get name": func() error {
			_, err := p.Get(ctx, bad, "")
			return err
		},
		"delete name": func() error {
			return p.Delete(ctx, providers.DeleteRequest{Name: bad, Owner: owner})
		},
	}
	for label, call := range tests {
		err := call()
		if !errors.Is(err, providers.ErrInvalid) || providers.IsRetryable(err) {
			t.Errorf("%s: %v, want permanent ErrInvalid", label, err)
		}
	}
	if s, err := p.Get(ctx, "utf8/existing", ""); err != nil || string(s.Value) != "v1" {
		t.Errorf("the existing secret changed: %v", err)
	}
}
