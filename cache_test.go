// cache_test.go: the read cache is never stale. Writers change, give goals
// to and delete users while readers read them through the cache, one user
// at a time, in list pages and with their goals embedded; a read that
// starts after an acknowledged write must see it.
package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// ackLedger is, per user, the newest write each client was told of: the
// full_name sequence, the number of goals, and whether it is deleted; and
// whether its delete has been sent (a read that overlaps it may see either
// side).
type ackLedger struct {
	mu       sync.Mutex
	seq      map[string]int
	goals    map[string]int
	gone     map[string]bool
	deleting map[string]bool
}

// noted is what the ledger says of one user at one moment.
type noted struct {
	seq, goals int
	gone       bool
}

func (l *ackLedger) note(id string) noted {
	l.mu.Lock()
	defer l.mu.Unlock()
	return noted{l.seq[id], l.goals[id], l.gone[id]}
}

// deleteSent reports whether the user's delete has been sent.
func (l *ackLedger) deleteSent(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deleting[id]
}

// checkUser fails the test when u (a user object read, or nil for a 404)
// is older than n, which was noted before the read started. A read that
// overlapped the user's delete may see it gone, or its goals going.
func checkUser(t *testing.T, l *ackLedger, how, id string, u map[string]any, n noted) {
	t.Helper()
	overlapped := l.deleteSent(id)
	if u == nil {
		if !overlapped {
			t.Errorf("%s %s: 404 for a user that exists", how, id)
		}
		return
	}
	if n.gone {
		t.Errorf("%s %s: a user deleted before the read began was served: %v", how, id, u)
		return
	}
	if overlapped {
		return
	}
	seq, _ := strconv.Atoi(strings.TrimPrefix(fmt.Sprint(u["full_name"]), "seq-"))
	if seq < n.seq {
		t.Errorf("%s %s: full_name seq-%d, but seq-%d was acknowledged before the read began", how, id, seq, n.seq)
	}
	if goals, ok := u["goals"].([]any); ok && len(goals) < n.goals {
		t.Errorf("%s %s: %d goals, but %d were acknowledged before the read began", how, id, len(goals), n.goals)
	}
}

// Each write puts the row it committed in the cache, so most reads hit;
// when writes take their users out instead, reads miss and put what they
// read while the next writes race them.
func TestCachedReadsAreNeverStale(t *testing.T) {
	for _, takeOut := range []bool{false, true} {
		t.Run(fmt.Sprintf("writesTakeOut=%v", takeOut), func(t *testing.T) {
			ts := newTestServer(t)
			if ts.api.cache != nil {
				ts.api.cache.writesTakeOut = takeOut
			} else if takeOut {
				t.Skip("no read cache here")
			}
			testCachedReadsAreNeverStale(t, ts)
		})
	}
}

func testCachedReadsAreNeverStale(t *testing.T, ts *testServer) {
	ts.transport().MaxIdleConnsPerHost = 32
	l := &ackLedger{seq: map[string]int{}, goals: map[string]int{}, gone: map[string]bool{}, deleting: map[string]bool{}}
	var ids []string
	for i := 0; i < 16; i++ {
		id := ts.mustCreateUser(t, fmt.Sprintf("cached%02d", i), `,"full_name":"seq-0"`)["id"].(string)
		ids = append(ids, id)
	}
	// The writers run for 3 s, and on until the readers have made enough
	// reads to prove something (a slow machine, -race), for 60 s at most.
	const enoughReads = 1000
	start := time.Now()
	var reads, writes atomic.Int64
	writing := func() bool {
		return time.Since(start) < 3*time.Second || reads.Load() < enoughReads && time.Since(start) < time.Minute
	}
	var writersDone atomic.Int64 // when the last writer finished, in ns since start
	var writers sync.WaitGroup
	var wg sync.WaitGroup
	// One writer per user, so each user's acknowledged sequence rises: it
	// renames, adds goals, and at the end of the run deletes half of them.
	for i, id := range ids {
		wg.Add(1)
		writers.Add(1)
		go func() {
			defer wg.Done()
			defer writers.Done()
			for seq := 1; writing(); seq++ {
				r := ts.do(t, "PATCH", "/api/users/"+id, fmt.Sprintf(`{"full_name":"seq-%d"}`, seq))
				if r.status != 200 {
					t.Errorf("PATCH: %d %s", r.status, r.body)
					return
				}
				l.mu.Lock()
				l.seq[id] = seq
				l.mu.Unlock()
				if seq%5 == 0 {
					if r := ts.do(t, "POST", "/api/users/"+id+"/goals", `{"title":"g","target_minutes":5}`); r.status != 201 {
						t.Errorf("POST goal: %d %s", r.status, r.body)
						return
					}
					l.mu.Lock()
					l.goals[id]++
					l.mu.Unlock()
				}
				writes.Add(1)
			}
			if i%2 == 0 {
				l.mu.Lock()
				l.deleting[id] = true
				l.mu.Unlock()
				if r := ts.do(t, "DELETE", "/api/users/"+id, ""); r.status != 204 {
					t.Errorf("DELETE: %d", r.status)
					return
				}
				l.mu.Lock()
				l.gone[id] = true
				l.mu.Unlock()
			}
		}()
	}
	go func() {
		writers.Wait()
		writersDone.Store(int64(time.Since(start)))
	}()
	// Readers, until a little after the writers stop (the deletes happen
	// then).
	reading := func() bool {
		done := writersDone.Load()
		return done == 0 || time.Since(start) < time.Duration(done)+500*time.Millisecond
	}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for reading() {
				id := ids[rng.IntN(len(ids))]
				getOne := func(what, show string) {
					n := l.note(id)
					r := ts.do(t, "GET", "/api/users/"+id+"?show="+show, "")
					var u map[string]any
					if r.status == 200 {
						u = r.json(t)["user"].(map[string]any)
					}
					checkUser(t, l, what, id, u, n)
				}
				switch rng.IntN(4) {
				case 0, 1: // one user, through the cache
					getOne("GET", "full_name")
				case 2: // with its goals embedded, through the cache
					getOne("GET with goals", "full_name,goals")
				default: // a list page of them all
					before := map[string]noted{}
					for _, id := range ids {
						before[id] = l.note(id)
					}
					seen := map[string]map[string]any{}
					for _, u := range ts.do(t, "GET", "/api/users?limit=100&show=full_name,goals", "").list(t) {
						seen[u["id"].(string)] = u
					}
					for _, id := range ids {
						if u, ok := seen[id]; ok || !before[id].gone {
							checkUser(t, l, "list", id, u, before[id])
						}
					}
				}
				reads.Add(1)
			}
		}(g)
	}
	wg.Wait()
	hits := testutil.ToFloat64(ts.api.metrics.cacheHits)
	t.Logf("%d reads against %d acknowledged writes; %v answered from the cache", reads.Load(), writes.Load(), hits)
	if reads.Load() < enoughReads { // about 6,000 in 3 s in a plain run, 1,000 under -race
		t.Fatalf("only %d reads in %v: not enough rounds to prove anything", reads.Load(), time.Since(start).Round(time.Second))
	}
	if ts.store.SeesEveryWrite() && hits < 100 {
		t.Fatalf("only %v reads hit the cache: the test did not exercise it", hits)
	}
}

func TestCacheIsOffWhereOtherInstancesWrite(t *testing.T) {
	ts := newTestServer(t)
	if got := ts.api.cache != nil; got != (testBackend == "sqlite") {
		t.Fatalf("cache on = %v on %s; want it on SQLite only", got, testBackend)
	}
}

func TestCacheKeepsEachShowApart(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", `,"email":"zoe@example.com","full_name":"Zoe Z"`)["id"].(string)
	shows := []string{"", "email", "full_name", "email,full_name", "goals", "email,goals", "goals.description", "full_name,goals.description"}
	for round := 0; round < 2; round++ { // the second round answers from the cache
		for _, show := range shows {
			path := "/api/users/" + id
			if show != "" {
				path += "?show=" + show
			}
			u := ts.do(t, "GET", path, "").json(t)["user"].(map[string]any)
			_, hasEmail := u["email"]
			_, hasName := u["full_name"]
			_, hasGoals := u["goals"]
			want := map[string]bool{"email": strings.Contains(show, "email"), "full_name": strings.Contains(show, "full_name"), "goals": strings.Contains(show, "goals")}
			if hasEmail != want["email"] || hasName != want["full_name"] || hasGoals != want["goals"] {
				t.Fatalf("round %d, show=%q: got %v", round, show, u)
			}
		}
	}
}

// A cache entry gives back the row it was made from, nulls and empty
// strings apart, timestamps packed or not, and a cut or padded entry is
// refused rather than read.
func TestUserEntriesRoundTrip(t *testing.T) {
	empty, long := "", strings.Repeat("é", 300)
	for _, u := range []User{
		{Version: 1, Username: "ann", CreatedAt: "2026-11-25T12:00:00.000Z", ModifiedAt: "2026-11-25T12:00:01.000Z"},
		{Version: 1 << 40, Username: long, Email: &empty, FullName: &long, CreatedAt: "c", ModifiedAt: "m"},
		{Version: 7, Username: "", Email: &long, CreatedAt: "", ModifiedAt: ""},
		// Timestamps of timeFormat's length that are not in it keep their text.
		{Version: 2, Username: "bo", CreatedAt: "2026-11-25 12:00:00.000Z", ModifiedAt: "2026-11-25T12:00:00.00xZ"},
		{Version: 3, Username: "cy", CreatedAt: "9999-12-31T23:59:59.999Z", ModifiedAt: "0000-01-01T00:00:00.000Z"},
	} {
		e := appendUserEntry(nil, &u)
		got, ok := decodeUserEntry(e)
		if !ok || !reflect.DeepEqual(got, u) {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", u, got, ok)
		}
		for cut := 0; cut < len(e); cut++ {
			if _, ok := decodeUserEntry(e[:cut]); ok {
				t.Fatalf("an entry cut to %d of %d bytes was read", cut, len(e))
			}
		}
		if _, ok := decodeUserEntry(append(e, 0)); ok {
			t.Fatalf("an entry with a byte too many was read")
		}
	}
}

// Timestamps in timeFormat are packed into 9 bytes; others keep their text.
func TestEntryTimestampsArePackedOnlyInTimeFormat(t *testing.T) {
	size := func(created string) int {
		return len(appendUserEntry(nil, &User{Username: "a", CreatedAt: created, ModifiedAt: created}))
	}
	if packed, text := size("2026-11-25T12:00:00.000Z"), size("2026-11-25T12:00:00.000+"); text-packed != 2*(len(timeFormat)-packedTimeLen) {
		t.Fatalf("an entry with packed timestamps takes %d bytes, with text %d", packed, text)
	}
}

// Each id in its canonical form has a key of its own, of 16 bytes; any
// other form has none.
func TestCacheKeys(t *testing.T) {
	seen := map[string]string{}
	for range 1000 {
		id, err := newID()
		if err != nil {
			t.Fatal(err)
		}
		key, ok := cacheKey(id)
		if !ok || len(key) != 16 {
			t.Fatalf("cacheKey(%q) = %x, %v", id, key, ok)
		}
		if other, dup := seen[key]; dup {
			t.Fatalf("%q and %q share the key %x", id, other, key)
		}
		seen[key] = id
		if want := uuid.MustParse(id); key != string(want[:]) {
			t.Fatalf("cacheKey(%q) = %x, want its bytes %x", id, key, want[:])
		}
	}
	for _, id := range []string{"", "01A2147C-1B2E-7D0E-9EBA-31E11F4D1439", "01a2147c-1b2e-7d0e-9eba-31e11f4d143", "01a2147c_1b2e-7d0e-9eba-31e11f4d1439", "01a2147c-1b2e-7d0e-9eba-31e11f4d143g"} {
		if key, ok := cacheKey(id); ok {
			t.Fatalf("cacheKey(%q) = %x, want none", id, key)
		}
	}
}

// A write puts the row it committed into the cache. Writes of one user
// racing each other put their rows in the order they committed, so once
// they are all answered the cache holds the last one, as the database
// does, never an older one.
func TestWrittenRowsReachTheCacheInCommitOrder(t *testing.T) {
	ts := newTestServer(t)
	ts.transport().MaxIdleConnsPerHost = 16
	id := ts.mustCreateUser(t, "racer", "")["id"].(string)
	hits := func() float64 { return testutil.ToFloat64(ts.api.metrics.cacheHits) }
	var hitsAfterWrites float64
	for round := 0; round < 200; round++ {
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := ts.do(t, "PATCH", "/api/users/"+id, fmt.Sprintf(`{"full_name":"round %d writer %d"}`, round, w))
				if r.status != 200 {
					t.Errorf("PATCH: %d %s", r.status, r.body)
				}
			}()
		}
		wg.Wait()
		before := hits()
		got := ts.do(t, "GET", "/api/users/"+id+"?show=full_name", "").json(t)["user"].(map[string]any)
		hitsAfterWrites += hits() - before
		var want string
		ts.sqlGet(t, &want, "SELECT full_name FROM users WHERE id = ?", id)
		if got["full_name"] != want {
			t.Fatalf("round %d: GET after the writes shows %q; the database holds %q", round, got["full_name"], want)
		}
	}
	if ts.store.SeesEveryWrite() && hitsAfterWrites < 100 {
		t.Fatalf("only %v of 200 reads right after writes hit the cache: written rows do not reach it", hitsAfterWrites)
	}
}

// Every kind of user write reaches the cache: after each, a read (which
// the one before it had put in the cache) shows what the write left.
func TestEveryUserWriteReachesTheCache(t *testing.T) {
	ts := newTestServer(t)
	fullName := func(id string) any {
		return ts.do(t, "GET", "/api/users/"+id+"?show=full_name", "").json(t)["user"].(map[string]any)["full_name"]
	}
	r := ts.do(t, "POST", "/api/users", `{"username":"ann","password":"correct horse","full_name":"created"}`)
	expect(t, "POST", r, http.StatusCreated)
	id := r.json(t)["user"].(map[string]any)["id"].(string)
	if got := fullName(id); got != "created" {
		t.Fatalf("after POST: full_name %v", got)
	}
	etag := ts.do(t, "GET", "/api/users/"+id, "").header.Get("Etag")
	for _, w := range []struct {
		what, method, path, body string
		headers                  []string
		want                     int
	}{
		{"PATCH", "PATCH", "/api/users/" + id, `{"full_name":"patched"}`, nil, http.StatusOK},
		{"PATCH with If-Match", "PATCH", "/api/users/" + id, `{"full_name":"matched"}`, []string{"If-Match", etag}, http.StatusPreconditionFailed},
		{"PUT by id", "PUT", "/api/users/" + id, `{"full_name":"put"}`, nil, http.StatusOK},
		{"PUT by username", "PUT", "/api/users/by-username/ANN", `{"full_name":"put by name"}`, nil, http.StatusOK},
	} {
		fullName(id) // the cache holds the user before each write
		expect(t, w.what, ts.do(t, w.method, w.path, w.body, w.headers...), w.want)
		var want string
		ts.sqlGet(t, &want, "SELECT full_name FROM users WHERE id = ?", id)
		if got := fullName(id); got != want {
			t.Fatalf("after %s: GET shows full_name %v; the database holds %q", w.what, got, want)
		}
	}
	fresh := ts.do(t, "GET", "/api/users/"+id, "").header.Get("Etag")
	expect(t, "PATCH with a current If-Match", ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"matched"}`, "If-Match", fresh), http.StatusOK)
	if got := fullName(id); got != "matched" {
		t.Fatalf("after PATCH with If-Match: full_name %v", got)
	}
	fullName(id)
	expect(t, "DELETE", ts.do(t, "DELETE", "/api/users/"+id, ""), http.StatusNoContent)
	expect(t, "GET after DELETE", ts.do(t, "GET", "/api/users/"+id, ""), http.StatusNotFound)
}

// Between a write's commit and its row going into the cache, the database
// and every path that reads it (by username here) already show the write.
// A read by id then must too: not the row the cache held, nor a 304 to its
// ETag, nor a user just deleted.
func TestNoReadIsBehindACommittedWrite(t *testing.T) {
	ts := newTestServer(t)
	if ts.api.cache == nil {
		t.Skip("no read cache here")
	}
	id := ts.mustCreateUser(t, "between", "")["id"].(string)
	for _, w := range []struct {
		method, body string
		want         int // of a read by id while the write's row is not in the cache yet
	}{
		{"PATCH", `{"full_name":"after"}`, http.StatusOK},
		{"DELETE", "", http.StatusNotFound},
	} {
		old := ts.do(t, "GET", "/api/users/"+id, "") // the cache holds the user
		expect(t, "GET before the "+w.method, old, http.StatusOK)
		committed, resume := whileWriteRowIsOnItsWay(t, ts.store, id)
		answered := make(chan response, 1)
		go func() { answered <- ts.do(t, w.method, "/api/users/"+id, w.body) }()
		select {
		case <-committed:
		case r := <-answered:
			t.Fatalf("%s answered %d without the cache being told of it", w.method, r.status)
		}
		byName := ts.do(t, "GET", "/api/users/by-username/between", "")
		byID := ts.do(t, "GET", "/api/users/"+id, "")
		conditional := ts.do(t, "GET", "/api/users/"+id, "", "If-None-Match", old.header.Get("Etag"))
		close(resume)
		expect(t, w.method, <-answered, map[string]int{"PATCH": http.StatusOK, "DELETE": http.StatusNoContent}[w.method])
		expect(t, "GET by username after the "+w.method+" committed", byName, w.want)
		expect(t, "GET by id after the "+w.method+" committed", byID, w.want)
		expect(t, "GET by id with the old ETag after the "+w.method+" committed", conditional, w.want)
		if w.want == http.StatusOK && string(byID.body) != string(byName.body) {
			t.Fatalf("after the %s committed, by id: %s; by username: %s", w.method, byID.body, byName.body)
		}
	}
}

// whileWriteRowIsOnItsWay holds the writer once a write to the user with
// id has committed, before the cache is given its row, until resume is
// closed; committed is closed when it gets there.
func whileWriteRowIsOnItsWay(t *testing.T, st *store, id string) (committed, resume chan struct{}) {
	committed, resume = make(chan struct{}), make(chan struct{})
	watcher := st.watcher.Load()
	held := *watcher
	var once sync.Once
	held.written = func(wid string, row *User, gen uint64) {
		if wid == id {
			once.Do(func() {
				close(committed)
				<-resume
			})
		}
		watcher.written(wid, row, gen)
	}
	st.watcher.Store(&held)
	t.Cleanup(func() { st.watcher.Store(watcher) })
	return committed, resume
}

// cacheOnSQLite opens a SQLite store in a temporary directory with a read
// cache on it, for tests that drive the cache and the store's write
// notices directly.
func cacheOnSQLite(t *testing.T) (*store, *userCache) {
	t.Helper()
	st, err := openStore(context.Background(), filepath.Join(t.TempDir(), "cache.db"), storeOptions{exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, newUserCache(st, defaultCacheMiB, newCounter("hits"), newCounter("misses"), quietLogger())
}

// commitWrite tells st of a write to users as the SQLite engine does:
// before its commit, and once it has ended.
func commitWrite(st *store, users []touchedUser, committed bool) {
	st.committing(users)
	st.touched(users, committed, true)
}

// cachedRow is a user row at version v.
func cachedRow(id string, v int64) *User {
	return &User{ID: id, Version: v, Username: "u", CreatedAt: "2026-11-25T12:00:00.000Z", ModifiedAt: "2026-11-25T12:00:00.000Z"}
}

// A read that noted the generation before a write and read the row the
// write replaced puts it at the latest moment it can: right after the
// write's own put. It is not kept, whether the write updated the user,
// deleted it, or did not commit. Nor is the row of a read that began while
// the write was committing (the database may hold either row then): until
// the write's row goes in, the cache holds nothing for the user.
func TestAReadBegunBeforeAWriteNeverPutsItsRowAfterIt(t *testing.T) {
	st, c := cacheOnSQLite(t)
	id, err := newID()
	if err != nil {
		t.Fatal(err)
	}
	watcher := *st.watcher.Load()
	for _, write := range []struct {
		name      string
		row       *User
		committed bool
	}{
		{"update", cachedRow(id, 2), true},
		{"delete", nil, true},
		{"uncommitted update", cachedRow(id, 3), false},
	} {
		c.put(cachedRow(id, 1), c.generation(id))
		began := c.generation(id)
		racer := watcher
		racer.pending = func(id string) {
			watcher.pending(id)
			c.put(cachedRow(id, 1), c.generation(id)) // a read begun as the write commits
		}
		racer.written = func(id string, row *User, gen uint64) {
			if u, ok := c.get(id); ok {
				t.Errorf("%s: while it committed, the cache held version %d", write.name, u.Version)
			}
			watcher.written(id, row, gen)
			c.put(cachedRow(id, 1), began) // the read's put, right after the write's
		}
		st.watcher.Store(&racer)
		commitWrite(st, []touchedUser{{id: id, row: write.row}}, write.committed)
		st.watcher.Store(&watcher)
		u, ok := c.get(id)
		switch {
		case write.committed && write.row != nil && (!ok || u.Version != write.row.Version):
			t.Fatalf("%s: the cache holds %+v (%v), want version %d", write.name, u, ok, write.row.Version)
		case (!write.committed || write.row == nil) && ok:
			t.Fatalf("%s: the cache holds version %d, want nothing", write.name, u.Version)
		}
	}
}

// Two writes to one user in one batch: once the batch has committed the
// second's row, the first's must not go into the cache when its write is
// told it ended; the second's does.
func TestTheFirstOfTwoWritesToAUserInABatchIsNotCached(t *testing.T) {
	st, c := cacheOnSQLite(t)
	id, err := newID()
	if err != nil {
		t.Fatal(err)
	}
	first := []touchedUser{{id: id, row: cachedRow(id, 2)}}
	second := []touchedUser{{id: id, row: cachedRow(id, 3)}}
	st.committing(first)
	st.committing(second)
	st.touched(first, true, true) // the database holds version 3 now
	if u, ok := c.get(id); ok {
		t.Fatalf("with the batch committed, the cache answers version %d", u.Version)
	}
	st.touched(second, true, true)
	if u, ok := c.get(id); !ok || u.Version != 3 {
		t.Fatalf("once both writes ended, the cache holds %+v (%v), want version 3", u, ok)
	}
}

// One writer moves two users' versions up, telling the store of each
// commit as the engine does; readers take hits, or note the generation,
// read the "database" and put. No hit is ever older than the last
// acknowledged version, with writes putting their rows or taking them out.
func TestCacheHitsAreNeverOlderThanTheLastAcknowledgedWrite(t *testing.T) {
	for _, takeOut := range []bool{false, true} {
		t.Run(fmt.Sprintf("writesTakeOut=%v", takeOut), func(t *testing.T) {
			st, c := cacheOnSQLite(t)
			c.writesTakeOut = takeOut
			var ids [2]string
			var committed, acked [2]atomic.Int64
			for i := range ids {
				id, err := newID()
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = id
				committed[i].Store(1)
				acked[i].Store(1)
			}
			var stop atomic.Bool
			var stale, hits atomic.Int64
			var wg sync.WaitGroup
			wg.Go(func() {
				defer stop.Store(true)
				for v, end := int64(2), time.Now().Add(time.Second); time.Now().Before(end); v++ {
					for i, id := range ids {
						committed[i].Store(v)
						commitWrite(st, []touchedUser{{id: id, row: cachedRow(id, v)}}, true)
						acked[i].Store(v)
					}
				}
			})
			for range 3 {
				wg.Go(func() {
					for n := 0; !stop.Load(); n++ {
						i := n % len(ids)
						ackedBefore := acked[i].Load()
						if u, ok := c.get(ids[i]); ok {
							hits.Add(1)
							if u.Version < ackedBefore {
								stale.Add(1)
							}
							continue
						}
						began := c.generation(ids[i])
						c.put(cachedRow(ids[i], committed[i].Load()), began)
					}
				})
			}
			wg.Wait()
			if stale.Load() > 0 || hits.Load() < 1000 {
				t.Fatalf("%d stale hits of %d", stale.Load(), hits.Load())
			}
		})
	}
}

// Decoding an entry gives back the row it was made from, and any bytes at
// all decode or are refused without a panic.
func FuzzUserEntry(f *testing.F) {
	f.Add(int64(1), "ann", "2026-11-25T12:00:00.000Z", "2026-11-25T12:00:01.000Z", "a@b.c", true, "", false, []byte{0})
	f.Add(int64(-7), "", "c", "2026-11-25 12:00:00.000Z", "", false, "é", true, []byte("\x02\x00\x01"))
	f.Fuzz(func(t *testing.T, version int64, username, created, modified, email string, hasEmail bool, name string, hasName bool, junk []byte) {
		u := User{Version: version, Username: username, CreatedAt: created, ModifiedAt: modified}
		if hasEmail {
			u.Email = &email
		}
		if hasName {
			u.FullName = &name
		}
		e := appendUserEntry(nil, &u)
		if got, ok := decodeUserEntry(e); !ok || !reflect.DeepEqual(got, u) {
			t.Fatalf("decode(encode(%+v)) = %+v, %v", u, got, ok)
		}
		if _, ok := decodeUserEntry(e[:len(e)-1]); ok {
			t.Fatalf("an entry cut by a byte was read")
		}
		decodeUserEntry(junk)
	})
}

// A conditional GET of a user's default fields is answered from the hash
// the cache keeps of that answer: the ETag it gives is the one rendered
// from the user's row in the database, for every kind of row, after every
// kind of write, for GET and HEAD and show= lists naming default fields.
func TestCachedDefaultETagsMatchTheFullAnswers(t *testing.T) {
	ts := newTestServer(t)
	if ts.api.cache == nil {
		t.Skip("no read cache here")
	}
	etagOfRow := func(id string) string {
		u, err := ts.store.GetUser(context.Background(), id, userExtras{})
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		return renderUser(&b, &u, userShow{}, nil)
	}
	writes := []struct {
		name string
		do   func(id, username, etag string, round int) response
	}{
		{"PATCH", func(id, _, _ string, round int) response {
			return ts.do(t, "PATCH", "/api/users/"+id, fmt.Sprintf(`{"full_name":"round %d"}`, round))
		}},
		{"PATCH with If-Match", func(id, username, etag string, round int) response {
			return ts.do(t, "PATCH", "/api/users/"+id, fmt.Sprintf(`{"email":"%s.r%d@example.com"}`, username, round), "If-Match", etag)
		}},
		{"PUT by username", func(_, username, _ string, round int) response {
			return ts.do(t, "PUT", "/api/users/by-username/"+username, fmt.Sprintf(`{"full_name":"put %d"}`, round))
		}},
	}
	for i, extra := range []string{``, `,"email":"e@example.com"`, `,"full_name":"Zoë \"Z\" <Ünïcode> \u2028"`, `,"email":"f@example.com","full_name":""`} {
		username := fmt.Sprintf("etagged%d", i)
		id := ts.mustCreateUser(t, username, extra)["id"].(string)
		path := "/api/users/" + id
		for round, write := range append(writes, writes...) {
			etag := etagOfRow(id)
			if r := ts.do(t, "GET", path, ""); r.status != 200 || r.header.Get("ETag") != etag {
				t.Fatalf("user %d, before %s: GET %d, ETag %q, the row's %q", i, write.name, r.status, r.header.Get("ETag"), etag)
			}
			if cached, ok := ts.api.cache.defaultETag(id); !ok || cached != etag {
				t.Fatalf("user %d, before %s: the cache's ETag is %q (%v), the row's %q", i, write.name, cached, ok, etag)
			}
			for _, method := range []string{"GET", "HEAD"} {
				for _, query := range []string{"", "?show=", "?show=username", "?show=id,created_at"} {
					for _, inm := range []string{etag, `"other", ` + etag, "*", "W/" + etag} {
						if r := ts.do(t, method, path+query, "", "If-None-Match", inm); r.status != 304 || r.header.Get("ETag") != etag || len(r.body) != 0 {
							t.Fatalf("%s %s, If-None-Match: %s: %d, ETag %q, body %q", method, query, inm, r.status, r.header.Get("ETag"), r.body)
						}
					}
				}
			}
			// Another representation is not "not modified".
			if r := ts.do(t, "GET", path+"?show=email", "", "If-None-Match", etag); r.status != 200 {
				t.Fatalf("show=email with the default answer's ETag: %d", r.status)
			}
			if r := write.do(id, username, etag, round); r.status != 200 {
				t.Fatalf("%s: %d %s", write.name, r.status, r.body)
			}
			if r := ts.do(t, "GET", path, "", "If-None-Match", etag); r.status != 200 || r.header.Get("ETag") != etagOfRow(id) {
				t.Fatalf("after %s, the old ETag: %d, ETag %q, the row's %q", write.name, r.status, r.header.Get("ETag"), etagOfRow(id))
			}
		}
	}
}
