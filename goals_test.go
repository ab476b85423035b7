// goals_test.go: the goal resource, relations through show, cascade
// delete, the one-query embed and the upgrade from the version-1 schema.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// mustCreateGoal creates a goal for userID and returns its JSON object.
func (ts *testServer) mustCreateGoal(t *testing.T, userID, body string) map[string]any {
	t.Helper()
	r := ts.do(t, "POST", "/api/users/"+userID+"/goals?show=description", body)
	expect(t, "POST goal", r, http.StatusCreated)
	return r.json(t)["goal"].(map[string]any)
}

func TestCreateAndGetGoal(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	r := ts.do(t, "POST", "/api/users/"+uid+"/goals", `{"title":"Read","target_minutes":30,"user_id":"ignored","id":"ignored"}`)
	expect(t, "POST goal", r, http.StatusCreated)
	if got, want := keysInOrder(t, mustRaw(t, r.body, "goal")), []string{"id", "user_id", "title", "period", "target_minutes", "created_at", "modified_at"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("goal keys = %v, want %v", got, want)
	}
	g := r.json(t)["goal"].(map[string]any)
	if g["user_id"] != uid || g["period"] != "day" || g["target_minutes"] != 30.0 || g["title"] != "Read" {
		t.Fatalf("created goal %s", r.body)
	}
	if r.header.Get("Location") != "/api/goals/"+g["id"].(string) {
		t.Fatalf("Location = %q", r.header.Get("Location"))
	}
	r = ts.do(t, "GET", "/api/goals/"+g["id"].(string)+"?show=description", "")
	expect(t, "GET goal", r, http.StatusOK)
	if got := r.json(t)["goal"].(map[string]any); got["description"] != nil || len(got) != 8 {
		t.Fatalf("GET goal show=description: %s", r.body)
	}
}

func TestGoalFieldRules(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	cases := []struct {
		field, value string
		wantError    bool
	}{
		{"title", `""`, true},
		{"title", `"a"`, false},
		{"title", `"` + strings.Repeat("é", 200) + `"`, false},
		{"title", `"` + strings.Repeat("a", 201) + `"`, true},
		{"title", `null`, true},
		{"title", `7`, true},
		{"period", `"day"`, false},
		{"period", `"week"`, false},
		{"period", `"month"`, true},
		{"period", `"Day"`, true},
		{"period", `null`, true},
		{"target_minutes", `0`, true},
		{"target_minutes", `1`, false},
		{"target_minutes", `10080`, false},
		{"target_minutes", `10081`, true},
		{"target_minutes", `-5`, true},
		{"target_minutes", `1.5`, true},
		{"target_minutes", `"30"`, true},
		{"target_minutes", `null`, true},
		{"target_minutes", `1e30`, true},
		{"target_minutes", `99999999999`, true},
		// JSON Schema's integer, as the OpenAPI document says: a number
		// without a fractional part, however it is written.
		{"target_minutes", `30.0`, false},
		{"target_minutes", `3e1`, false},
		{"target_minutes", `3.5e1`, false},
		{"target_minutes", `30.25`, true},
		{"description", `"` + strings.Repeat("d", 2000) + `"`, false},
		{"description", `"` + strings.Repeat("d", 2001) + `"`, true},
		{"description", `null`, false},
		{"nickname", `"x"`, true},
	}
	for _, c := range cases {
		name := c.field + "=" + c.value
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			fields := map[string]string{"title": `"Read"`, "target_minutes": "30"}
			fields[c.field] = c.value
			var parts []string
			for k, v := range fields {
				parts = append(parts, fmt.Sprintf("%q:%s", k, v))
			}
			body := "{" + strings.Join(parts, ",") + "}"
			r := ts.do(t, "POST", "/api/users/"+uid+"/goals", body)
			if !c.wantError {
				expect(t, name, r, http.StatusCreated)
				return
			}
			expect(t, name, r, http.StatusBadRequest)
			if errs := errorsOf(t, r); errs[c.field] == nil || len(errs) != 1 {
				t.Fatalf("errors = %v, want exactly %q", errs, c.field)
			}
		})
	}
	r := ts.do(t, "POST", "/api/users/"+uid+"/goals", `{}`)
	expect(t, "empty goal", r, http.StatusBadRequest)
	if errs := errorsOf(t, r); errs["title"] == nil || errs["target_minutes"] == nil {
		t.Fatalf("want title and target_minutes required: %v", errs)
	}
}

func TestUpdateAndDeleteGoal(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	other := ts.mustCreateUser(t, "max", "")["id"].(string)
	g := ts.mustCreateGoal(t, uid, `{"title":"Read","target_minutes":30,"description":"books"}`)
	gid := g["id"].(string)

	r := ts.do(t, "PUT", "/api/goals/"+gid+"?show=description", `{"period":"week","user_id":"`+other+`"}`)
	expect(t, "PUT goal", r, http.StatusOK)
	got := r.json(t)["goal"].(map[string]any)
	if got["period"] != "week" || got["title"] != "Read" || got["description"] != "books" || got["user_id"] != uid {
		t.Fatalf("after PUT (user_id must be read-only): %s", r.body)
	}
	r = ts.do(t, "PATCH", "/api/goals/"+gid+"?show=description", `{"description":null,"target_minutes":10080}`)
	expect(t, "PATCH goal", r, http.StatusOK)
	if got := r.json(t)["goal"].(map[string]any); got["description"] != nil || got["target_minutes"] != 10080.0 {
		t.Fatalf("after PATCH: %s", r.body)
	}
	expect(t, "PATCH invalid", ts.do(t, "PATCH", "/api/goals/"+gid, `{"target_minutes":0}`), http.StatusBadRequest)
	expect(t, "DELETE goal", ts.do(t, "DELETE", "/api/goals/"+gid, ""), http.StatusNoContent)
	missing := "01939f5e-0000-7000-8000-000000000000"
	for _, c := range []struct{ method, path, body, want string }{
		{"GET", "/api/goals/" + gid, "", "goal not found"},
		{"DELETE", "/api/goals/" + gid, "", "goal not found"},
		{"PUT", "/api/goals/" + gid, `{"title":"x"}`, "goal not found"},
		{"PATCH", "/api/goals/bad", `{"title":"x"}`, "goal not found"},
		{"POST", "/api/users/" + missing + "/goals", `{"title":"x","target_minutes":5}`, "user not found"},
		{"POST", "/api/users/bad/goals", `{"title":"x","target_minutes":5}`, "user not found"},
		{"GET", "/api/users/" + missing + "/goals", "", "user not found"},
	} {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.method+" "+c.path, r, http.StatusNotFound)
		if r.json(t)["error"] != c.want {
			t.Fatalf("%s %s: %s, want %q", c.method, c.path, r.body, c.want)
		}
	}
}

func TestDeletingUserDeletesGoals(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	keep := ts.mustCreateUser(t, "max", "")["id"].(string)
	g1 := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5}`)["id"].(string)
	ts.mustCreateGoal(t, uid, `{"title":"b","target_minutes":5}`)
	kept := ts.mustCreateGoal(t, keep, `{"title":"c","target_minutes":5}`)["id"].(string)
	expect(t, "DELETE user", ts.do(t, "DELETE", "/api/users/"+uid, ""), http.StatusNoContent)
	expect(t, "GET cascaded goal", ts.do(t, "GET", "/api/goals/"+g1, ""), http.StatusNotFound)
	l := ts.do(t, "GET", "/api/goals", "").list(t)
	if len(l) != 1 || l[0]["id"] != kept {
		t.Fatalf("goals after cascade = %v, want only %s", l, kept)
	}
	var n int
	if ts.sqlGet(t, &n, "SELECT count(*) FROM goals WHERE user_id = ?", uid); n != 0 {
		t.Fatalf("%d orphan goals", n)
	}
}

func TestListGoalsPagingAndFilter(t *testing.T) {
	ts := newTestServer(t)
	a := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	b := ts.mustCreateUser(t, "max", "")["id"].(string)
	var want, wantA []string
	for i := 0; i < 45; i++ {
		owner := a
		if i%3 == 0 {
			owner = b
		}
		id := ts.mustCreateGoal(t, owner, fmt.Sprintf(`{"title":"g%d","target_minutes":%d}`, i, i+1))["id"].(string)
		want = append(want, id)
		if owner == a {
			wantA = append(wantA, id)
		}
	}
	collect := func(path string) []string {
		var ids []string
		for next := path; next != ""; {
			r := ts.do(t, "GET", next, "")
			expect(t, next, r, http.StatusOK)
			for _, g := range r.list(t) {
				ids = append(ids, g["id"].(string))
			}
			next = nextLink(t, r.header.Get("Link"))
		}
		return ids
	}
	if got := collect("/api/goals?limit=7"); !reflect.DeepEqual(got, want) {
		t.Fatalf("all goals paged: %d, want %d in order", len(got), len(want))
	}
	if got := collect("/api/goals?limit=4&user_id=" + a); !reflect.DeepEqual(got, wantA) {
		t.Fatalf("user_id filter paged: %d, want %d", len(got), len(wantA))
	}
	if got := collect("/api/users/" + a + "/goals?limit=5"); !reflect.DeepEqual(got, wantA) {
		t.Fatalf("user's goals paged: %d, want %d", len(got), len(wantA))
	}
	r := ts.do(t, "GET", "/api/goals?user_id=01939f5e-0000-7000-8000-000000000000", "")
	expect(t, "unknown user_id", r, http.StatusOK)
	if string(r.body) != "[]\n" {
		t.Fatalf("unknown user_id: %s, want []", r.body)
	}
	expect(t, "bad user_id", ts.do(t, "GET", "/api/goals?user_id=nope", ""), http.StatusBadRequest)
	expect(t, "bad limit", ts.do(t, "GET", "/api/goals?limit=0", ""), http.StatusBadRequest)
}

func TestShowGoalsOnUsers(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	empty := ts.mustCreateUser(t, "max", "")["id"].(string)
	g1 := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5,"description":"d1"}`)["id"].(string)
	g2 := ts.mustCreateGoal(t, uid, `{"title":"b","target_minutes":6}`)["id"].(string)

	r := ts.do(t, "GET", "/api/users/"+uid+"?show=goals", "")
	expect(t, "show=goals", r, http.StatusOK)
	goals := r.json(t)["user"].(map[string]any)["goals"].([]any)
	if len(goals) != 2 || goals[0].(map[string]any)["id"] != g1 || goals[1].(map[string]any)["id"] != g2 {
		t.Fatalf("embedded goals: %s", r.body)
	}
	if _, ok := goals[0].(map[string]any)["description"]; ok {
		t.Fatalf("description shown without goals.description: %s", r.body)
	}
	r = ts.do(t, "GET", "/api/users/"+uid+"?show=goals.description", "")
	expect(t, "show=goals.description", r, http.StatusOK)
	goals = r.json(t)["user"].(map[string]any)["goals"].([]any)
	if goals[0].(map[string]any)["description"] != "d1" || goals[1].(map[string]any)["description"] != nil {
		t.Fatalf("goals.description: %s", r.body)
	}
	r = ts.do(t, "GET", "/api/users/"+empty+"?show=goals", "")
	if !strings.Contains(string(r.body), `"goals":[]`) {
		t.Fatalf("a user without goals must embed []: %s", r.body)
	}
	r = ts.do(t, "GET", "/api/users?show=goals,email", "")
	expect(t, "list show=goals", r, http.StatusOK)
	l := r.list(t)
	if len(l[0]["goals"].([]any)) != 2 || len(l[1]["goals"].([]any)) != 0 || l[0]["email"] != nil {
		t.Fatalf("list embed: %s", r.body)
	}
	if _, ok := l[0]["email"]; !ok {
		t.Fatalf("list lost email: %s", r.body)
	}
	r = ts.do(t, "POST", "/api/users?show=goals", `{"username":"new1","password":"12345678"}`)
	expect(t, "POST show=goals", r, http.StatusCreated)
	if !strings.Contains(string(r.body), `"goals":[]`) {
		t.Fatalf("POST with show=goals: %s", r.body)
	}
}

func TestShowUserOnGoals(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", `,"email":"z@example.com"`)["id"].(string)
	gid := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5}`)["id"].(string)
	r := ts.do(t, "GET", "/api/goals/"+gid+"?show=user", "")
	expect(t, "show=user", r, http.StatusOK)
	owner := r.json(t)["goal"].(map[string]any)["user"].(map[string]any)
	if owner["id"] != uid || owner["username"] != "zoe" || owner["email"] != nil || len(owner) != 4 {
		t.Fatalf("embedded user: %s", r.body)
	}
	r = ts.do(t, "GET", "/api/goals?show=user.email", "")
	expect(t, "list show=user.email", r, http.StatusOK)
	if owner := r.list(t)[0]["user"].(map[string]any); owner["email"] != "z@example.com" {
		t.Fatalf("user.email: %s", r.body)
	}
	for _, bad := range []string{"user.password", "goals", "user.nickname", "password", "user.goals"} {
		r := ts.do(t, "GET", "/api/goals/"+gid+"?show="+bad, "")
		expect(t, "show="+bad, r, http.StatusBadRequest)
		if msg, _ := errorsOf(t, r)["show"].(string); !strings.Contains(msg, bad) {
			t.Fatalf("show=%s: %s", bad, r.body)
		}
	}
}

func TestListEmbedIsOneQuery(t *testing.T) {
	var reads atomic.Int64
	ts := newTestServerAt(t, testConfig(), testDB(t), quietLogger(), storeOptions{onQuery: func() { reads.Add(1) }})
	for i := 0; i < 30; i++ {
		uid := ts.mustCreateUser(t, fmt.Sprintf("user%02d", i), "")["id"].(string)
		ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5}`)
		ts.mustCreateGoal(t, uid, `{"title":"b","target_minutes":5}`)
	}
	count := func(path string) int64 {
		before := reads.Load()
		r := ts.do(t, "GET", path, "")
		expect(t, path, r, http.StatusOK)
		return reads.Load() - before
	}
	if n := count("/api/users?limit=30"); n != 1 {
		t.Fatalf("list without embed ran %d queries, want 1", n)
	}
	if n := count("/api/users?limit=30&show=goals"); n != 2 {
		t.Fatalf("list of 30 users with show=goals ran %d queries, want 2 (page + goals)", n)
	}
	if n := count("/api/goals?limit=60&show=user"); n != 2 {
		t.Fatalf("list of 60 goals with show=user ran %d queries, want 2 (page + owners)", n)
	}
}

func TestAnAnswerReadInTwoStatementsShowsOneState(t *testing.T) {
	// Between the first and the second statement of each answer below, the
	// owner is deleted (by the hook every read statement calls, so it lands
	// exactly there). The answer must be the state before the delete,
	// whole: never a goal without the user it asked for, nor a user
	// without the goal it had.
	var reads atomic.Int64
	var between atomic.Pointer[func()]
	hook := func() {
		if reads.Add(1) == 2 {
			if f := between.Swap(nil); f != nil {
				(*f)()
			}
		}
	}
	ts := newTestServerAt(t, testConfig(), testDB(t), quietLogger(), storeOptions{onQuery: hook})
	cases := []struct {
		path  func(uid, gid, name string) string
		whole func(body map[string]any) bool
	}{
		{func(_, gid, _ string) string { return "/api/goals/" + gid + "?show=user" }, func(b map[string]any) bool {
			return b["goal"].(map[string]any)["user"] != nil
		}},
		{func(uid, _, _ string) string { return "/api/goals?user_id=" + uid + "&show=user" }, func(b map[string]any) bool {
			items := b["items"].([]any)
			return len(items) == 1 && items[0].(map[string]any)["user"] != nil
		}},
		{func(uid, _, _ string) string { return "/api/users/" + uid + "?show=goals" }, func(b map[string]any) bool {
			return len(b["user"].(map[string]any)["goals"].([]any)) == 1
		}},
		{func(_, _, name string) string { return "/api/users/by-username/" + name + "?show=goals" }, func(b map[string]any) bool {
			return len(b["user"].(map[string]any)["goals"].([]any)) == 1
		}},
		{func(_, _, name string) string { return "/api/users?username=" + name + "&show=goals" }, func(b map[string]any) bool {
			items := b["items"].([]any)
			return len(items) == 1 && len(items[0].(map[string]any)["goals"].([]any)) == 1
		}},
		{func(uid, _, _ string) string { return "/api/users/" + uid + "/goals" }, func(b map[string]any) bool {
			return len(b["items"].([]any)) == 1
		}},
	}
	for i, c := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			name := fmt.Sprintf("owner%02d", i)
			uid := ts.mustCreateUser(t, name, "")["id"].(string)
			gid := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5}`)["id"].(string)
			path := c.path(uid, gid, name)
			deleted := false
			del := func() {
				if err := ts.store.DeleteUser(context.Background(), uid, nil); err != nil {
					t.Errorf("delete the owner: %v", err)
				}
				deleted = true
			}
			reads.Store(0)
			between.Store(&del)
			r := ts.do(t, "GET", path, "")
			if !deleted {
				t.Fatalf("%s ran %d statements: the owner was not deleted between two", path, reads.Load())
			}
			expect(t, path, r, http.StatusOK)
			var body any
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatal(err)
			}
			if list, ok := body.([]any); ok {
				body = map[string]any{"items": list}
			}
			if !c.whole(body.(map[string]any)) {
				t.Fatalf("%s, its owner deleted between its two statements: %s", path, r.body)
			}
			expect(t, "the owner, after", ts.do(t, "GET", "/api/users/"+uid, ""), http.StatusNotFound)
		})
	}
}

// openAtVersion creates a SQLite database at path with the schema steps up
// to version, as an older usersvc left it, and returns it open for rows to
// be put in.
func openAtVersion(t *testing.T, path string, version int) *sqlx.DB {
	t.Helper()
	eng, err := openSQLite(context.Background(), path, storeOptions{statementTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrateTo(context.Background(), eng, version, nil); err != nil {
		t.Fatal(err)
	}
	eng.close()
	db, err := sqlx.Open("sqlite", dsn(path, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestUpgradeFromVersion1Schema(t *testing.T) {
	onlySQLite(t, "a file an older usersvc left")
	path := filepath.Join(t.TempDir(), "v1.db")
	db := openAtVersion(t, path, 1)
	_, err := db.Exec(`INSERT INTO users (id, username, email, password_hash, created_at, modified_at)
		VALUES ('01939f5e-0000-7000-8000-000000000001', 'Old', 'ÜBER@example.com', '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')`)
	if err != nil {
		t.Fatal(err)
	}
	var tables int
	db.Get(&tables, "SELECT count(*) FROM sqlite_master WHERE name = 'goals'")
	db.Close()
	if tables != 0 {
		t.Fatal("the version-1 database already has goals")
	}

	ts := newTestServerAt(t, testConfig(), path, quietLogger(), storeOptions{})
	var version int
	if ts.sqlGet(t, &version, "PRAGMA user_version"); version != schemaVersion() || version < 3 {
		t.Fatalf("user_version = %d, want %d", version, schemaVersion())
	}
	r := ts.do(t, "GET", "/api/users/by-username/old?show=goals", "")
	expect(t, "old user after upgrade", r, http.StatusOK)
	if !strings.Contains(string(r.body), `"goals":[]`) {
		t.Fatalf("old user: %s", r.body)
	}
	ts.mustCreateGoal(t, "01939f5e-0000-7000-8000-000000000001", `{"title":"new","target_minutes":5}`)
	// The old row got its fold keys: its email, in another case, is taken.
	r = ts.do(t, "POST", "/api/users", `{"username":"new","password":"correct horse","email":"über@EXAMPLE.com"}`)
	expect(t, "the old email in another case", r, http.StatusConflict)
}

func TestUpgradeRefusesEmailsThatNowCollide(t *testing.T) {
	onlySQLite(t, "a file an older usersvc left")
	path := filepath.Join(t.TempDir(), "v2.db")
	db := openAtVersion(t, path, 2)
	// lower() folded ASCII only, so version 2 took these as two addresses.
	for i, email := range []string{"ü@example.com", "Ü@example.com"} {
		_, err := db.Exec(`INSERT INTO users (id, username, email, password_hash, created_at, modified_at)
			VALUES (?, ?, ?, 'x', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')`,
			fmt.Sprintf("01939f5e-0000-7000-8000-00000000000%d", i), fmt.Sprintf("user%d", i), email)
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	_, err := openStore(context.Background(), path, storeOptions{})
	if err == nil || !strings.Contains(err.Error(), "Ü@example.com") || !strings.Contains(err.Error(), "apart from case") {
		t.Fatalf("upgrade with colliding emails: err = %v, want a refusal naming the address", err)
	}
	db2, _ := sqlx.Open("sqlite", dsn(path, nil, nil))
	defer db2.Close()
	var version int
	if db2.Get(&version, "PRAGMA user_version"); version != 2 {
		t.Fatalf("a refused upgrade left version %d, want 2 (nothing applied)", version)
	}
}

func TestAnUpgradeThatFailsForAnotherReasonDoesNotBlameTheEmails(t *testing.T) {
	// Found in review: any failure of step 3's update (a stop signal, a
	// full disk) was reported as two users' emails that differ only in
	// case, and the operator was told to edit them with an older usersvc.
	onlySQLite(t, "a file an older usersvc left")
	path := filepath.Join(t.TempDir(), "v2.db")
	db := openAtVersion(t, path, 2)
	if _, err := db.Exec(`INSERT INTO users (id, username, email, password_hash, created_at, modified_at)
		VALUES ('01939f5e-0000-7000-8000-000000000001', 'zoe', 'zoe@example.com', 'x', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z');
		CREATE TRIGGER fail_updates BEFORE UPDATE ON users BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END;`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := openStore(context.Background(), path, storeOptions{})
	if err == nil || strings.Contains(err.Error(), "apart from case") || !strings.Contains(err.Error(), "the disk is on fire") {
		t.Fatalf("upgrade whose update fails: %v, want the cause, not a clash of emails", err)
	}
}

// insertUserKeyedAsBefore writes user i with email as a version before
// step 5 did: its email key with any dot ending the domain.
func insertUserKeyedAsBefore(t *testing.T, db *sqlx.DB, i int, email string) {
	t.Helper()
	_, err := db.Exec(db.Rebind(`INSERT INTO users (id, username, username_key, email, email_key, password_hash, version, created_at, modified_at)
		VALUES (?, ?, ?, ?, ?, 'x', 1, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')`),
		fmt.Sprintf("01939f5e-0000-7000-8000-00000000000%d", i), fmt.Sprintf("user%d", i), fmt.Sprintf("user%d", i), email, foldKey(email))
	if err != nil {
		t.Fatal(err)
	}
}

// Step 5: an address stored with a dot ending its domain gets the key
// without it, so the mailbox is taken; two users whose addresses are one
// mailbox but for that dot stop the upgrade, which names both.
func TestUpgradeRefoldsEmailsEndingInADot(t *testing.T) {
	onlySQLite(t, "a file an older usersvc left")
	atVersion4 := func(emails ...string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "v4.db")
		db := openAtVersion(t, path, 4)
		for i, email := range emails {
			insertUserKeyedAsBefore(t, db, i+1, email)
		}
		db.Close()
		return path
	}

	ts := newTestServerAt(t, testConfig(), atVersion4("solo@example.org."), errorLogger(t), storeOptions{})
	r := ts.do(t, "POST", "/api/users", `{"username":"second","password":"correct horse","email":"SOLO@example.org"}`)
	expect(t, "the mailbox of an address stored with a dot", r, http.StatusConflict)
	if got := ts.do(t, "GET", "/api/users/by-username/user1?show=email", "").json(t)["user"].(map[string]any)["email"]; got != "solo@example.org." {
		t.Fatalf("the upgrade changed the address to %v", got)
	}

	path := atVersion4("a@example.com", "A@example.com.")
	_, err := openStore(context.Background(), path, storeOptions{})
	if err == nil || !strings.Contains(err.Error(), "01939f5e-0000-7000-8000-000000000001") || !strings.Contains(err.Error(), `"A@example.com."`) {
		t.Fatalf("upgrade with one mailbox twice: err = %v, want a refusal naming both users", err)
	}
	db2, _ := sqlx.Open("sqlite", dsn(path, nil, nil))
	defer db2.Close()
	var version int
	if db2.Get(&version, "PRAGMA user_version"); version != 4 {
		t.Fatalf("a refused upgrade left version %d, want 4 (nothing applied)", version)
	}

	if _, err := openStore(context.Background(), atVersion4("b@example.com.", "B@example.com.."), storeOptions{}); err == nil || !strings.Contains(err.Error(), `"B@example.com.."`) || !strings.Contains(err.Error(), `"b@example.com."`) {
		t.Fatalf("upgrade with two dotted addresses of one mailbox: err = %v, want a refusal naming both", err)
	}
}

// A database at version 5 into which instances of a version before step 5
// went on writing email keys ending in a dot (a rolling upgrade on
// PostgreSQL) upgrades to 6: the keys are refolded before step 6's
// constraint, and two users of one mailbox are named, as step 5 does.
func TestUpgradeToVersion6RefoldsKeysWrittenAfterStep5(t *testing.T) {
	atVersion5 := func(emails ...string) string {
		t.Helper()
		db := testDB(t)
		eng, err := openEngine(context.Background(), db, storeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.close()
		if err := migrateTo(context.Background(), eng, 5, nil); err != nil {
			t.Fatal(err)
		}
		for i, email := range emails {
			insertUserKeyedAsBefore(t, eng.adminDB(), i+1, email)
		}
		return db
	}

	ts := newTestServerAt(t, testConfig(), atVersion5("late@example.org."), errorLogger(t), storeOptions{})
	expect(t, "the mailbox of a key an older instance wrote", ts.do(t, "POST", "/api/users", `{"username":"second","password":"correct horse","email":"LATE@example.org"}`), http.StatusConflict)

	_, err := openStore(context.Background(), atVersion5("pair@example.org", "Pair@example.org."), storeOptions{})
	if err == nil || !strings.Contains(err.Error(), `"Pair@example.org."`) || !strings.Contains(err.Error(), "one mailbox") {
		t.Fatalf("upgrade to 6 with one mailbox twice: err = %v, want a refusal naming both users", err)
	}
}

// During a rolling upgrade on PostgreSQL, an instance of the version
// before step 5 would still write an email key ending in a dot: the
// database refuses it (step 6).
func TestPostgresRefusesAnEmailKeyEndingInADot(t *testing.T) {
	onlyPostgres(t, "a constraint several instances share")
	ts := newTestServer(t)
	_, err := rawDB(ts.store).Exec(`INSERT INTO users (id, username, username_key, email, email_key, password_hash, version, created_at, modified_at)
		VALUES ('01939f5e-0000-7000-8000-000000000001', 'old', 'old', 'z@example.com.', 'z@example.com.', 'x', 1, '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')`)
	if err == nil || !strings.Contains(err.Error(), "users_email_key_no_final_dot") {
		t.Fatalf("a key ending in a dot, as an older instance writes it: %v", err)
	}
	ts.mustCreateUser(t, "new", `,"email":"z@example.com."`) // this version writes the key without it
}

// target_minutes is read exactly as written: a fraction too small for a
// float64 to keep is still a fraction, an integer too large for one is
// still an integer (out of range), and an integer however written is one.
func TestTargetMinutesIsReadExactly(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	for value, want := range map[string]any{
		`10080.0000000000001`: "must be an integer",
		`29.999999999999999`:  "must be an integer",
		`1e-400`:              "must be an integer",
		`30.5`:                "must be an integer",
		`1e20`:                "out of range",
		`-1e400`:              "out of range",
		`2147483648`:          "out of range",
		`1E99999999999999999`: "out of range",
		`0e7`:                 "out of range",
		`-0.0`:                "out of range",
		`30`:                  30.0,
		`30.000`:              30.0,
		`3E+1`:                30.0,
		`3000e-2`:             30.0,
		`0.3e2`:               30.0,
		`10080`:               10080.0,
		`1008e1`:              10080.0,
	} {
		r := ts.do(t, "POST", "/api/users/"+uid+"/goals", `{"title":"Read","target_minutes":`+value+`}`)
		if minutes, ok := want.(float64); ok {
			expect(t, "target_minutes "+value, r, http.StatusCreated)
			if got := r.json(t)["goal"].(map[string]any)["target_minutes"]; got != minutes {
				t.Fatalf("target_minutes %s is stored as %v, want %v", value, got, minutes)
			}
			continue
		}
		expect(t, "target_minutes "+value, r, http.StatusBadRequest)
		msg, _ := errorsOf(t, r)["target_minutes"].(string)
		if want == "out of range" && !strings.Contains(msg, "between 1 and 10080") || want != "out of range" && msg != want {
			t.Fatalf("target_minutes %s: %q, want %s", value, msg, want)
		}
	}
}

func TestABadQueryOnTheGoalsOfAMissingUserIsA400(t *testing.T) {
	ts := newTestServer(t)
	missing, _ := newID()
	for _, q := range []string{"?bogus=1", "?limit=0", "?show=password"} {
		expect(t, "goals of a missing user"+q, ts.do(t, "GET", "/api/users/"+missing+"/goals"+q, ""), http.StatusBadRequest)
	}
	expect(t, "goals of a missing user", ts.do(t, "GET", "/api/users/"+missing+"/goals", ""), http.StatusNotFound)
}

func TestAReadAfterItsReadTransactionEndedIsRefused(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	ctx, end, err := ts.store.oneRead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.store.GetUser(ctx, id, userExtras{}); err != nil {
		t.Fatalf("a read in the transaction: %v", err)
	}
	end()
	end() // a second end is a no-op
	if u, err := ts.store.GetUser(ctx, id, userExtras{}); err == nil {
		t.Fatalf("a read after the transaction ended answered %+v", u)
	}
	// Its connection went back to the pool, whole: reads go on.
	if _, err := ts.store.GetUser(context.Background(), id, userExtras{}); err != nil {
		t.Fatal(err)
	}
}
