// cache.go: the read cache of user rows. An entry is a user's row as GET
// of one user reads it (every column a client may ask for with show=, not
// the password hash) and the user's write generation when it was read; an
// entry is served only while that generation has not moved, so a read
// that starts after an acknowledged write never sees what was there
// before it. Rows rather than rendered answers: one entry serves every
// show=, and it takes half the bytes (about 130 here for a user without
// email or full name, so 20 MiB hold over 150,000 users); rendering a row
// again costs far less than reading it from SQLite.
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

// defaultCacheMiB bounds the cache (-cache-size).
const defaultCacheMiB = 20

// userCache maps a user's id to its row. The entries live in bigcache's
// byte queues, which hold no pointers: the garbage collector never scans
// them, however many there are. When it is full, the oldest entries go
// first.
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
	cfg.MaxEntrySize = 160
	cfg.HardMaxCacheSize = maxMiB
	cfg.Hasher = xxhasher{}
	cfg.Verbose = false // it would print each queue it grows with the log package
	cfg.Logger = cacheLogger{log}
	entries, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		panic(err) // only for a configuration that does not make sense
	}
	c := &userCache{store: st, entries: entries, hits: hits, misses: misses}
	// Each row a write commits goes in as it is written: the next read of
	// a user just written is a hit, not a miss.
	put := c.put
	st.rowWritten.Store(&put)
	return c
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

// generation is the user's write generation, to note before a read.
func (c *userCache) generation(id string) uint64 {
	if c == nil {
		return 0
	}
	return c.store.Generation(id)
}

// extras is what a read of a user must fetch for the cache to keep it:
// every column, whatever the request shows.
func (c *userCache) extras(asked userExtras) userExtras {
	if c == nil {
		return asked
	}
	return userExtras{Email: true, FullName: true}
}

// get returns the row held for the user with id, if it is still current.
func (c *userCache) get(id string) (User, bool) {
	if c == nil {
		return User{}, false
	}
	e, err := c.entries.Get(id)
	if err != nil || len(e) < 8 || binary.LittleEndian.Uint64(e) != c.store.Generation(id) {
		c.misses.Inc()
		return User{}, false
	}
	u, ok := decodeUserEntry(e[8:])
	if !ok {
		c.misses.Inc()
		return User{}, false
	}
	u.ID = id
	c.hits.Inc()
	return u, true
}

// put keeps u, read at generation gen (or written by the write that moved
// the generation to gen: see store.touched). A row whose user has been
// written since is not kept (and would not be served: get checks again).
func (c *userCache) put(u *User, gen uint64) {
	if c == nil || gen != c.store.Generation(u.ID) {
		return
	}
	e := binary.LittleEndian.AppendUint64(make([]byte, 0, 64+len(u.Username)), gen)
	c.entries.Set(u.ID, appendUserEntry(e, u)) //nolint:errcheck // an entry too large is simply not kept
}

// appendUserEntry encodes what a client may see of u, but its id (the
// entry's key): the version, then each string as a uvarint of its length
// and its bytes; the nullable ones write their length plus one, and 0 for
// null.
func appendUserEntry(b []byte, u *User) []byte {
	b = binary.AppendVarint(b, u.Version)
	for _, s := range [...]string{u.Username, u.CreatedAt, u.ModifiedAt} {
		b = append(binary.AppendUvarint(b, uint64(len(s))), s...)
	}
	for _, s := range [...]*string{u.Email, u.FullName} {
		if s == nil {
			b = append(b, 0)
			continue
		}
		b = append(binary.AppendUvarint(b, uint64(len(*s))+1), *s...)
	}
	return b
}

// decodeUserEntry reads what appendUserEntry wrote.
func decodeUserEntry(e []byte) (User, bool) {
	d := entryReader{rest: e, ok: true}
	u := User{Version: d.varint()}
	u.Username, u.CreatedAt, u.ModifiedAt = d.str(), d.str(), d.str()
	u.Email, u.FullName = d.nullable(), d.nullable()
	return u, d.ok && len(d.rest) == 0
}

// entryReader reads an entry's fields in turn; ok turns false at the first
// that does not fit. The strings share the entry's bytes: bigcache hands
// out a copy of its own, which nothing else holds or changes.
type entryReader struct {
	rest []byte
	ok   bool
}

func (d *entryReader) varint() int64 {
	v, n := binary.Varint(d.rest)
	if n <= 0 {
		d.ok = false
		return 0
	}
	d.rest = d.rest[n:]
	return v
}

// str reads a string: the uvarint of its length, then its bytes.
func (d *entryReader) str() string { return d.text(0) }

// nullable reads a string or null: the uvarint of its length plus one (0
// for null), then its bytes.
func (d *entryReader) nullable() *string {
	if len(d.rest) > 0 && d.rest[0] == 0 {
		d.rest = d.rest[1:]
		return nil
	}
	s := d.text(1)
	if !d.ok {
		return nil
	}
	return &s
}

// text reads a uvarint n, then n-less bytes as a string.
func (d *entryReader) text(less uint64) string {
	l, n := binary.Uvarint(d.rest)
	if n <= 0 || l < less || l-less > uint64(len(d.rest)-n) {
		d.ok = false
		return ""
	}
	b := d.rest[n : n+int(l-less)]
	d.rest = d.rest[n+len(b):]
	return unsafe.String(unsafe.SliceData(b), len(b))
}
