// handlers_test.go: the users API through real HTTP on a temp-file SQLite
// database: fields, validation, errors, paging, upsert and concurrency.
package main

import (
	"encoding/json"

	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCreateUserShowsDefaultFieldsInOrder(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "POST", "/api/users", `{"username":"Zoe","password":"correct horse","email":"zoe@example.com","full_name":"Zoe Z"}`)
	expect(t, "POST /api/users", r, http.StatusCreated)
	u := r.json(t)["user"].(map[string]any)
	if got, want := keysInOrder(t, mustRaw(t, r.body, "user")), []string{"id", "username", "created_at", "modified_at"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("user keys = %v, want %v", got, want)
	}
	id, _ := u["id"].(string)
	if _, ok := parseID(id); !ok || id[14] != '7' {
		t.Fatalf("id %q is not a lowercase canonical UUIDv7", id)
	}
	if loc := r.header.Get("Location"); loc != "/api/users/"+id {
		t.Fatalf("Location = %q, want /api/users/%s", loc, id)
	}
	if u["username"] != "Zoe" {
		t.Fatalf("username = %v, want Zoe as written", u["username"])
	}
	created, modified := parseTime(t, u["created_at"]), parseTime(t, u["modified_at"])
	if !created.Equal(modified) || time.Since(created) > time.Minute {
		t.Fatalf("created_at %v, modified_at %v: want equal and recent", created, modified)
	}

	r = ts.do(t, "GET", "/api/users/"+id+"?show=email,full_name", "")
	expect(t, "GET user show=email,full_name", r, http.StatusOK)
	if got, want := keysInOrder(t, mustRaw(t, r.body, "user")), []string{"id", "username", "email", "full_name", "created_at", "modified_at"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("user keys with show = %v, want %v", got, want)
	}
	u = r.json(t)["user"].(map[string]any)
	if u["email"] != "zoe@example.com" || u["full_name"] != "Zoe Z" {
		t.Fatalf("extras = %v %v", u["email"], u["full_name"])
	}
	// show may repeat, and naming a default field changes nothing.
	r = ts.do(t, "GET", "/api/users/"+id+"?show=email&show=full_name,username", "")
	expect(t, "GET user repeated show", r, http.StatusOK)
	if len(r.json(t)["user"].(map[string]any)) != 6 {
		t.Fatalf("repeated show: got %s", r.body)
	}
	if strings.Contains(string(r.body), "password") || strings.Contains(string(r.body), "argon2") {
		t.Fatalf("password leaked: %s", r.body)
	}
}

// mustRaw returns the raw JSON of one key of the object in b.
func mustRaw(t *testing.T, b []byte, key string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not an object: %s", b)
	}
	return m[key]
}

func TestShowRejectsHiddenAndUnknownNames(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	for _, show := range []string{"password", "nickname", "email,password", "goals.password", "goals.nope", "user", "email.x"} {
		r := ts.do(t, "GET", "/api/users/"+id+"?show="+url.QueryEscape(show), "")
		expect(t, "show="+show, r, http.StatusBadRequest)
		msg, _ := errorsOf(t, r)["show"].(string)
		bad := show[strings.LastIndex(show, ",")+1:]
		if !strings.Contains(msg, bad) {
			t.Fatalf("show=%s: message %q does not name %q", show, msg, bad)
		}
	}
	r := ts.do(t, "GET", "/api/users?show=password", "")
	expect(t, "list show=password", r, http.StatusBadRequest)
}

func TestUserFieldRules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	email := func(n int) string { return strings.Repeat("e", n-len("@example.com")) + "@example.com" }
	cases := []struct {
		name      string
		field     string
		value     string // JSON value
		wantError bool
	}{
		{"username 2 chars", "username", `"ab"`, true},
		{"username 3 chars", "username", `"abc"`, false},
		{"username 32 chars", "username", `"` + long(32) + `"`, false},
		{"username 33 chars", "username", `"` + long(33) + `"`, true},
		{"username 3 runes counts characters", "username", `"ééé"`, true},
		{"username starts with _", "username", `"_abc"`, true},
		{"username starts with digit", "username", `"9abc"`, false},
		{"username with . _ -", "username", `"a.b_c-d"`, false},
		{"username with space", "username", `"ab c"`, true},
		{"username empty", "username", `""`, true},
		{"username null", "username", `null`, true},
		{"email 254 chars", "email", `"` + email(254) + `"`, false},
		{"email 255 chars", "email", `"` + email(255) + `"`, true},
		{"email not an address", "email", `"not-an-email"`, true},
		{"email empty", "email", `""`, true},
		{"email null", "email", `null`, false},
		{"full_name 200 chars", "full_name", `"` + strings.Repeat("é", 200) + `"`, false},
		{"full_name 201 chars", "full_name", `"` + long(201) + `"`, true},
		{"full_name control char", "full_name", `"a\u0007b"`, true},
		{"full_name DEL control char", "full_name", `"a\u007fb"`, true},
		{"full_name empty", "full_name", `""`, false},
		{"full_name null", "full_name", `null`, false},
		{"password 7 chars", "password", `"1234567"`, true},
		{"password 8 chars", "password", `"12345678"`, false},
		{"password 256 chars", "password", `"` + long(256) + `"`, false},
		{"password 257 chars", "password", `"` + long(257) + `"`, true},
		{"password null", "password", `null`, true},
	}
	ts := newTestServer(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fields := map[string]string{
				"username": fmt.Sprintf(`"user%d"`, i),
				"password": `"correct horse"`,
			}
			fields[c.field] = c.value
			var parts []string
			for k, v := range fields {
				parts = append(parts, fmt.Sprintf("%q:%s", k, v))
			}
			r := ts.do(t, "POST", "/api/users", "{"+strings.Join(parts, ",")+"}")
			if !c.wantError {
				expect(t, c.name, r, http.StatusCreated)
				return
			}
			expect(t, c.name, r, http.StatusBadRequest)
			errs := errorsOf(t, r)
			if _, ok := errs[c.field]; !ok || len(errs) != 1 {
				t.Fatalf("errors = %v, want exactly %q", errs, c.field)
			}
		})
	}
}

func TestValidationReportsEveryFieldAtOnce(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "POST", "/api/users", `{"username":"a","email":"nope","full_name":"x\u0001","password":"short"}`)
	expect(t, "POST invalid user", r, http.StatusBadRequest)
	errs := errorsOf(t, r)
	for _, f := range []string{"username", "email", "full_name", "password"} {
		if _, ok := errs[f]; !ok {
			t.Errorf("errors lack %q: %v", f, errs)
		}
	}
	if got := errs["username"]; got != "the length must be between 3 and 32" {
		t.Errorf("username message = %q", got)
	}
	r = ts.do(t, "POST", "/api/users", `{}`)
	expect(t, "POST {}", r, http.StatusBadRequest)
	if errs := errorsOf(t, r); errs["username"] == nil || errs["password"] == nil {
		t.Fatalf("empty object: errors = %v, want username and password", errs)
	}
}

func TestBodyErrors(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	big := `{"full_name":"` + strings.Repeat("a", maxBodyBytes) + `"}`
	cases := []struct {
		name, method, path, contentType, body string
		want                                  int
		wantField                             string
	}{
		{"malformed JSON", "POST", "/api/users", "application/json", `{"username":`, 400, ""},
		{"syntax error", "POST", "/api/users", "application/json", `{"username" "x"}`, 400, ""},
		{"trailing data", "POST", "/api/users", "application/json", `{"username":"abc","password":"12345678"} {}`, 400, ""},
		{"trailing garbage", "POST", "/api/users", "application/json", `{"username":"abc","password":"12345678"}x`, 400, ""},
		{"empty body", "POST", "/api/users", "application/json", ``, 400, ""},
		{"array body", "POST", "/api/users", "application/json", `[]`, 400, ""},
		{"null body", "POST", "/api/users", "application/json", `null`, 400, ""},
		{"string body", "POST", "/api/users", "application/json", `"x"`, 400, ""},
		{"wrong type username", "POST", "/api/users", "application/json", `{"username":5,"password":"12345678"}`, 400, "username"},
		{"wrong type email", "PATCH", "/api/users/" + id, "application/json", `{"email":["a"]}`, 400, "email"},
		{"unknown field", "POST", "/api/users", "application/json", `{"username":"abc","password":"12345678","nickname":"x"}`, 400, "nickname"},
		{"unknown field on update", "PUT", "/api/users/" + id, "application/json", `{"nickname":"x"}`, 400, "nickname"},
		{"body over 1 MiB", "PATCH", "/api/users/" + id, "application/json", big, 413, ""},
		{"text/plain", "POST", "/api/users", "text/plain", `{"username":"abc","password":"12345678"}`, 415, ""},
		{"form", "POST", "/api/users", "application/x-www-form-urlencoded", `username=abc`, 415, ""},
		{"no content type", "POST", "/api/users", "", `{"username":"abc","password":"12345678"}`, 415, ""},
		{"json with charset", "POST", "/api/users", "application/json; charset=utf-8", `{"username":"abc","password":"12345678"}`, 201, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, ts.URL+c.path, strings.NewReader(c.body))
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			r := ts.send(t, req)
			expect(t, c.name, r, c.want)
			if c.want >= 400 && c.wantField == "" {
				if msg, _ := r.json(t)["error"].(string); msg == "" {
					t.Fatalf("no error message: %s", r.body)
				}
			}
			if c.wantField != "" {
				if _, ok := errorsOf(t, r)[c.wantField]; !ok {
					t.Fatalf("errors lack %q: %s", c.wantField, r.body)
				}
			}
		})
	}
}

func TestUpdateUser(t *testing.T) {
	ts := newTestServer(t)
	u := ts.mustCreateUser(t, "zoe", `,"email":"zoe@example.com","full_name":"Zoe"`)
	id := u["id"].(string)
	time.Sleep(30 * time.Millisecond) // the contract: an update 30 ms later moves modified_at

	// Read-only fields are ignored; absent fields are kept.
	r := ts.do(t, "PUT", "/api/users/"+id+"?show=email,full_name", `{"id":"x","created_at":"1999-01-01T00:00:00.000Z","modified_at":"y","username":"zoe2"}`)
	expect(t, "PUT rename", r, http.StatusOK)
	got := r.json(t)["user"].(map[string]any)
	if got["id"] != id || got["username"] != "zoe2" || got["email"] != "zoe@example.com" || got["full_name"] != "Zoe" || got["created_at"] != u["created_at"] {
		t.Fatalf("after PUT: %v (before %v)", got, u)
	}
	if !parseTime(t, got["modified_at"]).After(parseTime(t, u["modified_at"])) {
		t.Fatalf("modified_at %v did not move past %v", got["modified_at"], u["modified_at"])
	}

	// null clears an optional field; PATCH behaves as PUT.
	r = ts.do(t, "PATCH", "/api/users/"+id+"?show=email,full_name", `{"email":null,"full_name":null}`)
	expect(t, "PATCH clear", r, http.StatusOK)
	got = r.json(t)["user"].(map[string]any)
	if got["email"] != nil || got["full_name"] != nil || got["username"] != "zoe2" {
		t.Fatalf("after clearing: %s", r.body)
	}
	if _, ok := got["email"]; !ok {
		t.Fatalf("a shown empty optional field must be null, not absent: %s", r.body)
	}

	// A changed password is the one that authenticates.
	expect(t, "PATCH password", ts.do(t, "PATCH", "/api/users/"+id, `{"password":"new password"}`), http.StatusOK)
	expect(t, "old password", ts.do(t, "POST", "/api/authenticate", `{"username":"zoe2","password":"correct horse"}`), http.StatusUnauthorized)
	expect(t, "new password", ts.do(t, "POST", "/api/authenticate", `{"username":"zoe2","password":"new password"}`), http.StatusOK)

	// Invalid updates change nothing.
	expect(t, "PATCH invalid", ts.do(t, "PATCH", "/api/users/"+id, `{"username":"x","full_name":"ok"}`), http.StatusBadRequest)
	r = ts.do(t, "GET", "/api/users/"+id+"?show=full_name", "")
	if fn := r.json(t)["user"].(map[string]any)["full_name"]; fn != nil {
		t.Fatalf("a rejected PATCH changed full_name to %v", fn)
	}
}

func TestMissingUserIs404(t *testing.T) {
	ts := newTestServer(t)
	missing := "01939f5e-0000-7000-8000-000000000000"
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/users/" + missing, ""},
		{"PUT", "/api/users/" + missing, `{"full_name":"x"}`},
		{"PATCH", "/api/users/" + missing, `{"full_name":"x"}`},
		{"DELETE", "/api/users/" + missing, ""},
		{"GET", "/api/users/not-a-uuid", ""},
		{"GET", "/api/users/" + strings.ToUpper(missing), ""},
		{"PATCH", "/api/users/123", `{"full_name":"x"}`},
		{"DELETE", "/api/users/zzz", ""},
		{"GET", "/api/users/by-username/nobody", ""},
	} {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.method+" "+c.path, r, http.StatusNotFound)
		if msg := r.json(t)["error"]; msg != "user not found" {
			t.Fatalf("%s %s: error = %v, want user not found", c.method, c.path, msg)
		}
	}
	// A PUT on a missing id never creates it.
	if l := ts.do(t, "GET", "/api/users", "").list(t); len(l) != 0 {
		t.Fatalf("a 404 PUT created a user: %v", l)
	}
}

func TestDeleteUser(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	r := ts.do(t, "DELETE", "/api/users/"+id, "")
	expect(t, "DELETE", r, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Fatalf("204 with a body: %q", r.body)
	}
	expect(t, "GET deleted", ts.do(t, "GET", "/api/users/"+id, ""), http.StatusNotFound)
	expect(t, "DELETE again", ts.do(t, "DELETE", "/api/users/"+id, ""), http.StatusNotFound)
	// The name is free again.
	ts.mustCreateUser(t, "ZOE", "")
}

func TestUniqueWithoutRegardToCase(t *testing.T) {
	ts := newTestServer(t)
	ts.mustCreateUser(t, "Zoe", `,"email":"Zoe@Example.com"`)
	other := ts.mustCreateUser(t, "max", `,"email":"max@example.com"`)["id"].(string)
	cases := []struct {
		name, method, path, body string
		fields                   []string
	}{
		{"same username other case", "POST", "/api/users", `{"username":"zoe","password":"12345678"}`, []string{"username"}},
		{"same email other case", "POST", "/api/users", `{"username":"zed","password":"12345678","email":"zoe@EXAMPLE.com"}`, []string{"email"}},
		{"both taken", "POST", "/api/users", `{"username":"ZOE","password":"12345678","email":"zoe@example.com"}`, []string{"username", "email"}},
		{"rename onto a taken name", "PATCH", "/api/users/" + other, `{"username":"ZoE"}`, []string{"username"}},
		{"email onto a taken email", "PUT", "/api/users/" + other, `{"email":"ZOE@example.com"}`, []string{"email"}},
	}
	for _, c := range cases {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.name, r, http.StatusConflict)
		errs := errorsOf(t, r)
		for _, f := range c.fields {
			if errs[f] != "is already taken" {
				t.Fatalf("%s: errors = %v, want %s taken", c.name, errs, f)
			}
		}
		if len(errs) != len(c.fields) {
			t.Fatalf("%s: errors = %v, want only %v", c.name, errs, c.fields)
		}
	}
	// Two users may both have no email.
	ts.mustCreateUser(t, "noemail1", "")
	ts.mustCreateUser(t, "noemail2", `,"email":null`)
}

func TestListPagingOverHundredsOfUsers(t *testing.T) {
	ts := newTestServer(t)
	const n = 321
	want := make([]string, 0, n)
	for i := 0; i < n; i++ {
		want = append(want, ts.mustCreateUser(t, fmt.Sprintf("user%03d", i), "")["id"].(string))
	}
	var got []string
	next := "/api/users?limit=50&show=email"
	pages := 0
	for next != "" {
		r := ts.do(t, "GET", next, "")
		expect(t, "GET "+next, r, http.StatusOK)
		for _, u := range r.list(t) {
			got = append(got, u["id"].(string))
			if _, ok := u["email"]; !ok {
				t.Fatalf("the Link dropped show=email: %v", u)
			}
		}
		next = nextLink(t, r.header.Get("Link"))
		pages++
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("paging returned %d ids (%d pages), want the %d created in order", len(got), pages, n)
	}
	if pages != 7 {
		t.Fatalf("pages = %d, want 7 (6 full pages of 50 and one of 21)", pages)
	}
	// The default limit is 100, and a full last page has no next link.
	r := ts.do(t, "GET", "/api/users", "")
	if l := r.list(t); len(l) != 100 {
		t.Fatalf("default page has %d users, want 100", len(l))
	}
	r = ts.do(t, "GET", "/api/users?limit=21&after="+want[n-22], "")
	if len(r.list(t)) != 21 || r.header.Get("Link") != "" {
		t.Fatalf("exact last page: %d users, Link %q", len(r.list(t)), r.header.Get("Link"))
	}
}

// nextLink returns the path of a Link rel="next" header, or "".
func nextLink(t *testing.T, link string) string {
	t.Helper()
	if link == "" {
		return ""
	}
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start != 0 || end < 0 || !strings.HasSuffix(link, `; rel="next"`) {
		t.Fatalf("malformed Link header %q", link)
	}
	return link[1:end]
}

func TestListQueryErrors(t *testing.T) {
	ts := newTestServer(t)
	for _, q := range []string{"limit=0", "limit=-1", "limit=1.5", "limit=1e2", "limit=1001", "limit=abc", "limit=", "limit=+5", "limit=%201", "limit=99999999999999999999"} {
		r := ts.do(t, "GET", "/api/users?"+q, "")
		expect(t, q, r, http.StatusBadRequest)
		if errorsOf(t, r)["limit"] == nil {
			t.Fatalf("%s: no limit error: %s", q, r.body)
		}
	}
	for _, q := range []string{"after=x", "after=", "after=01939F5E-0000-7000-8000-000000000000"} {
		r := ts.do(t, "GET", "/api/users?"+q, "")
		expect(t, q, r, http.StatusBadRequest)
		if errorsOf(t, r)["after"] == nil {
			t.Fatalf("%s: no after error: %s", q, r.body)
		}
	}
	for _, q := range []string{"limit=1", "limit=1000", "limit=0100"} {
		expect(t, q, ts.do(t, "GET", "/api/users?"+q, ""), http.StatusOK)
	}
}

func TestListFilterByUsername(t *testing.T) {
	ts := newTestServer(t)
	zoe := ts.mustCreateUser(t, "Zoe", "")["id"].(string)
	ts.mustCreateUser(t, "Zoey", "")
	ts.mustCreateUser(t, "a_b", "")
	ts.mustCreateUser(t, "axb", "")
	for _, c := range []struct {
		query string
		want  int
	}{{"username=zoe", 1}, {"username=ZOE", 1}, {"username=zo", 0}, {"username=zo%25", 0}, {"username=a_b", 1}, {"username=", 0}} {
		r := ts.do(t, "GET", "/api/users?"+c.query, "")
		expect(t, c.query, r, http.StatusOK)
		if l := r.list(t); len(l) != c.want {
			t.Fatalf("%s: %d users, want %d: %s", c.query, len(l), c.want, r.body)
		}
	}
	if l := ts.do(t, "GET", "/api/users?username=zOe", "").list(t); l[0]["id"] != zoe {
		t.Fatalf("filter found %v, want %s", l, zoe)
	}
	if r := ts.do(t, "GET", "/api/users?username=nobody", ""); string(r.body) != "[]\n" {
		t.Fatalf("empty list body = %s, want []", r.body)
	}
}

func TestUserByUsername(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "PUT", "/api/users/by-username/zoe", `{"full_name":"Zoe"}`)
	expect(t, "PUT new without password", r, http.StatusBadRequest)
	if errorsOf(t, r)["password"] == nil {
		t.Fatalf("want a password error: %s", r.body)
	}
	r = ts.do(t, "PUT", "/api/users/by-username/zoe?show=full_name", `{"full_name":"Zoe","password":"correct horse"}`)
	expect(t, "PUT create", r, http.StatusCreated)
	u := r.json(t)["user"].(map[string]any)
	if r.header.Get("Location") != "/api/users/"+u["id"].(string) || u["username"] != "zoe" || u["full_name"] != "Zoe" {
		t.Fatalf("created %s, Location %q", r.body, r.header.Get("Location"))
	}
	r = ts.do(t, "PUT", "/api/users/by-username/ZOE?show=full_name", `{"full_name":"Zoe Two"}`)
	expect(t, "PUT update other case", r, http.StatusOK)
	if got := r.json(t)["user"].(map[string]any); got["id"] != u["id"] || got["full_name"] != "Zoe Two" || got["username"] != "zoe" {
		t.Fatalf("update gave %s", r.body)
	}
	r = ts.do(t, "GET", "/api/users/by-username/Zoe", "")
	expect(t, "GET by username", r, http.StatusOK)
	if r.json(t)["user"].(map[string]any)["id"] != u["id"] {
		t.Fatalf("GET by username gave %s", r.body)
	}
	expect(t, "PUT other name in body", ts.do(t, "PUT", "/api/users/by-username/zoe", `{"username":"max"}`), http.StatusBadRequest)
	expect(t, "PUT invalid path name", ts.do(t, "PUT", "/api/users/by-username/x", `{"password":"12345678"}`), http.StatusBadRequest)
	expect(t, "PUT unchanged is 200", ts.do(t, "PUT", "/api/users/by-username/zoe", `{}`), http.StatusOK)
}

func TestConcurrentUpsertCreatesOnce(t *testing.T) {
	ts := newTestServer(t)
	const n = 15 // 30 requests at once: within the hashing places (2 slots and a queue of 32)
	statuses := make(chan int, 2*n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			// With an email: the early check must not count the racer
			// another upsert has just created as "another user".
			statuses <- ts.do(t, "PUT", "/api/users/by-username/racer", `{"password":"correct horse","email":"racer@example.com"}`, "X-Forwarded-For", clientIP(2*i)).status
		}()
		go func() {
			defer wg.Done()
			statuses <- ts.do(t, "POST", "/api/users", `{"username":"Racer2","password":"correct horse"}`, "X-Forwarded-For", clientIP(2*i+1)).status
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] != 2 || count[200] != n-1 || count[409] != n-1 {
		t.Fatalf("statuses = %v, want two 201 (one each name), %d×200 (upserts), %d×409 (POSTs)", count, n-1, n-1)
	}
	if l := ts.do(t, "GET", "/api/users", "").list(t); len(l) != 2 {
		t.Fatalf("%d users exist, want 2", len(l))
	}
}

func TestConcurrentWritersNever5xx(t *testing.T) {
	ts := newTestServer(t)
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan string, workers*each*3)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := ts.do(t, "POST", "/api/users", fmt.Sprintf(`{"username":"w%d_%d","password":"correct horse"}`, w, i), "X-Forwarded-For", clientIP(w))
				if r.status != 201 {
					errs <- fmt.Sprintf("create: %d %s", r.status, r.body)
					continue
				}
				id := r.json(t)["user"].(map[string]any)["id"].(string)
				if r := ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"n"}`); r.status != 200 {
					errs <- fmt.Sprintf("patch: %d %s", r.status, r.body)
				}
				if r := ts.do(t, "GET", "/api/users?limit=10", ""); r.status != 200 {
					errs <- fmt.Sprintf("list: %d %s", r.status, r.body)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if l := ts.do(t, "GET", "/api/users?limit=1000", "").list(t); len(l) != workers*each {
		t.Fatalf("%d users, want %d", len(l), workers*each)
	}
}

func TestAuthenticate(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "Zoe", "")["id"].(string)
	r := ts.do(t, "POST", "/api/authenticate", `{"username":"zoe","password":"correct horse"}`)
	expect(t, "right password", r, http.StatusOK)
	if r.json(t)["user"].(map[string]any)["id"] != id {
		t.Fatalf("authenticate returned %s", r.body)
	}
	wrong := ts.do(t, "POST", "/api/authenticate", `{"username":"Zoe","password":"wrong horse"}`)
	unknown := ts.do(t, "POST", "/api/authenticate", `{"username":"nobody","password":"wrong horse"}`)
	expect(t, "wrong password", wrong, http.StatusUnauthorized)
	expect(t, "unknown user", unknown, http.StatusUnauthorized)
	if string(wrong.body) != string(unknown.body) || string(wrong.body) != `{"error":"invalid username or password"}`+"\n" {
		t.Fatalf("bodies differ: wrong %s, unknown %s", wrong.body, unknown.body)
	}
	for _, body := range []string{`{"username":"zoe"}`, `{"password":"x"}`, `{"username":"zoe","password":"x","extra":1}`, `{"username":1,"password":"x"}`} {
		expect(t, body, ts.do(t, "POST", "/api/authenticate", body), http.StatusBadRequest)
	}
}

func TestUnknownUserSpendsAHash(t *testing.T) {
	// An unknown username must cost the same argon2id work as a wrong
	// password, so the two cannot be told apart by timing.
	ts := newTestServer(t)
	ts.mustCreateUser(t, "zoe", "")
	ts.api.hasher.warmUp()
	for _, name := range []string{"zoe", "nobody", "NOBODY"} {
		before := ts.hashes()
		r := ts.do(t, "POST", "/api/authenticate", `{"username":"`+name+`","password":"wrong horse"}`)
		expect(t, "authenticate "+name, r, http.StatusUnauthorized)
		if n := ts.hashes() - before; n != 1 {
			t.Fatalf("%s: %v argon2id hashes, want exactly 1", name, n)
		}
	}
}

func TestPasswordStoredAsArgon2idPHC(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	var hash string
	ts.sqlGet(t, &hash, "SELECT password_hash FROM users WHERE id = ?", id)
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(hash, "correct horse") {
		t.Fatalf("stored hash %q is not the argon2id PHC string of the test parameters", hash)
	}
	p := defaultPasswordParams
	if p.Memory < 19*1024 || p.Time < 2 || p.Threads < 1 {
		t.Fatalf("production parameters %+v are below OWASP's m=19 MiB, t=2, p=1", p)
	}
	h := newPasswordHasher(p, prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "r"}))
	phc, err := h.Hash(t.Context(), "test", "correct horse")
	if err != nil || !strings.HasPrefix(phc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("production hash %q, %v", phc, err)
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horsf": false, "": false} {
		if ok, err := h.Verify(t.Context(), "test", phc, pw); ok != want || err != nil {
			t.Fatalf("Verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
}

func TestRouteErrorsAreJSON(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "GET", "/nope", "")
	expect(t, "GET /nope", r, http.StatusNotFound)
	if r.json(t)["error"] != "not found" {
		t.Fatalf("404 body %s", r.body)
	}
	r = ts.do(t, "DELETE", "/api/users", "")
	expect(t, "DELETE /api/users", r, http.StatusMethodNotAllowed)
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Fatalf("Allow = %q", allow)
	}
	if r.json(t)["error"] == nil {
		t.Fatalf("405 body %s", r.body)
	}
	r = ts.do(t, "POST", "/api/users/by-username/zoe", "")
	expect(t, "POST by-username", r, http.StatusMethodNotAllowed)
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "PUT") {
		t.Fatalf("Allow = %q", allow)
	}
	expect(t, "GET /api/users/{id}/unknown", ts.do(t, "GET", "/api/users/01939f5e-0000-7000-8000-000000000000/nope", ""), http.StatusNotFound)
	// Under a user, a path that is no route is a 404 whatever the method;
	// a route's path with a method it lacks is a 405 with its Allow.
	for _, method := range []string{"DELETE", "PUT", "POST", "PATCH"} {
		r := ts.do(t, method, "/api/users/01939f5e-0000-7000-8000-000000000000/nope", "")
		expect(t, method+" /api/users/{id}/unknown", r, http.StatusNotFound)
		if r.json(t)["error"] != "not found" {
			t.Fatalf("%s /api/users/{id}/unknown: %s", method, r.body)
		}
	}
	for path, allow := range map[string]string{"/api/users/01939f5e-0000-7000-8000-000000000000/goals": "GET, HEAD, POST", "/api/users/by-username/zoe": "GET, HEAD, PUT"} {
		r := ts.do(t, "DELETE", path, "")
		expect(t, "DELETE "+path, r, http.StatusMethodNotAllowed)
		if r.header.Get("Allow") != allow || r.json(t)["error"] != "method not allowed" {
			t.Fatalf("DELETE %s: Allow %q, body %s; want Allow %q", path, r.header.Get("Allow"), r.body, allow)
		}
	}
}

func TestReadsAfterAcknowledgedWritesAreFresh(t *testing.T) {
	// Whatever caching the read path does (prepared statements, pooled
	// buffers), a read that starts after a write was acknowledged must see
	// it, even while other writes and reads race.
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ { // background readers keep every pooled connection busy
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					ts.do(t, "GET", "/api/users/"+id+"?show=full_name", "")
					ts.do(t, "GET", "/api/users?show=full_name", "")
				}
			}
		}()
	}
	for i := 0; i < 100; i++ {
		want := fmt.Sprintf("name %d", i)
		expect(t, "PATCH", ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"`+want+`"}`), http.StatusOK)
		one := ts.do(t, "GET", "/api/users/"+id+"?show=full_name", "")
		if got := one.json(t)["user"].(map[string]any)["full_name"]; got != want {
			t.Fatalf("GET after PATCH %d: full_name = %v, want %q", i, got, want)
		}
		list := ts.do(t, "GET", "/api/users?show=full_name", "")
		if got := list.list(t)[0]["full_name"]; got != want {
			t.Fatalf("list after PATCH %d: full_name = %v, want %q", i, got, want)
		}
	}
	close(stop)
	wg.Wait()
}

func TestTimestampsAreUTCMillisecondsFromTheClock(t *testing.T) {
	zone := time.FixedZone("UTC+2", 2*60*60)
	now := time.Date(2026, 11, 25, 13, 42, 41, 123456789, zone)
	st, err := openStore(t.Context(), filepath.Join(t.TempDir(), "clock.db"), storeOptions{now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u := User{ID: "01939f5e-0000-7000-8000-000000000001", Username: "zoe", PasswordHash: "x"}
	if err := st.CreateUser(t.Context(), &u); err != nil {
		t.Fatal(err)
	}
	if u.CreatedAt != "2026-11-25T11:42:41.123Z" || u.ModifiedAt != u.CreatedAt || u.Version != 1 {
		t.Fatalf("created_at %q, modified_at %q, version %d", u.CreatedAt, u.ModifiedAt, u.Version)
	}
	now = now.Add(30 * time.Millisecond)
	in := userInput{FullName: optional[string]{Set: true, Value: "Zoe"}}
	got, _, err := st.UpdateUser(t.Context(), u.ID, &in, nil, nil)
	if err != nil || got.ModifiedAt != "2026-11-25T11:42:41.153Z" || got.CreatedAt != u.CreatedAt || got.Version != 2 {
		t.Fatalf("after update: %+v, %v", got, err)
	}
}
