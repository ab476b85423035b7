// cache.go: the read cache of rendered users. An entry is the exact body
// and ETag a GET of one user answered, and the user's write generation
// when it was read; an entry is served only while that generation has not
// moved, so a read that starts after an acknowledged write never sees what
// was there before it.
package main

import (
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// defaultCacheMiB bounds the cache (-cache-size): see README's figures.
const defaultCacheMiB = 16

// entryOverhead is what an entry costs beyond its bytes: the key, the
// slice and string headers, and the cache's own node.
const entryOverhead = 128

// userCache maps a user and what its answer shows to that answer.
type userCache struct {
	store        *store
	entries      *otter.Cache[userCacheKey, cachedUser]
	hits, misses prometheus.Counter
}

// userCacheKey is one representation of one user: its id and the show=
// it was asked with.
type userCacheKey struct {
	id   string
	show userShow
}

// cachedUser is one answer, as sent, and the generation it was read at.
type cachedUser struct {
	body []byte
	etag string
	gen  uint64
}

// newUserCache returns a cache for the users of st, or nil when st cannot
// know of every write (several instances on PostgreSQL): a cache there
// could serve what another instance has changed, so there is none.
func newUserCache(st *store, maxBytes int, hits, misses prometheus.Counter) *userCache {
	if !st.SeesEveryWrite() || maxBytes <= 0 {
		return nil
	}
	entries := otter.Must(&otter.Options[userCacheKey, cachedUser]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(k userCacheKey, v cachedUser) uint32 {
			return uint32(len(k.id) + len(v.body) + len(v.etag) + entryOverhead)
		},
	})
	return &userCache{store: st, entries: entries, hits: hits, misses: misses}
}

// generation is the user's write generation, to note before a read.
func (c *userCache) generation(id string) uint64 {
	if c == nil {
		return 0
	}
	return c.store.Generation(id)
}

// get returns the answer held for key, if it is still current.
func (c *userCache) get(key userCacheKey) (cachedUser, bool) {
	if c == nil {
		return cachedUser{}, false
	}
	e, ok := c.entries.GetIfPresent(key)
	if !ok || e.gen != c.store.Generation(key.id) {
		c.misses.Inc()
		return cachedUser{}, false
	}
	c.hits.Inc()
	return e, true
}

// put keeps an answer read at generation gen. One whose user has been
// written since is not kept (and would not be served: get checks again).
func (c *userCache) put(key userCacheKey, body []byte, etag string, gen uint64) {
	if c == nil || gen != c.store.Generation(key.id) {
		return
	}
	c.entries.Set(key, cachedUser{body: append([]byte(nil), body...), etag: etag, gen: gen})
}
