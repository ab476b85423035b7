// writes_test.go: writes that race, on both engines: updates name the
// version they read, so nothing is lost and nothing half-done reaches a
// client, without relying on a single writer.
package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

func TestConcurrentPatchesOfDifferentFieldsBothSurvive(t *testing.T) {
	ts := newTestServer(t)
	for round := 0; round < 20; round++ {
		id := ts.mustCreateUser(t, fmt.Sprintf("zoe%02d", round), "")["id"].(string)
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		for i, body := range []string{
			fmt.Sprintf(`{"full_name":"Name %d"}`, round),
			fmt.Sprintf(`{"email":"zoe%d@example.com"}`, round),
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[i] = ts.do(t, "PATCH", "/api/users/"+id, body).status
			}()
		}
		wg.Wait()
		if statuses[0] != 200 || statuses[1] != 200 {
			t.Fatalf("round %d: statuses %v", round, statuses)
		}
		u := ts.do(t, "GET", "/api/users/"+id+"?show=email,full_name", "").json(t)["user"].(map[string]any)
		if u["full_name"] != fmt.Sprintf("Name %d", round) || u["email"] != fmt.Sprintf("zoe%d@example.com", round) {
			t.Fatalf("round %d: a concurrent PATCH was lost: %v", round, u)
		}
	}
}

func TestGoalCreatedWhileItsUserIsDeleted(t *testing.T) {
	ts := newTestServer(t)
	count := map[int]int{}
	for round := 0; round < 30; round++ {
		id := ts.mustCreateUser(t, fmt.Sprintf("gone%02d", round), "")["id"].(string)
		del, create := raceUserDelete(t, ts, id, "POST", "/api/users/"+id+"/goals", `{"title":"g","target_minutes":5}`)
		if del != 204 || (create != 201 && create != 404) {
			t.Fatalf("round %d: DELETE %d, POST goal %d; want 204, and 201 or 404 (never 500)", round, del, create)
		}
		count[create]++
	}
	var orphans int
	ts.sqlGet(t, &orphans, "SELECT count(*) FROM goals WHERE user_id NOT IN (SELECT id FROM users)")
	t.Logf("goal creates racing their user's delete: %v", count)
	if orphans != 0 {
		t.Fatalf("%d goals outlived their user", orphans)
	}
}

// raceUserDelete sends a DELETE of the user with id and another request
// at once, and returns both statuses.
func raceUserDelete(t *testing.T, ts *testServer, id, method, path, body string) (del, other int) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); del = ts.do(t, "DELETE", "/api/users/"+id, "").status }()
	go func() { defer wg.Done(); other = ts.do(t, method, path, body).status }()
	wg.Wait()
	return del, other
}

// holdWriteLock takes, outside the server, the lock a write of user id
// needs, and returns a function that lets it go: on SQLite the database's
// write lock, on PostgreSQL the user's row.
func holdWriteLock(t *testing.T, ts *testServer, id string) (release func()) {
	t.Helper()
	var db *sqlx.DB
	var err error
	if testBackend == "postgres" {
		db, err = sqlx.Open("pgx", ts.db)
	} else {
		db, err = sqlx.Open("sqlite", dsn(ts.db, nil, nil))
	}
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if testBackend == "postgres" {
		_, err = tx.Exec("SELECT id FROM users WHERE id = $1 FOR UPDATE", id)
	} else {
		_, err = tx.Exec("UPDATE users SET version = version WHERE id = ?", id) // takes the write lock
	}
	if err != nil {
		t.Fatal(err)
	}
	return func() { tx.Rollback(); db.Close() } //nolint:errcheck // a test's own lock
}

func TestAStatementThatHangsIsCutAndAnswered503(t *testing.T) {
	ts := newTestServerAt(t, testConfig(), testDB(t), errorLogger(t), storeOptions{statementTimeout: 300 * time.Millisecond})
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	release := holdWriteLock(t, ts, id)
	start := time.Now()
	r := ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"blocked"}`)
	took := time.Since(start)
	release()
	t.Logf("a write behind a lock held elsewhere: %d after %v", r.status, took.Round(time.Millisecond))
	expect(t, "a write behind a held lock", r, http.StatusServiceUnavailable)
	if r.json(t)["error"] == nil || took > 10*time.Second {
		t.Fatalf("503 body %s after %v", r.body, took)
	}
	expect(t, "the same write once the lock is gone", ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"free"}`), http.StatusOK)
}

func TestSQLiteReadsWaitForAConnectionOnlyAsLongAsTheirRequest(t *testing.T) {
	onlySQLite(t, "the read path's pool")
	st, err := openStore(t.Context(), testDB(t), storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var held []rowsIter
	for i := 0; i < readConns; i++ { // every connection taken
		rows, err := st.queryRead(t.Context(), true, "SELECT 1")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, rows)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := st.Ping(ctx); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("ping with every connection taken: %v after %v, want an error at the deadline", err, time.Since(start))
	}
	// One waiting without a deadline is woken by Close.
	done := make(chan error, 1)
	go func() { done <- st.Ping(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	st.Close()
	select {
	case err := <-done:
		if errorCodeOf(err) != codeUnavailable {
			t.Fatalf("a read waiting when the store closed: %v, want unavailable", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a read waiting for a connection was not woken by Close")
	}
	for _, rows := range held {
		rows.Close()
	}
}

// A goal's update that embeds its owner (?show=user) racing the owner's
// delete: the update locks the goal and the delete (cascading to the
// goals) locks the user, so the owner read for the answer must not wait
// for the user's lock, or each waits for the other until PostgreSQL
// breaks the deadlock.
func TestGoalUpdateShowingItsOwnerRacesTheOwnersDelete(t *testing.T) {
	ts := newTestServer(t)
	count := map[int]int{}
	for round := 0; round < 40; round++ {
		user := ts.mustCreateUser(t, fmt.Sprintf("owner%02d", round), "")["id"].(string)
		r := ts.do(t, "POST", "/api/users/"+user+"/goals", `{"title":"g","target_minutes":5}`)
		expect(t, "create goal", r, 201)
		goal := r.json(t)["goal"].(map[string]any)["id"].(string)
		del, patch := raceUserDelete(t, ts, user, "PATCH", "/api/goals/"+goal+"?show=user", `{"title":"h"}`)
		if del != 204 || (patch != 200 && patch != 404) {
			t.Fatalf("round %d: DELETE user %d, PATCH goal %d; want 204, and 200 or 404", round, del, patch)
		}
		count[patch]++
	}
	t.Logf("goal updates showing their owner, racing its delete: %v", count)
	if n := deadlocksBroken(t, ts); n != 0 {
		t.Fatalf("PostgreSQL broke %d deadlocks between these writes; want none", n)
	}
}

// deadlocksBroken is how many deadlocks PostgreSQL has broken in the
// test's database (0 on SQLite, which has one writer at a time). It closes
// the store first: a connection reports its statistics when it ends, so
// once none is left, every one the server had has reported.
func deadlocksBroken(t *testing.T, ts *testServer) int64 {
	t.Helper()
	if testBackend != "postgres" {
		return 0
	}
	ts.store.Close()
	name := strings.TrimPrefix(mustURL(t, ts.db).Path, "/")
	var n int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := pgAdmin.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'", name).Scan(&n); err != nil {
			t.Fatalf("count connections: %v", err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to %s still open 10 s after the store closed", n, name)
		}
	}
	if err := pgAdmin.QueryRow("SELECT deadlocks FROM pg_stat_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatalf("read deadlocks: %v", err)
	}
	return n
}

// A write that changes nothing ({}, only read-only fields, or every field
// at its current value; with or without If-Match; by id or by username) is
// a read: the answer is the resource as it is, with the same version,
// modified_at and ETag, so a client holding that ETag is not told it
// changed. A write that changes something still moves all three.
func TestWritesThatChangeNothingKeepTheVersion(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", `,"full_name":"Zoe","email":"zoe@example.com"`)["id"].(string)
	gid := ts.mustCreateGoal(t, uid, `{"title":"Read","target_minutes":30,"description":"novels"}`)["id"].(string)
	state := func(path string) (etag, modified string) {
		r := ts.do(t, "GET", path, "")
		expect(t, "GET "+path, r, http.StatusOK)
		for _, v := range r.json(t) {
			modified, _ = v.(map[string]any)["modified_at"].(string)
		}
		return r.header.Get("ETag"), modified
	}
	user, goal := "/api/users/"+uid+"?show=email,full_name", "/api/goals/"+gid+"?show=description"
	for _, c := range []struct {
		what, method, path, body string
		ifMatch                  bool
		read                     string
	}{
		{"PATCH a user with {}", "PATCH", user, `{}`, false, user},
		{"PUT a user with only read-only fields", "PUT", user, `{"id":"` + uid + `","created_at":"x","goals":[]}`, false, user},
		{"PATCH a user with its current fields", "PATCH", user, `{"username":"zoe","full_name":"Zoe","email":"zoe@example.com"}`, false, user},
		{"PATCH a user with {} and If-Match", "PATCH", user, `{}`, true, user},
		{"PATCH a user with its current name and If-Match", "PATCH", user, `{"full_name":"Zoe"}`, true, user},
		{"PUT by username with {}", "PUT", "/api/users/by-username/ZOE?show=email,full_name", `{}`, false, user},
		{"PUT by username with its current email and If-Match", "PUT", "/api/users/by-username/zoe?show=email,full_name", `{"email":"zoe@example.com"}`, true, user},
		{"PATCH a goal with {}", "PATCH", goal, `{}`, false, goal},
		{"PUT a goal with its current fields", "PUT", goal, `{"title":"Read","period":"day","target_minutes":30,"description":"novels"}`, false, goal},
		{"PATCH a goal with its current title and If-Match", "PATCH", goal, `{"title":"Read"}`, true, goal},
	} {
		etag, modified := state(c.read)
		var headers []string
		if c.ifMatch {
			headers = []string{"If-Match", etag}
		}
		r := ts.do(t, c.method, c.path, c.body, headers...)
		expect(t, c.what, r, http.StatusOK)
		if got := r.header.Get("ETag"); got != etag {
			t.Fatalf("%s: ETag %s, want the one read before, %s", c.what, got, etag)
		}
		if etag2, modified2 := state(c.read); etag2 != etag || modified2 != modified {
			t.Fatalf("%s: now ETag %s, modified_at %s; before %s, %s", c.what, etag2, modified2, etag, modified)
		}
	}
	// What only looks alike is a change: case, and "" against null; on the
	// one-statement path and on If-Match's read-then-write path.
	for _, ifMatch := range []bool{false, true} {
		name := fmt.Sprintf("max%v", ifMatch)
		uid := ts.mustCreateUser(t, name, `,"full_name":"Max","email":"`+name+`@example.com"`)["id"].(string)
		gid := ts.mustCreateGoal(t, uid, `{"title":"Run","target_minutes":30,"description":"far"}`)["id"].(string)
		user, goal := "/api/users/"+uid+"?show=email,full_name", "/api/goals/"+gid+"?show=description"
		for _, c := range []struct {
			what, path, body string
			changes          bool
		}{
			{"a user's full name", user, `{"full_name":"Mäx"}`, true},
			{"a username, in case only", user, `{"username":"` + strings.ToUpper(name) + `"}`, true},
			{"an email, in case only", user, `{"email":"` + strings.ToUpper(name) + `@example.com"}`, true},
			{"a full name, to empty", user, `{"full_name":""}`, true},
			{"a full name, from empty to null", user, `{"full_name":null}`, true},
			{"a full name, null again", user, `{"full_name":null}`, false},
			{"a goal's description, to null", goal, `{"description":null}`, true},
			{"a goal's description, from null to empty", goal, `{"description":""}`, true},
			{"a goal's description, empty again", goal, `{"description":""}`, false},
		} {
			etag, _ := state(c.path)
			var headers []string
			if ifMatch {
				headers = []string{"If-Match", etag}
			}
			expect(t, c.what, ts.do(t, "PATCH", c.path, c.body, headers...), http.StatusOK)
			if etag2, _ := state(c.path); (etag2 != etag) != c.changes {
				t.Fatalf("%s (If-Match: %v): ETag %s, then %s; want a change: %v", c.what, ifMatch, etag, etag2, c.changes)
			}
		}
	}
	expect(t, "PATCH a missing user with {}", ts.do(t, "PATCH", "/api/users/01939f5e-0000-7000-8000-000000000001", `{}`), http.StatusNotFound)
	expect(t, "PATCH a missing goal with {}", ts.do(t, "PATCH", "/api/goals/01939f5e-0000-7000-8000-000000000001", `{}`), http.StatusNotFound)
}
