// cache.go: the read cache of rendered users. An entry is the exact body
// and ETag a GET of one user answered, and the user's write generation
// when it was read; an entry is served only while that generation has not
// moved, so a read that starts after an acknowledged write never sees what
// was there before it.
package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"
	"unsafe"

	"github.com/allegro/bigcache/v3"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// defaultCacheMiB bounds the cache (-cache-size). A user as GET shows it
// by default takes about 230 bytes here, so 20 MiB hold about 90,000.
const defaultCacheMiB = 20

// userCache maps a user and what its answer shows to that answer. The
// entries live in bigcache's byte queues, which hold no pointers: the
// garbage collector never scans them, however many there are. When it is
// full, the oldest entries go first.
type userCache struct {
	store        *store
	entries      *bigcache.BigCache
	hits, misses prometheus.Counter
}

// newUserCache returns a cache of maxMiB for the users of st, or nil when
// st cannot know of every write (several instances on PostgreSQL): a cache
// there could serve what another instance has changed, so there is none.
func newUserCache(st *store, maxMiB int, hits, misses prometheus.Counter, log *slog.Logger) *userCache {
	if !st.SeesEveryWrite() || maxMiB <= 0 {
		return nil
	}
	cfg := bigcache.DefaultConfig(100 * 365 * 24 * time.Hour) // entries never expire by age
	cfg.CleanWindow = 0
	cfg.Shards = 64
	cfg.MaxEntriesInWindow = 64 * 100 // small start: the queues grow to HardMaxCacheSize
	cfg.MaxEntrySize = 256
	cfg.HardMaxCacheSize = maxMiB
	cfg.Hasher = xxhasher{}
	cfg.Verbose = false // it would print each queue it grows with the log package
	cfg.Logger = cacheLogger{log}
	entries, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		panic(err) // only for a configuration that does not make sense
	}
	return &userCache{store: st, entries: entries, hits: hits, misses: misses}
}

// cacheLogger takes what bigcache has to say (a hash collision) into the
// server's log, at debug level.
type cacheLogger struct{ log *slog.Logger }

func (l cacheLogger) Printf(format string, v ...any) {
	l.log.Debug("read cache: " + fmt.Sprintf(format, v...))
}

// xxhasher is bigcache's key hash: the xxhash the ETags use.
type xxhasher struct{}

func (xxhasher) Sum64(key string) uint64 { return xxhash.Sum64String(key) }

// userCacheKey is one representation of one user: its id and the show=
// it was asked with.
type userCacheKey struct {
	id   string
	show userShow
}

// appendTo writes the key as the cache stores it: the id and one byte of
// flags.
func (k userCacheKey) appendTo(b []byte) []byte {
	flags := byte('@') // 0x40: the four low bits are free for the flags
	for i, on := range [...]bool{k.show.Email, k.show.FullName, k.show.Goals, k.show.GoalDescription} {
		if on {
			flags |= 1 << i
		}
	}
	return append(append(b, k.id...), flags)
}

// cachedUser is one answer, as sent.
type cachedUser struct {
	body []byte
	etag string
}

// generation is the user's write generation, to note before a read.
func (c *userCache) generation(id string) uint64 {
	if c == nil {
		return 0
	}
	return c.store.Generation(id)
}

// get returns the answer held for key, if it is still current. An entry
// is: the generation (8 bytes), the ETag's length (1 byte), the ETag, the
// body.
func (c *userCache) get(key userCacheKey) (cachedUser, bool) {
	if c == nil {
		return cachedUser{}, false
	}
	var kb [64]byte
	k := key.appendTo(kb[:0])
	// bigcache reads the key and keeps none of it; the entry it returns is
	// a copy of our own, so the ETag may share its bytes.
	e, err := c.entries.Get(unsafe.String(unsafe.SliceData(k), len(k)))
	if err != nil || len(e) < 9 || e[8] == 0 || binary.LittleEndian.Uint64(e) != c.store.Generation(key.id) || len(e) < 9+int(e[8]) {
		c.misses.Inc()
		return cachedUser{}, false
	}
	c.hits.Inc()
	n := int(e[8])
	return cachedUser{etag: unsafe.String(&e[9], n), body: e[9+n:]}, true
}

// put keeps an answer read at generation gen. One whose user has been
// written since is not kept (and would not be served: get checks again).
func (c *userCache) put(key userCacheKey, body []byte, etag string, gen uint64) {
	if c == nil || gen != c.store.Generation(key.id) || len(etag) > 255 {
		return
	}
	e := make([]byte, 9, 9+len(etag)+len(body))
	binary.LittleEndian.PutUint64(e, gen)
	e[8] = byte(len(etag))
	e = append(append(e, etag...), body...)
	c.entries.Set(string(key.appendTo(nil)), e) //nolint:errcheck // an entry too large is simply not kept
}
