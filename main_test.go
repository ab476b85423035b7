// main_test.go: the command line and the process life cycle, through run.
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
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server's logger and the test
// to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// envOf turns name=value pairs into a getenv function.
func envOf(pairs ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) string { return m[k] }
}

// servingAddr finds the listen address in the start log line, text or JSON.
var servingAddr = regexp.MustCompile(`msg"?[=:]"?serving"?[, ]+"?addr"?[=:]"?(\[?[0-9a-f.:]+\]?:\d+)`)

// startRun runs the real program in the background and waits until
// /healthz answers. It returns the base URL and a stop function that
// cancels the context and returns run's error.
func startRun(t *testing.T, args []string, getenv func(string) string) (string, *syncBuffer, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, append([]string{"usersvc"}, args...), getenv, &bytes.Buffer{}, stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-errc:
			cancel()
			t.Fatalf("run returned early: %v; log:\n%s", err, stderr)
		default:
		}
		if m := servingAddr.FindStringSubmatch(stderr.String()); m != nil {
			_, port, _ := net.SplitHostPort(m[1])
			base := "http://127.0.0.1:" + port
			if resp, err := http.Get(base + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					var once sync.Once
					var runErr error
					stop := func() error {
						once.Do(func() { cancel(); runErr = <-errc })
						return runErr
					}
					t.Cleanup(func() { stop() })
					return base, stderr, stop
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	t.Fatalf("server did not answer /healthz; log:\n%s", stderr)
	return "", nil, nil
}

func TestRunServesAndStopsGracefully(t *testing.T) {
	db := filepath.Join(t.TempDir(), "run.db")
	base, logs, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", db}, envOf())
	resp, err := http.Post(base+"/api/users", "application/json", strings.NewReader(`{"username":"zoe","password":"correct horse"}`))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create through run: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := stop(); err != nil {
		t.Fatalf("run after stop = %v, want nil", err)
	}
	if !strings.Contains(logs.String(), "msg=stopped") {
		t.Fatalf("no stop log line:\n%s", logs)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after stop")
	}
	// The database was closed cleanly and holds the user.
	st, err := openStore(context.Background(), db, storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.GetUserByUsername(context.Background(), "zoe", userExtras{}); err != nil {
		t.Fatalf("user lost after a graceful stop: %v", err)
	}
}

func TestRunEnvironmentAndFlags(t *testing.T) {
	dir := t.TempDir()
	envDB, flagDB := filepath.Join(dir, "env.db"), filepath.Join(dir, "flag.db")
	_, _, stop := startRun(t, []string{"-addr", "127.0.0.1:0"}, envOf("USERSVC_DB", envDB, "USERSVC_LOG_FORMAT", "json"))
	stop()
	if _, err := os.Stat(envDB); err != nil {
		t.Fatalf("USERSVC_DB was not used: %v", err)
	}
	_, logs, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", flagDB, "-log-format", "text"}, envOf("USERSVC_DB", envDB, "USERSVC_LOG_FORMAT", "json"))
	stop()
	if _, err := os.Stat(flagDB); err != nil {
		t.Fatalf("-db did not win over USERSVC_DB: %v", err)
	}
	if strings.HasPrefix(logs.String(), "{") {
		t.Fatalf("-log-format text did not win over USERSVC_LOG_FORMAT: %s", logs)
	}
}

func TestRunJSONLogs(t *testing.T) {
	db := filepath.Join(t.TempDir(), "j.db")
	_, logs, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", db, "-log-format", "json"}, envOf())
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("want start and stop lines, got %q", logs)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `{"time":`) || !strings.Contains(l, `"level":`) || !strings.Contains(l, `"msg":`) {
			t.Fatalf("not a JSON log line with time, level, msg: %s", l)
		}
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"usersvc", "version"}, envOf(), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "usersvc ") {
		t.Fatalf("version printed %q", out.String())
	}
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"usersvc", "-h"}, envOf(), &out, &errOut); err != nil {
		t.Fatalf("-h: err = %v, want nil (exit 0)", err)
	}
	for _, want := range []string{"-addr", "USERSVC_ADDR", "-db", "USERSVC_DB", "backup FILE", "copy SRC DST", "version", "-max-goals", "-allowed-hosts", "-trust-proxy"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("-h output on stdout lacks %q:\n%s", want, out.String())
		}
	}
	if errOut.Len() != 0 {
		t.Fatalf("-h wrote to stderr: %s", errOut.String())
	}
	for _, args := range [][]string{{"-nope"}, {"-log-format", "xml"}, {"frobnicate"}, {"-log-level", "loud"},
		{"-rate-limit", "-1"}, {"-max-404", "-5"}, {"-rate-burst", "0"}, {"backup"}, {"backup", ""},
		{"version", "extra"}, {"openapi", "extra"}, {"-addr", "8080"}, {"copy", "", "dst.db"}, {"copy", "src.db", ""}} {
		err := run(context.Background(), append([]string{"usersvc"}, args...), envOf(), &out, &errOut)
		if err == nil || exitCode(err) != 2 {
			t.Fatalf("%v: err = %v, want a usage error", args, err)
		}
	}
	err := run(context.Background(), []string{"usersvc"}, envOf("USERSVC_RATE_LIMIT", "fast"), &out, &errOut)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "USERSVC_RATE_LIMIT") {
		t.Fatalf("a bad USERSVC_RATE_LIMIT: err = %v, want a usage error naming it", err)
	}
	err = run(context.Background(), []string{"usersvc"}, envOf("USERSVC_ADMIN", "yes"), &out, &errOut)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), `USERSVC_ADMIN="yes": must be true or false`) {
		t.Fatalf("USERSVC_ADMIN=yes: err = %v, want a usage error saying true or false", err)
	}
	err = run(context.Background(), []string{"usersvc", "-addr", "8080"}, envOf(), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), `-addr "8080" is not host:port`) {
		t.Fatalf("-addr 8080: err = %v, want it named as no host:port", err)
	}
}

// Commands do not serve, so the settings only serving reads (the token,
// -trust-proxy) cannot stop them: a backup job run as a user who may not
// read the server's token file still backs up.
func TestCommandsIgnoreWhatOnlyServingReads(t *testing.T) {
	onlySQLite(t, "a backup of a SQLite file")
	dir := t.TempDir()
	db := filepath.Join(dir, "users.db")
	openAndClose(t, db, "a new database")
	env := envOf("USERSVC_TOKEN_FILE", filepath.Join(dir, "unreadable-token"), "USERSVC_TOKEN", "short", "USERSVC_TRUST_PROXY", "not-a-cidr", "USERSVC_DB", db)
	for _, args := range [][]string{{"version"}, {"openapi"}, {"backup", filepath.Join(dir, "copy.db")}} {
		if err := run(context.Background(), append([]string{"usersvc"}, args...), env, io.Discard, io.Discard); err != nil {
			t.Fatalf("%v with serve-only settings it cannot use: %v", args, err)
		}
	}
	if err := run(context.Background(), []string{"usersvc"}, env, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "-trust-proxy") {
		t.Fatalf("serving with those settings: err = %v, want -trust-proxy refused", err)
	}
}

func TestRunStartupErrors(t *testing.T) {
	onlySQLite(t, "SQLite files and their failures")
	dir := t.TempDir()
	notDB := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(notDB, bytes.Repeat([]byte("not a database "), 512), 0o600); err != nil {
		t.Fatal(err)
	}
	newer := filepath.Join(dir, "newer.db")
	st, err := openStore(context.Background(), newer, storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.eng.(*sqliteEngine).writeDB.Exec("PRAGMA user_version = 999"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing folder", []string{"-db", filepath.Join(dir, "no", "such", "x.db")}, "does not exist"},
		{"not a database", []string{"-db", notDB}, "not a SQLite database"},
		{"newer schema", []string{"-db", newer}, "schema version 999 is newer"},
		{"folder as file", []string{"-db", dir}, "is a folder"},
		{"port in use", []string{"-db", filepath.Join(dir, "new.db"), "-addr", busy.Addr().String()}, "listen on"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"usersvc", "-addr", "127.0.0.1:0"}, c.args...)
			err := run(context.Background(), args, envOf(), &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, c.want)
			}
			if exitCode(err) == 0 {
				t.Fatal("exit code 0")
			}
		})
	}
	// The start that could not listen made new.db, and took it away again;
	// a database that was there before stays.
	for _, side := range []string{"", "-wal", "-shm"} {
		if _, err := os.Stat(filepath.Join(dir, "new.db"+side)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a start that could not listen left new.db%s behind (%v)", side, err)
		}
	}
	existing := filepath.Join(dir, "existing.db")
	openAndClose(t, existing, "a new database")
	err = run(context.Background(), []string{"usersvc", "-db", existing, "-addr", busy.Addr().String()}, envOf(), &bytes.Buffer{}, &bytes.Buffer{})
	if _, statErr := os.Stat(existing); err == nil || statErr != nil {
		t.Fatalf("a start on an existing database that could not listen: %v, and the file: %v", err, statErr)
	}
}

// TestAnotherApplicationsDatabaseIsLeftAlone: a SQLite file that is not a
// usersvc database (tables but no schema version, or a version of its own
// without the tables and columns usersvc's schema has at that version, or
// a version newer than usersvc knows; in either journal mode; even while
// its application holds a write lock) is refused at start, and by copy, in
// one line naming its tables and what it lacks, and left exactly as it
// was: the same bytes, no -wal or -shm. An empty file is a new database,
// and a usersvc database with a table of the operator's is still usersvc's.
func TestAnotherApplicationsDatabaseIsLeftAlone(t *testing.T) {
	onlySQLite(t, "SQLite files")
	dir := t.TempDir()
	src := filepath.Join(dir, "users.db")
	openAndClose(t, src, "a new database")

	cases := []struct {
		name, schema, want string
		locked             bool
	}{
		{"no version", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('keep me')",
			`not a usersvc database (tables "notes", user_version 0: no schema version)`, false},
		{"WAL mode", "PRAGMA journal_mode = WAL; CREATE TABLE events (id INTEGER PRIMARY KEY); CREATE VIEW recent AS SELECT * FROM events",
			`not a usersvc database (tables "events", "recent", user_version 0: no schema version)`, false},
		{"a version of its own", "PRAGMA user_version = 3; CREATE TABLE a (x); CREATE TABLE b (x); CREATE TABLE c (x); CREATE TABLE d (x)",
			`not a usersvc database (tables "a", "b", "c", and 1 more, user_version 3: no table "goals")`, false},
		{"a version and no tables", "PRAGMA user_version = 1",
			`not a usersvc database (no tables, user_version 1: no table "users")`, false},
		{"a version and a users table of its own", "PRAGMA user_version = 1; CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT, email TEXT)",
			`not a usersvc database (tables "users", user_version 1: no column "full_name" in table "users")`, false},
		{"a version of its own, past usersvc's", "PRAGMA user_version = 99; CREATE TABLE accounts (id INTEGER PRIMARY KEY)",
			`not a usersvc database (tables "accounts", user_version 99: no table "goals")`, false},
		{"usersvc's schema at a version newer than this binary's", fmt.Sprintf("%s\nPRAGMA user_version = %d;", sqliteSchema, schemaVersion()+1),
			fmt.Sprintf("schema version %d is newer than this binary knows (%d): use a newer usersvc", schemaVersion()+1, schemaVersion()), false},
		{"locked by its application", "CREATE TABLE ledger (id INTEGER PRIMARY KEY)",
			`not a usersvc database (tables "ledger", user_version 0: no schema version)`, true},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("app%d.db", i))
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			if _, err := db.Exec(c.schema); err != nil {
				t.Fatal(err)
			}
			if c.locked {
				if _, err := db.Exec("BEGIN EXCLUSIVE"); err != nil {
					t.Fatal(err)
				}
				defer db.Exec("ROLLBACK") //nolint:errcheck // the test is over
			} else {
				db.Close() // a WAL database's -wal goes with its last connection
			}
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			// Were it accepted, the server would serve until the context ends.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = run(ctx, []string{"usersvc", "-addr", "127.0.0.1:0", "-db", path}, envOf(), &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") || exitCode(err) == 0 {
				t.Fatalf("err = %v, want one line containing %s", err, c.want)
			}
			err = run(ctx, []string{"usersvc", "copy", src, path}, envOf(), &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("copy into it: err = %v, want a refusal containing %s", err, c.want)
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
				t.Fatalf("the file changed (%v)", err)
			}
			if !c.locked {
				for _, side := range []string{"-wal", "-shm"} {
					if _, err := os.Stat(path + side); err == nil {
						t.Errorf("%s%s exists: the file was opened for writing", path, side)
					}
				}
			}
		})
	}

	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	openAndClose(t, empty, "an empty file")

	// An operator's own tables beside usersvc's, even a view broken since,
	// leave the database usersvc's.
	db, err := sql.Open("sqlite", src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`CREATE TABLE reports (day TEXT, users INTEGER); CREATE TABLE old (x);
		CREATE VIEW old_report AS SELECT x FROM old; DROP TABLE old`)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	openAndClose(t, src, "a usersvc database with tables of the operator's")
}

// openAndClose opens the SQLite database at path (creating it, with
// usersvc's schema, when missing) and closes it; what names it when that
// fails.
func openAndClose(t *testing.T, path, what string) {
	t.Helper()
	st, err := openStore(context.Background(), path, storeOptions{})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	st.Close()
}

func TestDatabasePathWithURICharacters(t *testing.T) {
	onlySQLite(t, "file names")
	dir := filepath.Join(t.TempDir(), "odd %41 #dir?")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "users?%20#.db")
	ts := newTestServerAt(t, testConfig(), path, quietLogger(), storeOptions{})
	ts.mustCreateUser(t, "zoe", "")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the database is not at the path asked for: %v", err)
	}
	if err := backupDatabase(context.Background(), path, filepath.Join(dir, "copy?.db")); err != nil {
		t.Fatal(err)
	}
}

// Under the memory limit tuneGC sets, a password hash raises the limit by
// the memory it takes while it runs, and gives it back after: the
// collector then never fights argon2id for its 19 MiB.
func TestHashesRaiseTheMemoryLimitWhileTheyRun(t *testing.T) {
	oldLimit, oldPercent := debug.SetMemoryLimit(-1), debug.SetGCPercent(-1)
	debug.SetGCPercent(oldPercent)
	t.Cleanup(func() {
		debug.SetMemoryLimit(oldLimit)
		debug.SetGCPercent(oldPercent)
	})
	limit := tuneGC(func(string) string { return "" }, defaultCacheMiB<<20)
	if limit == nil {
		t.Fatal("tuneGC set no limit without GOMEMLIMIT")
	}
	base := int64(heapAllowance + defaultCacheMiB<<20)
	if got := debug.SetMemoryLimit(-1); got < base {
		t.Fatalf("tuneGC set a limit of %d MiB, want %d MiB", got>>20, base>>20)
	}
	// What the hash sets, recorded rather than read back from the process:
	// other tests' servers set the process's limit too (a run on
	// PostgreSQL once read 40 MiB where the hash had set 104).
	var mu sync.Mutex
	var set []int64
	limit.set = func(n int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		set = append(set, n)
		return debug.SetMemoryLimit(n)
	}
	const hashMiB = 64
	h := newPasswordHasher(passwordParams{Memory: hashMiB << 10, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32},
		newCounter("test_hashes"), newCounter("test_refused"))
	h.limit = limit
	if _, err := h.Hash(context.Background(), "client", "correct horse battery"); err != nil {
		t.Fatalf("hash: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []int64{base + hashMiB<<20, base}; !slices.Equal(set, want) {
		t.Fatalf("the hash set the limit to %v MiB; want %v MiB (raised by its %d MiB while it ran, then back)", mib(set), mib(want), hashMiB)
	}
}

// mib is each of bytes in MiB.
func mib(bytes []int64) []int64 {
	out := make([]int64, len(bytes))
	for i, b := range bytes {
		out[i] = b >> 20
	}
	return out
}

func TestATokenNoRequestCouldSendIsRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ content, want string }{
		{"first-line-token-abcdef\nsecond-line\n", `control character '\n' at byte 23`},
		{"a-token-with-a-nul\x00in-the-middle", `control character '\x00'`},
		{"a-token-with-c1-\u0085-in-the-middle", `control character '\u0085' at byte 16`},
		{"  a-good-token-of-32-characters-x  \n", ""},
		{"a-good-token-with-a\ttab", ""}, // a header carries a tab
		{"\ufeffa-token-after-a-byte-order-mark\r\n", ""},
	} {
		file := filepath.Join(dir, "token")
		if err := os.WriteFile(file, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		token, err := loadToken(file, "")
		switch {
		case c.want == "" && (err != nil || token != strings.TrimSpace(strings.TrimPrefix(c.content, "\ufeff"))):
			t.Fatalf("token file %q: %q, %v", c.content, token, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Fatalf("token file %q: %v, want it refused for its %s", c.content, err, c.want)
		}
	}
}

// stallingWriter passes writes to buf until stall, then holds every write
// until release: a log reader that stopped reading.
type stallingWriter struct {
	buf     syncBuffer
	stalled atomic.Bool
	release chan struct{}
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	if w.stalled.Load() {
		<-w.release
	}
	return w.buf.Write(p)
}

func TestALogSinkThatStopsTakingLinesHoldsNoRequest(t *testing.T) {
	// Found in review: once the pipe behind stderr was full, every request
	// waited on the log's lock while its write was stuck, /healthz and the
	// stop included.
	w := &stallingWriter{release: make(chan struct{})}
	defer close(w.release)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	db := filepath.Join(t.TempDir(), "stall.db")
	go func() {
		errc <- run(ctx, []string{"usersvc", "-addr", "127.0.0.1:0", "-db", db, "-rate-limit", "0", "-max-404", "0"}, envOf(), &bytes.Buffer{}, w)
	}()
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if m := servingAddr.FindStringSubmatch(w.buf.String()); m != nil {
			base = "http://" + m[1]
		}
	}
	if base == "" {
		t.Fatalf("no serving line:\n%s", w.buf.String())
	}
	w.stalled.Store(true)
	client := &http.Client{Timeout: 3 * time.Second}
	const requests = 3000 // about 450 KB of access lines: past every buffer
	for i := range requests {
		path := "/api/users/01939f5e-0000-7000-8000-000000000000"
		if i%100 == 0 {
			path = "/healthz"
		}
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("request %d with the log's reader stuck: %v", i, err)
		}
		resp.Body.Close()
	}
	cancel()
	select {
	case err := <-errc:
		t.Logf("run returned %v after the stop, its log's reader still stuck", err)
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15 s of the stop, its log's reader stuck")
	}
}

func TestDroppedLogLinesAreCountedWhenTheSinkTakesLinesAgain(t *testing.T) {
	w := &stallingWriter{release: make(chan struct{})}
	w.stalled.Store(true)
	var dropped atomic.Int64
	b := newBufferedLog(w, func(lines int) { dropped.Add(int64(lines)) })
	line := []byte(strings.Repeat("x", 99) + "\n")
	b.Write(line)
	b.Flush()
	time.Sleep(50 * time.Millisecond) // the writer is now stuck on the first line
	n := 2 * logMaxPending / len(line)
	for range n {
		b.writeAccess(line)
	}
	// Past the access lines' limit, an error line is still kept.
	b.Write([]byte("level=ERROR msg=kept\n"))
	w.stalled.Store(false)
	close(w.release)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	written := strings.Count(w.buf.String(), "\n")
	if written+int(dropped.Load()) != n+2 || dropped.Load() == 0 || !strings.Contains(w.buf.String(), "msg=kept") {
		t.Fatalf("%d lines written and %d counted as dropped, of %d (the error line kept: %v)", written, dropped.Load(), n+2, strings.Contains(w.buf.String(), "msg=kept"))
	}
}

func TestTheWarningOfLinesDroppedJustBeforeTheStopIsWritten(t *testing.T) {
	w := &stallingWriter{release: make(chan struct{})}
	w.stalled.Store(true)
	var b *bufferedLog
	b = newBufferedLog(w, func(lines int) { fmt.Fprintf(b, "level=WARN msg=dropped lines=%d\n", lines) })
	b.writeAccess([]byte("first\n"))
	b.Flush()
	time.Sleep(50 * time.Millisecond) // the writer is now stuck on the first line
	line := []byte(strings.Repeat("x", 99) + "\n")
	for range 2 * logMaxPending / len(line) {
		b.writeAccess(line)
	}
	w.stalled.Store(false)
	close(w.release)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.buf.String(), "msg=dropped") {
		t.Fatal("the warning of the lines dropped before the stop was lost")
	}
}

func TestDatabaseNamesThatAreNoSQLiteFileAreRefused(t *testing.T) {
	// Found in review: key=value settings and a POSTGRES:// URL were taken
	// for SQLite file names: a new, empty database was served, named with
	// the password, and the password was printed; a CR from a file with
	// Windows line ends served a new database beside the real one.
	dir := t.TempDir()
	t.Chdir(dir)
	var out, errOut bytes.Buffer
	for _, c := range []struct{ db, want string }{
		{"host=127.0.0.1 user=usersvc password=KWSECRET dbname=app", "looks like PostgreSQL key=value settings"},
		{"dbname=app", "looks like PostgreSQL key=value settings"},
		{"mysql://root:MYSECRET@db/app", "is a mysql:// URL"},
		{"users.db\r", "holds a control character at byte 8"},
		{"user:PWSECRET@host://x", "holds :// after something that is no URL scheme"},
		{"postgres:/u:TYPOSECRET@h/app", "starts like a postgres:// URL but is not one"},
		{"", "-db must name a SQLite file or a postgres:// URL"},
	} {
		for _, args := range [][]string{{"-db", c.db, "-addr", "127.0.0.1:0"}, {"-db", c.db, "backup", "b.db"}} {
			err := run(t.Context(), append([]string{"usersvc"}, args...), envOf(), &out, &errOut)
			if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("-db %q: %v, want a usage error saying %q without the password", c.db, err, c.want)
			}
		}
		err := run(t.Context(), []string{"usersvc", "copy", "src.db", c.db}, envOf(), &out, &errOut)
		if c.db != "" && (err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), c.want)) {
			t.Fatalf("copy to %q: %v, want a usage error saying %q", c.db, err, c.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("files made: %v", entries)
	}
	// A scheme in capitals is still PostgreSQL's (RFC 3986), never a path.
	err := run(t.Context(), []string{"usersvc", "-db", "POSTGRES://u:UPSECRET@127.0.0.1:1/app", "-addr", "127.0.0.1:0"}, envOf(), &out, &errOut)
	if err == nil || strings.Contains(err.Error(), "UPSECRET") || !strings.Contains(err.Error(), "postgres://u@127.0.0.1:1/app") {
		t.Fatalf("POSTGRES:// URL: %v, want PostgreSQL's connection error without the password", err)
	}
}

func TestOtherSettingsThatWouldSilentlyTurnSomethingOff(t *testing.T) {
	var out, errOut bytes.Buffer
	db := filepath.Join(t.TempDir(), "s.db")
	// A USERSVC_TOKEN of white space served with no token at all.
	err := run(t.Context(), []string{"usersvc", "-db", db, "-addr", "127.0.0.1:0"}, envOf("USERSVC_TOKEN", " \n"), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "USERSVC_TOKEN is set but blank") {
		t.Fatalf("a blank USERSVC_TOKEN: %v", err)
	}
	// NaN passed "< 0" and turned the rate limit off.
	for _, rate := range []string{"NaN", "+Inf"} {
		err := run(t.Context(), []string{"usersvc", "-db", db, "-rate-limit", rate}, envOf(), &out, &errOut)
		if err == nil || exitCode(err) != 2 {
			t.Fatalf("-rate-limit %s: %v, want a usage error", rate, err)
		}
	}
	// An operand that looks like a flag was taken for a file name.
	for _, args := range [][]string{{"backup", "-h"}, {"backup", "--help"}, {"copy", "-h", "x.db"}, {"copy", "x.db", "-h"}} {
		err := run(t.Context(), append([]string{"usersvc", "-db", db}, args...), envOf(), &out, &errOut)
		if err == nil || exitCode(err) != 2 {
			t.Fatalf("%v: %v, want a usage error", args, err)
		}
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused start made its database: %v", err)
	}
}

func TestAStartErrorIsOneLine(t *testing.T) {
	var out bytes.Buffer
	reportError(&out, "text", errors.New("database postgres://u@nowhere.invalid:5432/app: failed to connect:\n\thostname resolving error: no such host\n\tlookup: no such host"))
	if got := out.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "failed to connect: hostname resolving error: no such host lookup") {
		t.Fatalf("%q, want one line", got)
	}
}

func TestAStopWithARequestStalledEndsCleanly(t *testing.T) {
	// Found in review: a client trickling its body when the stop began kept
	// its connection busy past the 30 s wait, and the stop ended with
	// exit 1 and no "stopped" line.
	defer func(d time.Duration) { shutdownWait = d }(shutdownWait)
	shutdownWait = 300 * time.Millisecond
	base, logs, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "s.db")}, envOf())
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /api/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	time.Sleep(50 * time.Millisecond) // the request is being read
	t0 := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("a stop with a request stalled: %v, want nil", err)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("the stop took %v", took)
	}
	if !strings.Contains(logs.String(), "connections still busy after 300ms are closed") || !strings.Contains(logs.String(), "msg=stopped") {
		t.Fatalf("log:\n%s", logs)
	}
}

func TestMoreStartMistakesAreNamed(t *testing.T) {
	var out, errOut bytes.Buffer
	dir := t.TempDir()
	db := filepath.Join(dir, "m.db")
	for _, c := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"-db", db, "-addr", "127.0.0.1:99999"}, "the port must be 0 to 65535", 2},
		{[]string{"-db", "/dev/null", "-addr", "127.0.0.1:0"}, "database path /dev/null is not a regular file", 1},
	} {
		err := run(t.Context(), append([]string{"usersvc"}, c.args...), envOf(), &out, &errOut)
		if err == nil || exitCode(err) != c.code || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%v: %v (exit %d), want %q and exit %d", c.args, err, exitCode(err), c.want, c.code)
		}
	}
	// -log-format takes JSON as -log-level takes WARN.
	_, logs, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", db, "-log-format", "JSON", "-log-level", "INFO"}, envOf())
	stop()
	if strings.Contains(logs.String(), "msg=") {
		t.Fatalf("-log-format JSON did not log JSON: %s", logs)
	}
}

func TestAnUpgradeAtStartIsSaidBeforeItRuns(t *testing.T) {
	// Found in review: a 25 s upgrade of a large file logged nothing; the
	// port stayed closed, and the operator saw a silent process.
	onlySQLite(t, "a file an older usersvc left")
	path := filepath.Join(t.TempDir(), "v2.db")
	openAtVersion(t, path, 2).Close()
	_, logs, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", path}, envOf())
	stop()
	want := fmt.Sprintf("from=2 to=%d", schemaVersion())
	if l := logs.String(); !strings.Contains(l, "upgrading the database's schema") || !strings.Contains(l, want) || strings.Index(l, "upgrading") > strings.Index(l, "msg=serving") {
		t.Fatalf("log:\n%s\nwant an upgrade line with %s before the serving line", l, want)
	}
	// A new file is made, not upgraded: no such line.
	_, logs, stop = startRun(t, []string{"-addr", "127.0.0.1:0", "-db", filepath.Join(t.TempDir(), "new.db")}, envOf())
	stop()
	if strings.Contains(logs.String(), "upgrading") {
		t.Fatalf("a new file's start said it upgraded:\n%s", logs)
	}
}
