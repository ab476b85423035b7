// postgres_test.go: what only PostgreSQL has: several instances on one
// database, its failures and the server going away, migrations under an
// advisory lock, URLs with passwords, and copies between the engines.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// onlyPostgres skips a test of something only PostgreSQL has on the
// SQLite run; the PostgreSQL run (USERSVC_TEST_POSTGRES) runs it.
func onlyPostgres(t testing.TB, what string) {
	t.Helper()
	if testBackend != "postgres" {
		t.Skip("PostgreSQL only (" + what + "): it runs in the PostgreSQL pass, when " + postgresEnv + " is set")
	}
}

func TestSchemasHaveTheSameSteps(t *testing.T) {
	lite, err := parseMigrations(sqliteSchema)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := parseMigrations(postgresSchema)
	if err != nil {
		t.Fatal(err)
	}
	names := func(steps []migration) []string {
		var out []string
		for _, s := range steps {
			out = append(out, fmt.Sprintf("%d: %s", s.version, s.name))
		}
		return out
	}
	if !reflect.DeepEqual(names(lite), names(pg)) {
		t.Fatalf("schema steps differ:\nSQLite     %q\nPostgreSQL %q", names(lite), names(pg))
	}
}

func TestInstancesStartingTogetherMigrateOnce(t *testing.T) {
	onlyPostgres(t, "an advisory lock")
	db := testDB(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := openStore(context.Background(), db, storeOptions{})
			if err == nil {
				err = st.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("an instance failed to start on an empty database: %v", err)
		}
	}
	st, err := openStore(context.Background(), db, storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var versions []int
	if err := rawDB(st).Select(&versions, "SELECT version FROM usersvc_schema"); err != nil || !reflect.DeepEqual(versions, []int{schemaVersion()}) {
		t.Fatalf("schema versions recorded %v (%v), want [%d]", versions, err, schemaVersion())
	}
	if _, err := rawDB(st).Exec("UPDATE usersvc_schema SET version = 999"); err != nil {
		t.Fatal(err)
	}
	if _, err := openStore(context.Background(), db, storeOptions{}); err == nil || !strings.Contains(err.Error(), "schema version 999 is newer") {
		t.Fatalf("a newer schema: err = %v, want a refusal", err)
	}
}

func TestAnInstanceWaitsForAnotherInstancesMigrationPastTheStatementTimeout(t *testing.T) {
	onlyPostgres(t, "an advisory lock")
	db := testDB(t)
	holder, err := openStore(context.Background(), db, storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	// Another instance migrating: it holds the migrations' lock for longer
	// than the statement timeout of the instance that starts meanwhile.
	tx, err := rawDB(holder).Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("SELECT pg_advisory_xact_lock($1)", int64(schemaLockKey)); err != nil {
		t.Fatal(err)
	}
	const timeout = 300 * time.Millisecond
	go func() {
		time.Sleep(3 * timeout)
		tx.Rollback() //nolint:errcheck // a test
	}()
	start := time.Now()
	st, err := openStore(context.Background(), db, storeOptions{statementTimeout: timeout})
	if err != nil {
		t.Fatalf("an instance waiting %v for another's migration, at a statement timeout of %v: %v", time.Since(start), timeout, err)
	}
	st.Close()
	if waited := time.Since(start); waited < 3*timeout {
		t.Fatalf("the instance started after %v, before the lock was let go", waited)
	}
}

func TestAMigrationStepDoesNotWaitLongForATableLock(t *testing.T) {
	onlyPostgres(t, "lock_timeout")
	db := testDB(t)
	const timeout = 300 * time.Millisecond
	eng, err := openEngine(context.Background(), db, storeOptions{statementTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	if err := migrateTo(context.Background(), eng, schemaVersion()-1, nil); err != nil {
		t.Fatal(err)
	}
	// A long reader of users (a pg_dump, an idle psql session) holds a lock
	// the last step's ALTER TABLE waits for.
	tx, err := eng.adminDB().Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // a test
	if _, err := tx.Exec("SELECT count(*) FROM users"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	bounded, cancel := context.WithTimeout(context.Background(), 20*timeout) // a regression fails, not hangs
	defer cancel()
	_, err = openStore(bounded, db, storeOptions{statementTimeout: timeout})
	if err == nil || time.Since(start) > 10*timeout {
		t.Fatalf("a start whose migration waits for a lock a reader holds: %v after %v, want a refusal within the lock timeout", err, time.Since(start))
	}
	tx.Rollback() //nolint:errcheck // a test
	eng.close()
	st, err := openStore(context.Background(), db, storeOptions{statementTimeout: timeout})
	if err != nil {
		t.Fatalf("the start after the reader ended: %v", err)
	}
	st.Close()
}

func TestOnlyABeginThatWaitedForTheBusyPoolIsNotRetried(t *testing.T) {
	// A server that accepts connections and never answers, as one that
	// fails over does for a while.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, connectErr := pgconn.Connect(ctx, "postgres://u@"+ln.Addr().String()+"/db?sslmode=disable")
	if !errors.Is(connectErr, context.DeadlineExceeded) {
		t.Fatalf("a connect to a server that does not answer: %v, want a deadline", connectErr)
	}
	if poolBusy(connectErr) || !isServerGone(connectErr) {
		t.Fatalf("a connect that timed out: poolBusy %v, isServerGone %v; want it retried", poolBusy(connectErr), isServerGone(connectErr))
	}
	waited := fmt.Errorf("begin write: %w", context.DeadlineExceeded) // what database/sql says when no connection came free
	if !poolBusy(waited) {
		t.Fatalf("a wait for a pooled connection that ran out: poolBusy false, want it not retried")
	}
}

func TestDatabaseURLPasswordNeverShows(t *testing.T) {
	onlyPostgres(t, "database URLs")
	u, _ := url.Parse(testDB(t))
	const secret = "pa55-w0rd-s3cret"
	// A server that is not there: the error names the database without
	// the password.
	bad := *u
	bad.User = url.UserPassword("usersvc", secret)
	bad.Host = "127.0.0.1:1"
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"usersvc", "-addr", "127.0.0.1:0", "-db", bad.String()}, envOf(), io.Discard, &stderr)
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(stderr.String(), secret) || !strings.Contains(err.Error(), "usersvc@127.0.0.1:1") {
		t.Fatalf("unreachable database: err %v, stderr %q; want an error that names the URL without its password", err, stderr.String())
	}
	// Passwords where net/url would not look for them: a query parameter,
	// and a password holding '#' and '?' (pgx reads up to the last '@').
	for _, raw := range []string{
		"postgres://usersvc@127.0.0.1:1/db?password=" + secret + "&sslmode=disable",
		"postgres://usersvc:#" + secret + "?@127.0.0.1:1/db",
		"postgres://usersvc:" + secret + "@[::1",
	} {
		stderr.Reset()
		err := run(context.Background(), []string{"usersvc", "-addr", "127.0.0.1:0", "-db", raw}, envOf(), io.Discard, &stderr)
		if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(stderr.String(), secret) {
			t.Fatalf("%s: err %v, stderr %q", raw, err, stderr.String())
		}
		if got := redactURL(raw); strings.Contains(got, secret) {
			t.Fatalf("redactURL(%q) = %q", raw, got)
		}
	}
	// A database that is there: the start line shows the URL redacted,
	// and so does nothing else.
	base, logs, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", u.String(), "-metrics-public"}, envOf())
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	stop()
	if pw, ok := u.User.Password(); ok && (strings.Contains(logs.String(), pw) || bytes.Contains(metrics, []byte(pw))) {
		t.Fatalf("the database password shows in the log or /metrics:\n%s", logs)
	}
	if !strings.Contains(logs.String(), redactURL(u.String())) || !strings.Contains(logs.String(), "postgres://usersvc@") {
		t.Fatalf("the start line does not name the database, redacted:\n%s", logs)
	}
}

func TestBackupOfPostgresNamesPgDump(t *testing.T) {
	// No server is needed: the command refuses before connecting.
	start := time.Now()
	err := run(context.Background(), []string{"usersvc", "-db", "postgres://u:secret-pw@192.0.2.1:5432/db", "backup", filepath.Join(t.TempDir(), "x")}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "pg_dump") || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "secret-pw") {
		t.Fatalf("backup of PostgreSQL: %v, want one line naming pg_dump", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("backup of PostgreSQL tried to connect")
	}
}

// pgExec runs statements on the test server's database as its own
// connection (not the server's pool).
func pgExec(t *testing.T, db string, statements ...string) {
	t.Helper()
	conn, err := sql.Open("pgx", db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, s := range statements {
		if _, err := conn.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func TestPostgresFailuresAre503AndPass(t *testing.T) {
	onlyPostgres(t, "PostgreSQL's own failures")
	var logs syncBuffer
	ts := newTestServerAt(t, testConfig(), testDB(t), slogTo(&logs), storeOptions{})
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	name := strings.TrimPrefix(mustURL(t, ts.db).Path, "/")

	// Every connection of the instance killed (an admin shutdown, a
	// failover): the next requests are 503 or served, never 500, and the
	// pool reconnects by itself.
	pgExec(t, os.Getenv(postgresEnv), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+name+"' AND application_name = 'usersvc'")
	var statuses []int
	for i := 0; i < 5; i++ {
		statuses = append(statuses, ts.do(t, "PATCH", "/api/users/"+id, fmt.Sprintf(`{"full_name":"n%d"}`, i)).status)
	}
	for _, s := range statuses {
		if s != 200 && s != 503 {
			t.Fatalf("after the server killed the connections: %v", statuses)
		}
	}
	expect(t, "served again", ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"back"}`), 200)

	// A read-only standby: writes are 503 with the contract's body, reads
	// go on.
	pgExec(t, os.Getenv(postgresEnv), "ALTER DATABASE "+name+" SET default_transaction_read_only = on",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+name+"' AND application_name = 'usersvc'")
	// The pool may first meet connections the server closed (503 too);
	// then the standby's own answer.
	var r response
	for i := 0; i < 20 && !strings.Contains(logs.String(), "25006"); i++ {
		r = ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"read-only"}`)
		expect(t, "a write to a read-only database", r, 503)
	}
	if r.json(t)["error"] == nil || strings.Contains(string(r.body), "read-only") {
		t.Fatalf("503 body %s", r.body)
	}
	expect(t, "a read from a read-only database", ts.do(t, "GET", "/api/users/"+id, ""), 200)
	if !strings.Contains(logs.String(), "25006") {
		t.Fatalf("the cause is not in the log (last answer %d %s):\n%s", r.status, r.body, logs.String())
	}
	pgExec(t, os.Getenv(postgresEnv), "ALTER DATABASE "+name+" SET default_transaction_read_only = off",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+name+"' AND application_name = 'usersvc'")

	// Too many connections: a new connection is refused; 503.
	pgExec(t, os.Getenv(postgresEnv), "ALTER DATABASE "+name+" CONNECTION LIMIT 0",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+name+"' AND application_name = 'usersvc'")
	r = ts.do(t, "GET", "/api/users/"+id, "")
	expect(t, "no connection allowed", r, 503)
	expect(t, "healthz with no connection allowed", ts.do(t, "GET", "/healthz", ""), 503)
	pgExec(t, os.Getenv(postgresEnv), "ALTER DATABASE "+name+" CONNECTION LIMIT -1")
	expect(t, "served again once connections are allowed", ts.do(t, "GET", "/api/users/"+id, ""), 200)
	if strings.Contains(logs.String(), "status=500") {
		t.Fatalf("a 500 in the log:\n%s", logs.String())
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// ---- several instances ----

// instance is one usersvc process of a multi-instance test.
type instance struct {
	cmd  *exec.Cmd
	base string
}

// startInstances runs n usersvc processes on db, each taking X-Forwarded-
// For from loopback (a load balancer in front).
func startInstances(t *testing.T, bin, db string, n int, extra ...string) []*instance {
	t.Helper()
	var out []*instance
	for i := 0; i < n; i++ {
		args := append([]string{"-addr", "127.0.0.1:0", "-db", db, "-rate-limit", "0", "-max-404", "0", "-trust-proxy", "127.0.0.1/32"}, extra...)
		cmd, base := startProcess(t, bin, args...)
		in := &instance{cmd: cmd, base: base}
		t.Cleanup(in.stop)
		out = append(out, in)
	}
	return out
}

func (in *instance) stop() {
	if in.cmd.ProcessState == nil {
		in.cmd.Process.Signal(os.Interrupt) //nolint:errcheck // stopping
		in.cmd.Wait()                       //nolint:errcheck // stopping
	}
}

// call sends a request to an instance as client i and returns the status,
// headers and body.
func (in *instance) call(t *testing.T, i int, method, path, body string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, in.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Forwarded-For", clientIP(i))
	for j := 0; j+1 < len(headers); j += 2 {
		req.Header.Set(headers[j], headers[j+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func TestALoginRacingAnotherInstancesSweepIsAnswered(t *testing.T) {
	onlyPostgres(t, "a sweep on another instance")
	cfg := testConfig()
	cfg.maxLoginFailures = 5
	ts := newTestServerWith(t, cfg)
	ts.mustCreateUser(t, "sweepme", "")
	login := `{"username":"sweepme","password":"correct horse"}`
	expect(t, "a first login", ts.do(t, "POST", "/api/authenticate", login), http.StatusOK) // its row: 0 failures
	db := rawDB(ts.store)
	waiting := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var got int
			if err := db.Get(&got, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"); err != nil {
				t.Fatal(err)
			}
			if got == n {
				return
			}
			if time.Now().After(deadline) {
				var rows []struct {
					State, Query string
					Wait         sql.NullString
				}
				db.Select(&rows, "SELECT coalesce(state, '') AS state, query, wait_event_type AS wait FROM pg_stat_activity WHERE datname = current_database()") //nolint:errcheck // a test's report
				t.Fatalf("%d statements wait for a lock, want %d: %+v", got, n, rows)
			}
		}
	}
	// An attempt on one instance holds the username's row, as BeginLogin
	// does, while a sweep on another queues for it, then this login.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit a no-op
	if _, err := tx.Exec("SELECT 1 FROM login_failures WHERE username_key = 'sweepme' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	swept := make(chan error, 1)
	go func() { swept <- ts.store.SweepLogins(context.Background(), time.Now(), windowLogin, maxLockouts) }()
	waiting(1)
	answered := make(chan response, 1)
	go func() { answered <- ts.do(t, "POST", "/api/authenticate", login) }()
	waiting(2)
	// The attempt ends: the sweep, first in line, deletes the row (its
	// statement began before the attempt was recorded), then the login
	// gets its turn.
	if _, err := tx.Exec("INSERT INTO login_pending (id, username_key, started) VALUES ('attempt-1', 'sweepme', $1)", time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	expect(t, "a login racing another instance's sweep", <-answered, http.StatusOK)
}

func TestWritesMeetingALockHeldElsewhereAnswerWithinTheirTimeout(t *testing.T) {
	onlyPostgres(t, "a lock held by another client of the database")
	cfg := testConfig()
	cfg.dbMaxConns = 2
	const timeout = time.Second
	ts := newTestServerAt(t, cfg, testDB(t), quietLogger(), storeOptions{statementTimeout: timeout})
	id := ts.mustCreateUser(t, "locked", "")["id"].(string)
	// An administrator's transaction holds the user's row for a while.
	admin, err := sql.Open("pgx", ts.db)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	tx, err := admin.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // a test
	if _, err := tx.Exec("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	// Eight times as many writes of it as the pool has connections: each
	// waits for a connection (at most twice the timeout), then for the
	// lock (the timeout), and answers; none waits again.
	var wg sync.WaitGroup
	slowest := make(chan time.Duration, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r := ts.do(t, "PATCH", "/api/users/"+id, fmt.Sprintf(`{"full_name":"n%d"}`, i))
			if r.status != http.StatusServiceUnavailable {
				t.Errorf("a write of a locked row: %d %s, want 503", r.status, r.body)
			}
			slowest <- time.Since(start)
		}()
	}
	wg.Wait()
	close(slowest)
	for d := range slowest {
		if d > 3*timeout+timeout/2 {
			t.Fatalf("a write of a locked row answered after %v, at a statement timeout of %v", d, timeout)
		}
	}
}

func TestAReadWaitingForABusyPoolAnswersWithinItsBound(t *testing.T) {
	onlyPostgres(t, "the pool's wait")
	cfg := testConfig()
	cfg.dbMaxConns = 1
	const timeout = 300 * time.Millisecond
	ts := newTestServerAt(t, cfg, testDB(t), quietLogger(), storeOptions{statementTimeout: timeout})
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	// The pool's one connection is held for much longer than a read may
	// wait for it.
	conn, err := rawDB(ts.store).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	held := time.AfterFunc(20*timeout, func() { conn.Close() })
	defer func() {
		if held.Stop() {
			conn.Close()
		}
	}()
	for _, show := range []string{"email", "goals"} { // one statement; two in a read transaction
		start := time.Now()
		r := ts.do(t, "GET", "/api/users/"+id+"?show="+show, "")
		if waited := time.Since(start); r.status != http.StatusServiceUnavailable || waited > 5*timeout {
			t.Fatalf("a read (show=%s) while the pool is busy: %d after %v, want a 503 within %v", show, r.status, waited, 5*timeout)
		}
	}
}

func TestThreeInstancesOnOneDatabase(t *testing.T) {
	onlyPostgres(t, "several instances")
	if testing.Short() {
		t.Skip("runs three processes")
	}
	bin := buildTestBinary(t)
	db := testDB(t)
	ins := startInstances(t, bin, db, 3)

	// 30 concurrent get-or-creates of one name, spread over the three.
	var wg sync.WaitGroup
	statuses := make(chan int, 30)
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			statuses <- ins[i%3].call(t, i, "PUT", "/api/users/by-username/racer", `{"password":"correct horse"}`).status
		}(i)
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] != 1 || count[200] != 29 {
		t.Fatalf("30 get-or-creates over three instances: %v, want one 201 and 29×200", count)
	}

	// 20 wrong passwords for one user, spread over the three: at most 5
	// are checked, and the lockout holds after all three restart.
	ins[0].call(t, 0, "POST", "/api/users", `{"username":"zoe","password":"correct horse"}`)
	count = map[int]int{}
	var mu sync.Mutex
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := ins[i%3].call(t, 100+i, "POST", "/api/authenticate", fmt.Sprintf(`{"username":"zoe","password":"guess %03d"}`, i)).status
			mu.Lock()
			count[s]++
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	if count[401] > 5 || count[401]+count[429] != 20 {
		t.Fatalf("20 guesses over three instances: %v, want at most 5 checked (401), the rest 429", count)
	}
	for _, in := range ins {
		if s := in.call(t, 200, "POST", "/api/authenticate", `{"username":"zoe","password":"correct horse"}`).status; s != 429 {
			t.Fatalf("the right password on %s during the lockout: %d, want 429", in.base, s)
		}
		in.stop()
	}
	ins = startInstances(t, bin, db, 3)
	for _, in := range ins {
		if s := in.call(t, 201, "POST", "/api/authenticate", `{"username":"zoe","password":"correct horse"}`).status; s != 429 {
			t.Fatalf("after all three restarted: %d, want 429 still", s)
		}
	}

	// ETags are the same from every instance.
	created := ins[0].call(t, 1, "POST", "/api/users?show=email", `{"username":"etag","password":"correct horse"}`)
	id := mustRaw(t, created.body, "user")
	uid := string(id[strings.Index(string(id), `"id":"`)+6:][:36])
	tag := ins[0].call(t, 1, "GET", "/api/users/"+uid, "").header.Get("ETag")
	if r := ins[1].call(t, 1, "GET", "/api/users/"+uid, "", "If-None-Match", tag); r.status != 304 {
		t.Fatalf("If-None-Match with another instance's ETag: %d, want 304", r.status)
	}
	listTag := ins[2].call(t, 1, "GET", "/api/users?limit=10", "").header.Get("ETag")
	if r := ins[0].call(t, 1, "GET", "/api/users?limit=10", "", "If-None-Match", listTag); r.status != 304 {
		t.Fatalf("a list's If-None-Match across instances: %d, want 304", r.status)
	}
	if r := ins[2].call(t, 1, "PATCH", "/api/users/"+uid, `{"full_name":"via two"}`, "If-Match", tag); r.status != 200 {
		t.Fatalf("If-Match with another instance's ETag: %d %s", r.status, r.body)
	}
	if r := ins[1].call(t, 1, "PATCH", "/api/users/"+uid, `{"full_name":"stale"}`, "If-Match", tag); r.status != 412 {
		t.Fatalf("a stale If-Match on a third instance: %d, want 412", r.status)
	}

	// A write acknowledged by one is seen by the next read on another.
	for i := 0; i < 30; i++ {
		want := fmt.Sprintf("round %d", i)
		if r := ins[i%3].call(t, 1, "PATCH", "/api/users/"+uid, `{"full_name":"`+want+`"}`); r.status != 200 {
			t.Fatalf("PATCH: %d", r.status)
		}
		got := ins[(i+1)%3].call(t, 1, "GET", "/api/users/"+uid+"?show=full_name", "")
		if !strings.Contains(string(got.body), `"full_name":"`+want+`"`) {
			t.Fatalf("instance %d read %s after instance %d acknowledged %q", (i+1)%3, got.body, i%3, want)
		}
	}
}

// ---- the server going away ----

// pgCluster is the Debian cluster the fault test may stop and start
// (USERSVC_TEST_PG_CLUSTER, e.g. "15 main"); .ci/run sets it.
const pgClusterEnv = "USERSVC_TEST_PG_CLUSTER"

func TestPostgresStopsAndComesBack(t *testing.T) {
	onlyPostgres(t, "stopping the server")
	cluster := strings.Fields(os.Getenv(pgClusterEnv))
	if len(cluster) != 2 {
		skipWithout(t, "pgcluster", "this test stops and starts the PostgreSQL cluster: set "+pgClusterEnv+`="15 main"`)
	}
	if testing.Short() {
		t.Skip("stops the database server")
	}
	bin := buildTestBinary(t)
	db := testDB(t)
	in := startInstances(t, bin, db, 1)[0]
	client := &http.Client{Timeout: 30 * time.Second}
	type ack struct{ id, name string }
	var (
		mu       sync.Mutex
		acked    []ack
		byStatus = map[int]int{}
		slowest  time.Duration
	)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				name := fmt.Sprintf("w%d_%d", w, i)
				req, _ := http.NewRequest("POST", in.base+"/api/users", strings.NewReader(`{"username":"`+name+`","password":"correct horse"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Forwarded-For", clientIP(w))
				t0 := time.Now()
				resp, err := client.Do(req)
				took := time.Since(t0)
				if err != nil {
					t.Errorf("a request failed outright: %v", err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				byStatus[resp.StatusCode]++
				slowest = max(slowest, took)
				if resp.StatusCode == 201 {
					acked = append(acked, ack{string(body), name})
				}
				mu.Unlock()
				if resp.StatusCode != 201 && resp.StatusCode != 503 {
					t.Errorf("while the database went away and back: %d %s", resp.StatusCode, body)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(w)
	}
	// The writers report to t, so they must stop before the test ends,
	// however it ends (a Fatal below included).
	t.Cleanup(func() {
		stop.Store(true)
		wg.Wait()
	})
	ctl := func(args ...string) {
		out, err := exec.Command("pg_ctlcluster", append(cluster, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("pg_ctlcluster %v: %v %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("pg_ctlcluster", append(cluster, "start")...).Run() }) //nolint:errcheck // leave it running
	time.Sleep(500 * time.Millisecond)
	ctl("stop", "-m", "fast")
	time.Sleep(2 * time.Second)
	r := in.call(t, 99, "GET", "/healthz", "")
	if r.status != 503 {
		t.Errorf("/healthz while the database is down: %d", r.status)
	}
	ctl("start")
	back := time.Now()
	var servedAfter time.Duration
	for time.Since(back) < 10*time.Second {
		if r := in.call(t, 98, "PUT", "/api/users/by-username/probe", `{"password":"correct horse"}`); r.status == 200 || r.status == 201 {
			servedAfter = time.Since(back)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("writes while PostgreSQL stopped for 2 s and came back: %v; slowest answer %v; served again %v after the start returned",
		byStatus, slowest.Round(time.Millisecond), servedAfter.Round(time.Millisecond))
	if servedAfter == 0 || servedAfter > 5*time.Second {
		t.Fatalf("not serving within 5 s of the database's return (%v)", servedAfter)
	}
	if byStatus[503] == 0 || byStatus[201] == 0 {
		t.Fatalf("statuses %v: the test did not see both the outage and the writes", byStatus)
	}
	// Every acknowledged write is there.
	st, err := openStore(context.Background(), db, storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, a := range acked {
		if _, err := st.GetUserByUsername(context.Background(), a.name, userExtras{}); err != nil {
			t.Fatalf("acknowledged user %s is missing after the outage: %v", a.name, err)
		}
	}
}

// ---- copy between engines ----

// A goal whose description holds U+0000 (which older versions stored in
// SQLite, and PostgreSQL cannot hold) stops a copy to PostgreSQL with a
// message naming it, and nothing is written; a copy to SQLite keeps it.
func TestCopyToPostgresNamesARowItCannotHold(t *testing.T) {
	onlyPostgres(t, "a copy to PostgreSQL")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db := seedCopySourceToEdit(t, src, 3)
	var id string
	err := db.Get(&id, "UPDATE goals SET description = 'a' || char(0) || 'b' WHERE id = (SELECT max(id) FROM goals) RETURNING id")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	pg := testDB(t)
	err = run(context.Background(), []string{"usersvc", "copy", src, pg}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "copy goals: the row with id "+id+" holds U+0000") {
		t.Fatalf("copy to PostgreSQL of a goal holding U+0000: %v", err)
	}
	var n int
	newTestServerAt(t, testConfig(), pg, errorLogger(t), storeOptions{}).sqlGet(t, &n, "SELECT count(*) FROM users")
	if n != 0 {
		t.Fatalf("the refused copy wrote %d users", n)
	}
	back := filepath.Join(dir, "back.db")
	if err := run(context.Background(), []string{"usersvc", "copy", src, back}, envOf(), io.Discard, io.Discard); err != nil {
		t.Fatalf("copy to SQLite of a goal holding U+0000: %v", err)
	}
}

// A copy's statements are not cut at a server's few seconds: reading a
// large PostgreSQL source in one snapshot failed after 5 s (1.5 million
// users, in review 15).
func TestCopyFromPostgresIsNotCutAtTheServersStatementTimeout(t *testing.T) {
	onlyPostgres(t, "a copy from PostgreSQL")
	pg := testDB(t)
	newTestServerAt(t, testConfig(), pg, errorLogger(t), storeOptions{}) // a usersvc database
	src, err := openCopySource(context.Background(), pg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.close()
	snap, err := src.snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Rollback() //nolint:errcheck // read-only
	var timeout string
	if err := snap.Get(&timeout, "SHOW statement_timeout"); err != nil {
		t.Fatal(err)
	}
	if timeout != "1d" {
		t.Fatalf("the copy's source connection has statement_timeout %s, want 1d (copyStatementTimeout)", timeout)
	}
}

// Two copies into one PostgreSQL database at once (of two sources that
// share no user): one lands, the other finds its rows and is refused;
// never both, merged.
func TestCopiesIntoOnePostgresDatabaseAtOnceLandOnce(t *testing.T) {
	onlyPostgres(t, "a copy to PostgreSQL")
	dir := t.TempDir()
	sources := []string{filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")}
	for i, src := range sources {
		db := seedCopySourceToEdit(t, src, 300)
		prefix := fmt.Sprintf("s%d", i)
		_, err := db.Exec("UPDATE users SET username = ? || username, username_key = ? || username_key, email = NULL, email_key = NULL", prefix, prefix)
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 5; round++ {
		pg := testDB(t)
		errs := make(chan error, len(sources))
		for _, src := range sources {
			go func() {
				errs <- run(context.Background(), []string{"usersvc", "copy", src, pg}, envOf(), io.Discard, io.Discard)
			}()
		}
		landed := 0
		for range sources {
			switch err := <-errs; {
			case err == nil:
				landed++
			case !strings.Contains(err.Error(), "is not empty"):
				t.Fatalf("round %d: a copy failed otherwise than refused: %v", round, err)
			}
		}
		var users int
		newTestServerAt(t, testConfig(), pg, errorLogger(t), storeOptions{}).sqlGet(t, &users, "SELECT count(*) FROM users")
		if landed != 1 || users != 300 {
			t.Fatalf("round %d: %d copies landed, %d users in the database; want 1 and 300", round, landed, users)
		}
	}
}

func TestCopySQLiteToPostgresAndBack(t *testing.T) {
	onlyPostgres(t, "a copy between the engines")
	if testing.Short() {
		t.Skip("copies 10,000 users")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	passwords := seedCopySource(t, src, 10_000)
	pg := testDB(t)
	back := filepath.Join(dir, "back.db")

	var out bytes.Buffer
	if err := run(context.Background(), []string{"usersvc", "copy", src, pg}, envOf(), &out, io.Discard); err != nil {
		t.Fatalf("copy to PostgreSQL: %v", err)
	}
	if !strings.Contains(out.String(), "copied 10000 users and 20000 goals") || strings.Contains(out.String(), "usersvc-test") {
		t.Fatalf("copy said %q", out.String())
	}
	if err := run(context.Background(), []string{"usersvc", "copy", pg, back}, envOf(), &out, io.Discard); err != nil {
		t.Fatalf("copy back to SQLite: %v", err)
	}
	answers := func(db string) []string {
		ts := newTestServerAt(t, testConfig(), db, errorLogger(t), storeOptions{})
		defer ts.Close()
		var got []string
		for _, start := range []string{"/api/users?limit=1000&show=email,full_name,goals.description", "/api/goals?limit=1000&show=description,user.email"} {
			for next := start; next != ""; {
				r := ts.do(t, "GET", next, "")
				got = append(got, r.header.Get("ETag")+" "+r.header.Get("Link")+" "+string(r.body))
				next = nextLink(t, r.header.Get("Link"))
			}
		}
		one := ts.do(t, "GET", "/api/users/by-username/copy00042?show=email,full_name,goals", "")
		return append(got, one.header.Get("ETag")+string(one.body))
	}
	want := answers(src)
	for _, db := range []string{pg, back} {
		if got := answers(db); !reflect.DeepEqual(got, want) {
			t.Fatalf("the API answers differently after the copy to %s", describeDB(db))
		}
	}
	// Every password still authenticates: each hash checked, and a sample
	// through the API of the PostgreSQL copy.
	st, err := openStore(context.Background(), pg, storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := newTestHasher()
	for name, pw := range passwords {
		u, err := st.GetCredentials(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := h.Verify(context.Background(), "test", u.PasswordHash, pw); !ok || err != nil {
			t.Fatalf("%s's password does not verify after the copy (%v)", name, err)
		}
	}
	st.Close()
	ts := newTestServerAt(t, testConfig(), pg, errorLogger(t), storeOptions{})
	for i := 0; i < 10_000; i += 997 {
		name := fmt.Sprintf("copy%05d", i)
		expect(t, "authenticate "+name, ts.do(t, "POST", "/api/authenticate", `{"username":"`+name+`","password":"`+passwords[name]+`"}`), 200)
	}
	// A destination that is not empty is refused and left as it was.
	err = run(context.Background(), []string{"usersvc", "copy", src, pg}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a copy into a non-empty database: %v", err)
	}
	var n int
	ts.sqlGet(t, &n, "SELECT count(*) FROM users")
	if n != 10_000 {
		t.Fatalf("the refused copy left %d users, want the 10,000 it had", n)
	}
}

// newTestHasher is a hasher with the test parameters and counters of its
// own.
func newTestHasher() *passwordHasher {
	return newPasswordHasher(testPasswordParams, newCounter("test_hashes"), newCounter("test_refused"))
}

func TestScrubPasswordNeitherGarblesNorTells(t *testing.T) {
	// Found in review: every occurrence of the password was replaced, so a
	// password that was also the user name showed as "user=xxxxx", and a
	// one-letter one garbled the whole message.
	msg := "failed to connect to `user=usersvc database=app`: password authentication failed for user \"usersvc\""
	for _, c := range []struct{ url, want string }{
		{"postgres://usersvc:usersvc@h/app", msg},
		{"postgres://usersvc:a@h/app", msg},
		{"postgres://usersvc:app@h/app", msg},
		{"postgres://usersvc:s3cret-Horse-9@h/app", msg},
	} {
		cfg, err := pgx.ParseConfig(c.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := scrubPassword(msg, cfg); got != c.want {
			t.Fatalf("%s: %q", c.url, got)
		}
	}
	cfg, _ := pgx.ParseConfig("postgres://usersvc:s3cret-Horse-9@h/app")
	if got := scrubPassword("a driver quoting s3cret-Horse-9 and s3cret-Horse-9", cfg); got != "a driver quoting xxxxx and xxxxx" {
		t.Fatalf("a long password quoted: %q", got)
	}
}
