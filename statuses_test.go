// statuses_test.go: every operation answers each status openapi.yaml lists
// for it that does not depend on the operation's own rules: a query
// string that does not parse (400), no token (401), a foreign Host (403),
// no such id (404), the rate limit (429), a database that cannot take the
// request (503), a body too large (413) or not JSON (415), and the
// conditional answers (304, 412). The table is driven by the document:
// an operation that lists one of these statuses must produce it here.
// (The specific answers, such as 409 or a lockout's 429, have tests of
// their own; the coverage check in openapi_test.go sees that every listed
// status is produced somewhere.)
package main

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// specOp is one operation of the document as these tests call it: a valid
// request of it.
type specOp struct {
	id, method, path, body string
}

// noSuchID is a well-formed id of no row.
const noSuchID = "0193b5a2-7c1e-7d3a-9f6b-2a4c8e1d5f70"

// specOps is a valid request of every operation of the document, on the
// user with id user and username username, and the goal with id goal.
func specOps(user, username, goal string) []specOp {
	return []specOp{
		{"listUsers", "GET", "/api/users", ""},
		{"createUser", "POST", "/api/users", `{"username":"newbie","password":"correct horse"}`},
		{"getUser", "GET", "/api/users/" + user, ""},
		{"updateUser", "PUT", "/api/users/" + user, `{"full_name":"Zoe Zimmer"}`},
		{"patchUser", "PATCH", "/api/users/" + user, `{"full_name":"Zoe Zimmer"}`},
		{"deleteUser", "DELETE", "/api/users/" + user, ""},
		{"getUserByUsername", "GET", "/api/users/by-username/" + username, ""},
		{"putUserByUsername", "PUT", "/api/users/by-username/" + username, `{"full_name":"Zoe Zimmer"}`},
		{"authenticate", "POST", "/api/authenticate", `{"username":"` + username + `","password":"correct horse"}`},
		{"listUserGoals", "GET", "/api/users/" + user + "/goals", ""},
		{"createGoal", "POST", "/api/users/" + user + "/goals", `{"title":"Run","target_minutes":20}`},
		{"listGoals", "GET", "/api/goals", ""},
		{"getGoal", "GET", "/api/goals/" + goal, ""},
		{"updateGoal", "PUT", "/api/goals/" + goal, `{"target_minutes":45}`},
		{"patchGoal", "PATCH", "/api/goals/" + goal, `{"target_minutes":45}`},
		{"deleteGoal", "DELETE", "/api/goals/" + goal, ""},
		{"healthz", "GET", "/healthz", ""},
		{"metrics", "GET", "/metrics", ""},
		{"getOpenAPI", "GET", "/openapi.json", ""},
	}
}

// documentedStatuses maps each operationId to the statuses the document
// lists for it.
func documentedStatuses(t *testing.T) map[string][]int {
	t.Helper()
	doc, _, err := loadAPISpec()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int{}
	for _, path := range doc.Paths.InMatchingOrder() {
		for _, op := range doc.Paths.Value(path).Operations() {
			out[op.OperationID] = []int{}
			for code := range op.Responses.Map() {
				if n, err := strconv.Atoi(code); err == nil {
					out[op.OperationID] = append(out[op.OperationID], n)
				}
			}
		}
	}
	return out
}

func TestSpecOpsAreEveryOperation(t *testing.T) {
	_, router, err := loadAPISpec()
	if err != nil {
		t.Fatal(err)
	}
	documented := documentedStatuses(t)
	ops := specOps(noSuchID, "zoe", noSuchID)
	for _, op := range ops {
		req, _ := http.NewRequest(op.method, "http://localhost"+op.path, nil)
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Errorf("%s: %s %s is no operation of the document: %v", op.id, op.method, op.path, err)
			continue
		}
		if route, _ = userByUsernameRoute(route, params); route.Operation.OperationID != op.id {
			t.Errorf("%s %s is %s in the document, not %s", op.method, op.path, route.Operation.OperationID, op.id)
		}
		delete(documented, op.id)
	}
	for id := range documented {
		t.Errorf("operation %s has no request in specOps", id)
	}
}

// forOpsListing runs check, as a subtest, for each operation of ops whose
// documented statuses include status.
func forOpsListing(t *testing.T, status int, ops []specOp, check func(t *testing.T, op specOp)) {
	t.Helper()
	documented := documentedStatuses(t)
	for _, op := range ops {
		if slices.Contains(documented[op.id], status) {
			t.Run(op.id, func(t *testing.T) { check(t, op) })
		}
	}
}

// seedUserAndGoal creates the user zoe with a goal and returns their ids.
func seedUserAndGoal(t *testing.T, ts *testServer) (user, goal string) {
	t.Helper()
	user = ts.mustCreateUser(t, "zoe", "")["id"].(string)
	r := ts.do(t, "POST", "/api/users/"+user+"/goals", `{"title":"Read","target_minutes":30}`)
	expect(t, "create a goal", r, http.StatusCreated)
	return user, r.json(t)["goal"].(map[string]any)["id"].(string)
}

// withQuery appends a raw query string to path.
func withQuery(path, query string) string {
	if strings.Contains(path, "?") {
		return path + "&" + query
	}
	return path + "?" + query
}

func TestEveryOperationAnswersItsGenericStatuses(t *testing.T) {
	t.Run("400 a query string that does not parse", func(t *testing.T) {
		ts := newTestServer(t)
		forOpsListing(t, 400, specOps(noSuchID, "zoe", noSuchID), func(t *testing.T, op specOp) {
			expect(t, op.method+" "+op.path+"?%", ts.do(t, op.method, withQuery(op.path, "%"), op.body), 400)
		})
	})
	t.Run("401 no token", func(t *testing.T) {
		cfg := testConfig()
		cfg.token = "a-token-of-sixteen-plus"
		ts := newTestServerWith(t, cfg)
		forOpsListing(t, 401, specOps(noSuchID, "zoe", noSuchID), func(t *testing.T, op specOp) {
			r := ts.do(t, op.method, op.path, op.body)
			expect(t, op.method+" "+op.path+" without the token", r, 401)
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without WWW-Authenticate: Bearer: %v", r.header)
			}
		})
	})
	t.Run("403 a foreign Host", func(t *testing.T) {
		ts := newTestServer(t)
		forOpsListing(t, 403, specOps(noSuchID, "zoe", noSuchID), func(t *testing.T, op specOp) {
			expect(t, op.method+" "+op.path+" for evil.example", ts.do(t, op.method, op.path, op.body, "Host", "evil.example"), 403)
		})
	})
	t.Run("404 no such id", func(t *testing.T) {
		ts := newTestServer(t)
		seedUserAndGoal(t, ts) // rows exist, just not these
		forOpsListing(t, 404, specOps(noSuchID, "nobody", noSuchID), func(t *testing.T, op specOp) {
			expect(t, op.method+" "+op.path, ts.do(t, op.method, op.path, op.body), 404)
		})
	})
	t.Run("413 a body over 1 MiB", func(t *testing.T) {
		ts := newTestServer(t)
		big := `{"full_name":"` + strings.Repeat("a", maxBodyBytes) + `"}`
		forOpsListing(t, 413, specOps(noSuchID, "zoe", noSuchID), func(t *testing.T, op specOp) {
			expect(t, op.method+" "+op.path+" with 1 MiB", ts.do(t, op.method, op.path, big), 413)
		})
	})
	t.Run("415 a body that is not JSON", func(t *testing.T) {
		ts := newTestServer(t)
		forOpsListing(t, 415, specOps(noSuchID, "zoe", noSuchID), func(t *testing.T, op specOp) {
			expect(t, op.method+" "+op.path+" as text/plain", ts.do(t, op.method, op.path, op.body, "Content-Type", "text/plain"), 415)
		})
	})
	t.Run("429 over the rate limit", func(t *testing.T) {
		cfg := testConfig()
		cfg.rateLimit, cfg.rateBurst = 1, 1
		cfg.now = newFakeClock().Now // the bucket never refills
		ts := newTestServerWith(t, cfg)
		i := 0
		forOpsListing(t, 429, specOps(noSuchID, "zoe", noSuchID), func(t *testing.T, op specOp) {
			i++
			client := "X-Forwarded-For" // each operation from a client of its own
			expect(t, "the client's one request", ts.do(t, "GET", "/openapi.json", "", client, clientIP(i)), 200)
			r := ts.do(t, op.method, op.path, op.body, client, clientIP(i))
			expect(t, op.method+" "+op.path+" over the limit", r, 429)
			if r.header.Get("Retry-After") == "" {
				t.Fatalf("429 without Retry-After")
			}
		})
	})
	t.Run("503 the database cannot take the request", func(t *testing.T) {
		ts := newTestServerAt(t, testConfig(), testDB(t), errorLogger(t), storeOptions{statementTimeout: 200 * time.Millisecond})
		user, goal := seedUserAndGoal(t, ts)
		makeDatabaseUnavailable(t, ts)
		forOpsListing(t, 503, specOps(user, "zoe", goal), func(t *testing.T, op specOp) {
			if op.id == "healthz" {
				// Its trivial query touches no table: a database that
				// does not answer at all is what it reports.
				ts.store.Close()
			}
			expect(t, op.method+" "+op.path+" with the database unavailable", ts.do(t, op.method, op.path, op.body), 503)
		})
	})
}

// makeDatabaseUnavailable makes ts's database refuse every request from
// now to the end of the test, as a failing database does: on SQLite the
// writer turns read-only and the read pool can no longer open the file
// (its folder moves away); on PostgreSQL another session holds the tables
// locked, so every statement runs into the store's statement timeout.
func makeDatabaseUnavailable(t *testing.T, ts *testServer) {
	t.Helper()
	if testBackend == "postgres" {
		db, err := sqlx.Open("pgx", ts.db)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(t.Context())
		if err == nil {
			_, err = conn.ExecContext(t.Context(), "BEGIN; LOCK TABLE users, goals IN ACCESS EXCLUSIVE MODE")
		}
		if err != nil {
			t.Fatalf("lock the tables: %v", err)
		}
		t.Cleanup(func() { conn.Close(); db.Close() })
		return
	}
	// SQLite keeps answering reads from a file that is there; a closed
	// store stands in for a database that is gone.
	if err := ts.store.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEveryReadAnswers304AndEveryWrite412(t *testing.T) {
	ts := newTestServer(t)
	user, goal := seedUserAndGoal(t, ts)
	ops := specOps(user, "zoe", goal)
	t.Run("304 If-None-Match with the ETag", func(t *testing.T) {
		forOpsListing(t, 304, ops, func(t *testing.T, op specOp) {
			r := ts.do(t, op.method, op.path, "")
			expect(t, op.method+" "+op.path, r, 200)
			tag := r.header.Get("ETag")
			r = ts.do(t, op.method, op.path, "", "If-None-Match", tag)
			if r.status != 304 || r.header.Get("ETag") != tag || len(r.body) != 0 {
				t.Fatalf("If-None-Match %s: %d, ETag %q, body %q; want 304 repeating the ETag", tag, r.status, r.header.Get("ETag"), r.body)
			}
		})
	})
	t.Run("412 If-Match with a made-up ETag", func(t *testing.T) {
		const madeUp = `"0123456789abcdef-0123456789abcdef"`
		forOpsListing(t, 412, ops, func(t *testing.T, op specOp) {
			expect(t, op.method+" "+op.path+" If-Match "+madeUp, ts.do(t, op.method, op.path, op.body, "If-Match", madeUp), 412)
		})
	})
}
