// cache.go: the read cache of user rows. An entry is a user's row as GET
// of one user reads it (every column a client may ask for with show=, not
// the password hash), after the hash of the user's answer with the default
// fields (for the ETag of a conditional GET). Each write takes the users it
// changes out of the cache just before its commit, and puts the row it
// committed after the commit and before its caller is answered: no read
// finds an entry older than the database, and a read that starts after an
// acknowledged write never sees what was there before it. A read that
// missed puts the row it read only if no write to that user has committed
// since it began or is committing now (the user's write generation is
// unchanged, with no write pending), checked and put under the lock the
// writes take. Rows rather than rendered answers:
// one entry serves every show=, and it takes half the bytes (about 120
// here for a user with an email and a full name, so 20 MiB hold over
// 150,000 users); rendering a row again costs far less than reading it
// from SQLite.
package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unsafe"

	"github.com/allegro/bigcache/v3"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// defaultCacheMiB bounds the cache (-cache-size).
const defaultCacheMiB = 20

// maxCacheMiB is the largest -cache-size: bigcache keeps an entry's place
// in its shard's queue as 32 bits, so a shard (a 64th of the cache) must
// stay well under 4 GiB.
const maxCacheMiB = 64 << 10

// userCache maps a user's id to its row. The entries live in bigcache's
// byte queues, which hold no pointers: the garbage collector never scans
// them, however many there are. When it is full, the oldest entries go
// first.
type userCache struct {
	store        *store
	entries      *bigcache.BigCache
	hits, misses prometheus.Counter
	// locks, by the last byte of a user's key, make a read's check of the
	// generation and its put one step as a write's put sees it (see put).
	locks [256]sync.Mutex
	// writesTakeOut makes each write take its users out rather than put
	// their rows: tests set it so that reads miss after every write and
	// their puts race the writes.
	writesTakeOut bool
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
	if !st.watcher.CompareAndSwap(nil, &writeWatcher{pending: c.pending, written: c.written}) {
		// The first cache would no longer hear of the writes: stale.
		panic("a second read cache on one store")
	}
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

// get returns the row held for the user with id. Every write to a user
// replaces or removes its entry before its caller is answered, so an entry
// is the user's row as the last acknowledged write left it, or newer.
func (c *userCache) get(id string) (User, bool) {
	if c == nil {
		return User{}, false
	}
	e, ok := c.entry(id)
	var u User
	if ok {
		u, ok = decodeUserEntry(e[answerHashLen:])
	}
	if !ok {
		c.misses.Inc()
		return User{}, false
	}
	u.ID = id
	c.hits.Inc()
	return u, true
}

// defaultETag returns the ETag of the user's answer with the default
// fields, when the cache holds the user: from the hash of that answer kept
// in the entry, without decoding or rendering the row. It counts neither
// hit nor miss: the caller counts the hit it answers (see
// notModifiedFromCache), or reads the user again.
func (c *userCache) defaultETag(id string) (string, bool) {
	if c == nil {
		return "", false
	}
	e, ok := c.entry(id)
	if !ok {
		return "", false
	}
	version, n := binary.Varint(e[answerHashLen:])
	if n <= 0 {
		return "", false
	}
	return resourceETagOf("user", id, version, binary.LittleEndian.Uint64(e)), true
}

// entry returns the entry held for the user with id: the hash of the
// user's default answer (answerHashLen bytes, see set), then the row.
func (c *userCache) entry(id string) ([]byte, bool) {
	key, ok := cacheKey(id)
	if !ok {
		return nil, false
	}
	e, err := c.entries.Get(key)
	if err != nil || len(e) < answerHashLen {
		return nil, false
	}
	return e, true
}

// answerHashLen is the size of the hash an entry starts with.
const answerHashLen = 8

// put keeps u, read from the database by a read that noted the user's
// generation gen before it began. A write done since may have committed
// before the read and put its row already: then gen has moved and u may
// be older, so it is not kept; nor while a write to the user is
// committing (its row will follow). The check and the put are one step
// under the user's lock, which each write's pending and written take after
// moving the generation: a write's row always lands after, never before,
// the row of a read that began before that write.
func (c *userCache) put(u *User, gen uint64) {
	if c == nil {
		return
	}
	c.locked(u.ID, func(key string) {
		if gen == c.store.Generation(u.ID) && !writesPending(gen) {
			c.set(key, u)
		}
	})
}

// locked runs fn with the entry key of the user with id, under the lock
// that reads' puts and writes' changes of that user take. An id that has
// no key (not in canonical form) has no entry: fn does not run.
func (c *userCache) locked(id string, fn func(key string)) {
	key, ok := cacheKey(id)
	if !ok {
		return
	}
	mu := &c.locks[key[len(key)-1]]
	mu.Lock()
	defer mu.Unlock()
	fn(key)
}

// pending is told of each user a write changes just before it commits,
// after the user's generation moved: it takes the user out, so that until
// the write's row goes in (written), reads of that user miss and read the
// database, which may already hold the new row.
func (c *userCache) pending(id string) {
	c.locked(id, func(key string) {
		c.entries.Delete(key) //nolint:errcheck // ErrEntryNotFound: nothing to take out
	})
}

// written is told, in the order of the commits, each user a write changed,
// after it moved the user's generation to gen: row is what the write
// committed, nil when it deleted the user or did not commit. While another
// write to the user (or to one sharing its generation) is still committing
// in the same batch, the row is not kept: that write's follows.
func (c *userCache) written(id string, row *User, gen uint64) {
	c.locked(id, func(key string) {
		// With one writer, running these in commit order, gen is the
		// current generation; the check only keeps that assumption honest,
		// as the id check does the writes' (the entry's ETag is made from
		// the row's id).
		if row != nil && row.ID == id && !c.writesTakeOut && gen == c.store.Generation(id) && !writesPending(gen) {
			c.set(key, row)
			return
		}
		c.entries.Delete(key) //nolint:errcheck // ErrEntryNotFound: nothing to take out
	})
}

// set keeps u under key, or, when bigcache cannot (an entry too large),
// takes out what it held: a write's row must never leave an older one.
// The entry starts with the hash of u's answer with the default fields,
// for the ETag of a conditional GET (defaultETag).
func (c *userCache) set(key string, u *User) {
	e := binary.LittleEndian.AppendUint64(make([]byte, 0, answerHashLen+64+len(u.Username)), defaultAnswerHash(u))
	if c.entries.Set(key, appendUserEntry(e, u)) != nil {
		c.entries.Delete(key) //nolint:errcheck // as above
	}
}

// defaultAnswerHash is the hash of the body GET of one user answers for
// u with the default fields, which its ETag ends with.
func defaultAnswerHash(u *User) uint64 {
	buf := getBuffer()
	defer putBuffer(buf)
	*buf = appendUserBody((*buf)[:0], u, userShow{}, nil)
	return xxhash.Sum64(*buf)
}

// uuidHexPairs are where the 16 bytes of an id stand in its text.
var uuidHexPairs = [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// lowerHex is the value of each lowercase hex digit, 0xff for any other byte.
var lowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// cacheKey is the entry key of the user with id: the id's 16 bytes rather
// than its 36 characters (a tenth of an entry). Only the canonical form of
// an id (lowercase, as parseID accepts it) has a key, so no two ids share
// one.
func cacheKey(id string) (string, bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return "", false
	}
	var k [16]byte
	for i, at := range uuidHexPairs {
		hi, lo := lowerHex[id[at]], lowerHex[id[at+1]]
		if hi|lo == 0xff {
			return "", false
		}
		k[i] = hi<<4 | lo
	}
	return string(k[:]), true
}

// appendUserEntry encodes what a client may see of u, but its id (the
// entry's key): the version, then each string as a uvarint of its length
// and its bytes; the nullable ones write their length plus one, and 0 for
// null; the timestamps write 0 and their digits packed when they are in
// timeFormat, else their length plus one and their text.
func appendUserEntry(b []byte, u *User) []byte {
	b = binary.AppendVarint(b, u.Version)
	b = append(binary.AppendUvarint(b, uint64(len(u.Username))), u.Username...)
	for _, s := range [...]string{u.CreatedAt, u.ModifiedAt} {
		if packed, ok := appendPackedTime(append(b, 0), s); ok {
			b = packed
			continue
		}
		b = append(binary.AppendUvarint(b, uint64(len(s))+1), s...)
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
	u.Username = d.str()
	var times [2 * len(timeFormat)]byte
	u.CreatedAt, u.ModifiedAt = d.timestamp(times[:0]), d.timestamp(times[len(timeFormat):len(timeFormat)])
	u.Email, u.FullName = d.nullable(), d.nullable()
	return u, d.ok && len(d.rest) == 0
}

// A timestamp in timeFormat ("2006-01-02T15:04:05.000Z") is 24 bytes of
// text but only 17 digits: an entry holds them as packed decimal, two to
// a byte, which saves 15 bytes a timestamp (with the key, an entry takes
// a third less, so half as many users again fit).
const packedTimeLen = 9

// appendPackedTime appends the digits of s packed, or reports that s is
// not in timeFormat.
func appendPackedTime(b []byte, s string) ([]byte, bool) {
	if len(s) != len(timeFormat) {
		return b, false
	}
	var packed [packedTimeLen]byte
	n := 0
	for i := 0; i < len(s); i++ {
		layout, c := timeFormat[i], s[i]
		if layout < '0' || layout > '9' { // a separator: T, -, :, . or Z
			if c != layout {
				return b, false
			}
			continue
		}
		if c < '0' || c > '9' {
			return b, false
		}
		packed[n/2] |= (c - '0') << (4 * (n % 2))
		n++
	}
	return append(b, packed[:]...), true
}

// timeDigits are where timeFormat's digits stand.
var timeDigits = [17]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22}

// unpackTime writes the timestamp appendPackedTime packed into buf's
// room (len(timeFormat) bytes).
func unpackTime(buf []byte, packed []byte) []byte {
	buf = append(buf, timeFormat...)
	t := buf[len(buf)-len(timeFormat):]
	for n, at := range timeDigits {
		t[at] = '0' + packed[n/2]>>(4*(n%2))&0xf
	}
	return buf
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

// timestamp reads a timestamp: 0 and its packed digits, unpacked into buf's
// room; or the uvarint of its length plus one, then its bytes.
func (d *entryReader) timestamp(buf []byte) string {
	if len(d.rest) == 0 || d.rest[0] != 0 {
		return d.text(1)
	}
	if len(d.rest) < 1+packedTimeLen {
		d.ok = false
		return ""
	}
	b := unpackTime(buf, d.rest[1:1+packedTimeLen])
	d.rest = d.rest[1+packedTimeLen:]
	return unsafe.String(unsafe.SliceData(b), len(b))
}

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
