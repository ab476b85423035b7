// copy_test.go: usersvc copy between SQLite files (always) — whole or
// absent, refusing a destination that holds anything. The copy to
// PostgreSQL and back is in postgres_test.go.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// seedCopySource fills a new SQLite database at path with n users (ten
// distinct passwords, hashed with the test parameters) and two goals each,
// and returns each username's password.
func seedCopySource(t *testing.T, path string, n int) map[string]string {
	t.Helper()
	st, err := openStore(context.Background(), path, storeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := newTestHasher()
	var hashes, plain []string
	for i := 0; i < 10; i++ {
		pw := fmt.Sprintf("password number %d", i)
		phc, err := h.Hash(context.Background(), "seed", pw)
		if err != nil {
			t.Fatal(err)
		}
		hashes, plain = append(hashes, phc), append(plain, pw)
	}
	tx, err := st.eng.adminDB().BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit a no-op
	passwords := map[string]string{}
	var users, goals [][]any
	// Users go in before their goals (the foreign key), a batch at a time.
	flush := func(force bool) {
		if !force && len(goals) < copyBatch {
			return
		}
		for _, b := range []struct {
			table copyTable
			rows  *[][]any
		}{{copyTables[0], &users}, {copyTables[1], &goals}} {
			if len(*b.rows) == 0 {
				continue
			}
			if err := insertRows(context.Background(), tx, b.table, *b.rows); err != nil {
				t.Fatal(err)
			}
			*b.rows = (*b.rows)[:0]
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; i < n; i++ {
		id, _ := newID()
		name := fmt.Sprintf("copy%05d", i)
		passwords[name] = plain[i%10]
		created, modified := formatTime(at.Add(time.Duration(i)*time.Millisecond)), formatTime(at.Add(time.Hour+time.Duration(i)*time.Second))
		var email, fullName *string
		if i%3 != 0 {
			e := fmt.Sprintf("Copy%d@Exämple.com", i)
			email = &e
		}
		if i%2 == 0 {
			f := fmt.Sprintf("Copy «%d» \u2028 \"quoted\"", i)
			fullName = &f
		}
		users = append(users, []any{id, name, foldKey(name), email, emailKey(email), fullName, hashes[i%10], int64(1 + i%7), created, modified})
		for g := 0; g < 2; g++ {
			gid, _ := newID()
			var desc *string
			if g == 0 {
				d := strings.Repeat("ü", i%50)
				desc = &d
			}
			goals = append(goals, []any{gid, id, fmt.Sprintf("goal %d of %s", g, name), []string{"day", "week"}[g], 1 + i%10080, desc, int64(1 + g), created, modified})
		}
		flush(false)
	}
	flush(true)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return passwords
}

func TestCopyIsWholeAndRefusesANonEmptyDestination(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.db"), filepath.Join(dir, "dst.db")
	seedCopySource(t, src, 1200)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"usersvc", "copy", src, dst}, envOf(), &out, io.Discard); err != nil {
		t.Fatalf("copy: %v", err)
	}
	if !strings.Contains(out.String(), "copied 1200 users and 2400 goals from "+src+" to "+dst) {
		t.Fatalf("copy said %q", out.String())
	}
	a := newTestServerAt(t, testConfig(), src, errorLogger(t), storeOptions{})
	b := newTestServerAt(t, testConfig(), dst, errorLogger(t), storeOptions{})
	for next := "/api/users?limit=500&show=email,full_name,goals.description"; next != ""; {
		ra, rb := a.do(t, "GET", next, ""), b.do(t, "GET", next, "")
		if !bytes.Equal(ra.body, rb.body) || ra.header.Get("ETag") != rb.header.Get("ETag") {
			t.Fatalf("%s differs between the source and its copy", next)
		}
		next = nextLink(t, ra.header.Get("Link"))
	}
	// A destination a server holds is refused by its lock; one that holds
	// anything is refused, and nothing is written to it.
	err := run(context.Background(), []string{"usersvc", "copy", src, dst}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "in use by another usersvc") {
		t.Fatalf("a copy into a database a server holds: %v", err)
	}
	b.Close()
	b.store.Close()
	err = run(context.Background(), []string{"usersvc", "copy", src, dst}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "1200 users") {
		t.Fatalf("a copy into a non-empty database: %v", err)
	}
	b = newTestServerAt(t, testConfig(), dst, errorLogger(t), storeOptions{})
	var n int
	b.sqlGet(t, &n, "SELECT count(*) FROM goals")
	if n != 2400 {
		t.Fatalf("the refused copy changed the destination: %d goals", n)
	}
	if err := run(context.Background(), []string{"usersvc", "copy", src}, envOf(), io.Discard, io.Discard); err == nil || exitCode(err) != 2 {
		t.Fatalf("copy with one argument: %v, want a usage error", err)
	}
}

func TestCopyLeavesSourceAndRefusedDestinationAsTheyWere(t *testing.T) {
	dir := t.TempDir()
	copyTo := func(src, dst string) error {
		return run(context.Background(), []string{"usersvc", "copy", src, dst}, envOf(), io.Discard, io.Discard)
	}
	// A mistyped source is an error, not a new empty database copied.
	missing, dst := filepath.Join(dir, "mistyped.db"), filepath.Join(dir, "dst.db")
	if err := copyTo(missing, dst); err == nil || !strings.Contains(err.Error(), "no database at "+missing) {
		t.Fatalf("copy from a missing file: %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the missing source was created: %v", err)
	}
	// A source that is not a usersvc database is refused, unmigrated.
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := copyTo(empty, dst); err == nil || !strings.Contains(err.Error(), "not a usersvc database") {
		t.Fatalf("copy from an empty file: %v", err)
	}
	if v := userVersion(t, empty); v != 0 {
		t.Fatalf("the refused source was migrated to version %d", v)
	}
	if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a copy refused for its source made the destination: %v", err)
	}
	// A destination an older usersvc left, holding users, is refused before
	// its schema is touched.
	src, old := filepath.Join(dir, "src.db"), filepath.Join(dir, "old.db")
	seedCopySource(t, src, 3)
	db := openAtVersion(t, old, 1)
	if _, err := db.Exec(`INSERT INTO users (id, username, password_hash, created_at, modified_at)
		VALUES ('01939f5e-0000-7000-8000-000000000001', 'old', 'x', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := copyTo(src, old); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("copy into an old, non-empty database: %v", err)
	}
	if v := userVersion(t, old); v != 1 {
		t.Fatalf("the refused destination was migrated to version %d", v)
	}
}

// seedCopySourceToEdit is seedCopySource, then the file opened as it is
// (closed at the end of the test at the latest), for a test to write into
// it what an older usersvc could have stored.
func seedCopySourceToEdit(t *testing.T, path string, n int) *sqlx.DB {
	t.Helper()
	seedCopySource(t, path, n)
	db, err := sqlx.Open("sqlite", dsn(path, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// userVersion reads the schema version of the SQLite file at path.
func userVersion(t *testing.T, path string) int {
	t.Helper()
	db, err := sqlx.Open("sqlite", dsn(path, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.Get(&v, "PRAGMA user_version"); err != nil {
		t.Fatal(err)
	}
	return v
}

// A copy only reads its source: a backup (a file in rollback-journal
// mode, no server on it) is left byte for byte as it was, with no WAL
// files beside it.
func TestCopyFromABackupLeavesItAsItWas(t *testing.T) {
	onlySQLite(t, "a backup is a SQLite file")
	dir := t.TempDir()
	src, bak, dst := filepath.Join(dir, "src.db"), filepath.Join(dir, "backup.db"), filepath.Join(dir, "dst.db")
	seedCopySource(t, src, 3)
	if err := backupSQLite(context.Background(), src, bak); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(bak)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"usersvc", "copy", bak, dst}, envOf(), &out, io.Discard); err != nil {
		t.Fatalf("copy from a backup: %v", err)
	}
	if !strings.Contains(out.String(), "3 users") {
		t.Fatalf("copy said %q; want 3 users copied", out.String())
	}
	after, err := os.ReadFile(bak)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("the copy changed its source, a backup (%d bytes before, %d after)", len(before), len(after))
	}
	for _, side := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Stat(bak + side); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the copy left %s beside its source: %v", bak+side, err)
		}
	}
}

// A destination that holds tables of something else is not usersvc's to
// fill: the copy is refused and the file keeps only what it had.
// A source two of whose users have one email as this usersvc compares
// them (stored by a version that compared otherwise, and not upgraded)
// stops the copy with a message that says what to do, not a bare UNIQUE
// error; doing it names them.
func TestCopyOfUsersThatNowCollideSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db := seedCopySourceToEdit(t, src, 3)
	_, err := db.Exec(`UPDATE users SET email = 'one@example.com' || substr('.', 1, (SELECT count(*) FROM users u WHERE u.id < users.id)),
		email_key = 'one@example.com' || substr('.', 1, (SELECT count(*) FROM users u WHERE u.id < users.id)) WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 2)`)
	if err == nil {
		_, err = db.Exec("PRAGMA user_version = 4") // as the version before step 5 left it
	}
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst.db")
	err = run(context.Background(), []string{"usersvc", "copy", src, dst}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "start this usersvc on the source once, which names them") {
		t.Fatalf("copy of two users with one mailbox: %v", err)
	}
	if _, err := openStore(context.Background(), src, storeOptions{}); err == nil || !strings.Contains(err.Error(), `"one@example.com."`) {
		t.Fatalf("starting on the source: %v, want the users named", err)
	}
}

func TestCopyRefusesADatabaseOfSomethingElse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	seedCopySource(t, src, 2)
	other := testDB(t)
	var db *sqlx.DB
	var err error
	if testBackend == "postgres" {
		db, err = sqlx.Open("pgx", other)
	} else {
		db, err = sqlx.Open("sqlite", dsn(other, nil, nil))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE invoices (number integer PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"usersvc", "copy", src, other}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "not a usersvc database") {
		t.Fatalf("copy into a database of something else: %v; want it refused as not a usersvc database", err)
	}
	var tables int
	q := "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
	if testBackend == "postgres" {
		q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
	}
	if err := db.Get(&tables, q); err != nil {
		t.Fatal(err)
	}
	if tables != 1 {
		t.Fatalf("the refused destination has %d tables; want only the 1 it had", tables)
	}
}

func TestAnInterruptedCopyOrBackupSaysSoAndLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	src, dst, backup := filepath.Join(dir, "src.db"), filepath.Join(dir, "dst.db"), filepath.Join(dir, "backup.db")
	seedCopySource(t, src, 10)
	stopped, stop := context.WithCancel(context.Background())
	stop() // as Ctrl-C does to run's context
	err := run(stopped, []string{"usersvc", "copy", src, dst}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "copy: interrupted, nothing was committed to "+dst) {
		t.Fatalf("an interrupted copy: %v", err)
	}
	if _, err := os.Stat(dst); err == nil {
		var n int
		b := newTestServerAt(t, testConfig(), dst, errorLogger(t), storeOptions{})
		b.sqlGet(t, &n, "SELECT count(*) FROM users")
		if n != 0 {
			t.Fatalf("the interrupted copy left %d users", n)
		}
	}
	err = run(stopped, []string{"usersvc", "-db", src, "backup", backup}, envOf(), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "backup: interrupted, no backup was written") {
		t.Fatalf("an interrupted backup: %v", err)
	}
	for _, p := range []string{backup, backup + ".partial"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the interrupted backup left %s: %v", p, err)
		}
	}
}
