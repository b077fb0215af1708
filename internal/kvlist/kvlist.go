// Package kvlist lists the keys of a JetStream key-value bucket without
// missing one that is written while the listing runs.
//
// nats.go's ListKeys (and any watch stopped at its end-of-listing marker)
// lists the message each key had when the watch started. A key whose
// message is replaced before the watch delivers it is not listed: the old
// message is gone, and the replacement is a new message that arrives after
// the marker. Keys therefore also reads the bucket's subjects from the
// stream, once the watch is over, and adds the keys the watch did not
// deliver.
package kvlist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Keys returns the keys of kv that match filter (a key filter such as
// "restore.*"; "" for every key), sorted. A key whose last message is a
// delete or purge marker is not returned. js must reach the bucket's
// stream (the connection kv was opened on).
func Keys(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, filter string) ([]string, error) {
	if js == nil {
		return nil, fmt.Errorf("bucket %s: list keys: no JetStream context to read its stream", kv.Bucket())
	}
	if filter == "" {
		filter = ">"
	}
	seen := map[string]struct{}{}
	lister, err := kv.ListKeysFiltered(ctx, filter)
	switch {
	case errors.Is(err, jetstream.ErrNoKeysFound):
	case err != nil:
		return nil, fmt.Errorf("bucket %s: list keys: %w", kv.Bucket(), err)
	default:
		for k := range lister.Keys() {
			seen[k] = struct{}{}
		}
		// The lister ends its channel quietly when ctx ends.
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("bucket %s: list keys: %w", kv.Bucket(), err)
		}
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	err = Subjects(ctx, js, kv.Bucket(), filter, func(k string) error {
		if _, ok := seen[k]; ok {
			return nil
		}
		// Not delivered by the watch: written during it, or deleted (the
		// marker is the subject's last message). Only a live key counts.
		_, err := kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			return nil
		case err != nil:
			return fmt.Errorf("bucket %s: get %s: %w", kv.Bucket(), k, err)
		}
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	return keys, nil
}

// Subjects calls fn with every key of bucket matching filter that has at
// least one message in the bucket's stream (its current value, or the
// marker of its delete or purge), as the stream holds them now. It asks
// the server once (paged by the client for large buckets); nothing is read
// but the subjects.
func Subjects(ctx context.Context, js jetstream.JetStream, bucket, filter string, fn func(key string) error) error {
	if filter == "" {
		filter = ">"
	}
	s, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return fmt.Errorf("bucket %s: list keys: %w", bucket, err)
	}
	prefix := "$KV." + bucket + "."
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+filter))
	if err != nil {
		return fmt.Errorf("bucket %s: list keys: %w", bucket, err)
	}
	for subj := range info.State.Subjects {
		k, ok := strings.CutPrefix(subj, prefix)
		if !ok {
			continue
		}
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}
