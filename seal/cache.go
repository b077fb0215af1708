package seal

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/keyrelay/keyrelay/events"
)

// cache holds data keys: bounded (least recently used evicted first),
// each entry for at most ttl and, when maxUses > 0, for at most maxUses
// hits. Concurrent misses for one key share one load. Entries hold an
// *events.DataKey, which keeps the AES-GCM cipher, never the key bytes:
// the plaintext data key the KMS returned is wiped before the entry exists,
// so an evicted entry leaves nothing to wipe but the cipher's key schedule,
// which Go cannot erase and which becomes garbage.
type cache[K comparable] struct {
	mu      sync.Mutex
	lru     *simplelru.LRU[K, *cacheEntry]
	pending map[K]*flight
	ttl     time.Duration
	maxUses int
	now     func() time.Time
	// loadTimeout bounds a load, which runs detached from the caller's
	// cancellation so that one caller giving up does not fail the others
	// waiting for the same key.
	loadTimeout time.Duration
}

type cacheEntry struct {
	dk      *events.DataKey
	expires time.Time
	uses    int
}

type flight struct {
	done chan struct{}
	err  error
}

// newCache returns a cache of at most size entries, each kept for ttl and, when
// maxUses > 0, maxUses hits; a load may take up to loadTimeout.
func newCache[K comparable](size int, ttl time.Duration, maxUses int, loadTimeout time.Duration, now func() time.Time) *cache[K] {
	l, err := simplelru.NewLRU[K, *cacheEntry](size, nil)
	if err != nil {
		panic(err) // size is validated by Config.Validate
	}
	return &cache[K]{lru: l, pending: map[K]*flight{}, ttl: ttl, maxUses: maxUses, now: now, loadTimeout: loadTimeout}
}

// get returns the cached data key for k, counting one use, or loads it.
// hit reports whether the key came from the cache without waiting for a
// load this call started or joined.
func (c *cache[K]) get(ctx context.Context, k K, load func(context.Context) (*events.DataKey, error)) (dk *events.DataKey, hit bool, err error) {
	hit = true
	for {
		c.mu.Lock()
		if dk := c.takeLocked(k); dk != nil {
			c.mu.Unlock()
			return dk, hit, nil
		}
		hit = false
		f, ok := c.pending[k]
		if !ok {
			f = &flight{done: make(chan struct{})}
			c.pending[k] = f
			go c.run(ctx, k, f, load)
		}
		c.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil {
				return nil, false, f.err
			}
			// Loop: take a use of the loaded key (or load again when other
			// waiters used it up).
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// peek returns k's data key when it is cached and fresh, counting one
// use, without loading it.
func (c *cache[K]) peek(k K) *events.DataKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeLocked(k)
}

func (c *cache[K]) run(ctx context.Context, k K, f *flight, load func(context.Context) (*events.DataKey, error)) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.loadTimeout)
	defer cancel()
	dk, err := load(lctx)
	c.mu.Lock()
	delete(c.pending, k)
	if err == nil {
		c.lru.Add(k, &cacheEntry{dk: dk, expires: c.now().Add(c.ttl)})
	}
	f.err = err
	c.mu.Unlock()
	close(f.done)
}

// takeLocked returns k's data key if it is fresh and not used up, counting
// the use; a stale or used-up entry is dropped.
func (c *cache[K]) takeLocked(k K) *events.DataKey {
	e, ok := c.lru.Get(k)
	if !ok {
		return nil
	}
	if !c.now().Before(e.expires) || (c.maxUses > 0 && e.uses >= c.maxUses) {
		c.lru.Remove(k)
		return nil
	}
	e.uses++
	if c.maxUses > 0 && e.uses >= c.maxUses {
		c.lru.Remove(k)
	}
	return e.dk
}

// put stores dk for k (a data key learnt another way), unless k is cached.
func (c *cache[K]) put(k K, dk *events.DataKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.lru.Contains(k) {
		c.lru.Add(k, &cacheEntry{dk: dk, expires: c.now().Add(c.ttl)})
	}
}

// purge drops every entry.
func (c *cache[K]) purge() {
	c.mu.Lock()
	c.lru.Purge()
	c.mu.Unlock()
}

// size returns the number of entries (fresh or not yet noticed stale).
func (c *cache[K]) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
