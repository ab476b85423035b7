// sqlite.go: the SQLite engine: the file (its checks, modes and lock), one
// writer connection fed by group commit, a read-only pool, error codes,
// the schema version in PRAGMA user_version, and backups.
package main

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed schema_sqlite.sql
var sqliteSchema string

func init() {
	// sqlx does not know the modernc driver's name; its placeholders are "?".
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
}

// sqliteEngine owns one database file: a single writer connection that
// commits writes in groups (runWriter) and a pool of read-only
// connections. WAL lets the readers run while the writer commits.
type sqliteEngine struct {
	path    string
	file    os.FileInfo // the file at path when it was opened: see checkFile
	writeDB *sqlx.DB
	readDB  *sqlx.DB      // database/sql reads: copy's snapshot
	reads   *sqliteReader // the request path's reads (sqlite_reader.go)
	locks   *fileLocks    // held while serving; nil otherwise

	writeStmts sync.Map // *sql.Stmt on writeDB, by query text
	noted      sync.Map // query texts to prepare when the writer is free

	ops        chan *writeOp
	stopping   chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// readConns is the size of the read pool: enough for reads to overlap on
// 2 cores while one waits on the disk. Each holds its own SQLite page cache
// (1 MiB: readerPragmas), which counts against the 64 MiB RSS budget.
const readConns = 4

// dbFileMode is the mode of the database and, since SQLite gives its WAL
// and shared-memory files the mode of the database, of those too: they
// hold emails and password hashes.
const dbFileMode = 0o600

// sqlitePragmas are set on every connection through the DSN, so each pooled
// connection gets them: WAL so readers never block the writer, FULL so an
// acknowledged commit survives a power cut, foreign keys for the cascades,
// and a busy timeout so a lock held elsewhere fails a write after a while
// instead of at once or never.
func sqlitePragmas(busy int64) []string {
	return []string{"busy_timeout(" + strconv.FormatInt(busy, 10) + ")", "foreign_keys(1)", "journal_mode(WAL)", "synchronous(FULL)"}
}

// dsn builds a modernc.org/sqlite DSN for path with the pragmas and extra
// parameters.
func dsn(path string, pragmas []string, extra url.Values) string {
	q := url.Values{"_pragma": pragmas}
	for k, v := range extra {
		q[k] = append(q[k], v...)
	}
	return uriPath(path) + "?" + q.Encode()
}

// uriPath is path as a SQLite file: URI, escaping the characters a URI
// gives meaning to ("%", "?" and "#"), so any file name opens that file.
func uriPath(path string) string {
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

// openSQLite opens (creating when missing, readable by the owner only) the
// database file at path and starts its writer. With opts.exclusive it
// first takes the file's lock, so a second server on the same file is
// refused: each server's cache assumes it sees every write.
func openSQLite(ctx context.Context, path string, opts storeOptions) (*sqliteEngine, error) {
	if err := checkDBPath(path); err != nil {
		return nil, err
	}
	if err := createPrivate(path); err != nil {
		return nil, err
	}
	file, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	e := &sqliteEngine{path: path, file: file, ops: make(chan *writeOp), stopping: make(chan struct{}), writerDone: make(chan struct{})}
	if opts.exclusive {
		locks, err := lockFiles(path)
		if err != nil {
			return nil, err
		}
		e.locks = locks
	}
	if err := refuseForeignDatabase(ctx, path); err != nil {
		e.unlock()
		return nil, err
	}
	pragmas := sqlitePragmas(opts.statementTimeout.Milliseconds())
	// The writer's page cache is 1 MiB too (SQLite's default is 2): a
	// write touches a few pages of one row, and the OS caches the file.
	// It keeps peak RSS at 1M users about 2 MiB lower, at no measured cost.
	writerPragmas := append(slices.Clip(pragmas), "cache_size(-1024)")
	if e.writeDB, err = sqlx.Open("sqlite", dsn(path, writerPragmas, url.Values{"_txlock": {"immediate"}})); err != nil {
		e.unlock()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	e.writeDB.SetMaxOpenConns(1)
	e.writeDB.SetMaxIdleConns(1)
	e.writeDB.SetConnMaxLifetime(0)
	e.writeDB.SetConnMaxIdleTime(0)
	if e.readDB, err = sqlx.Open("sqlite", dsn(path, append(pragmas, "query_only(1)"), nil)); err != nil {
		e.writeDB.Close()
		e.unlock()
		return nil, fmt.Errorf("open database %s for reading: %w", path, err)
	}
	e.readDB.SetMaxOpenConns(readConns)
	e.readDB.SetMaxIdleConns(1)
	e.readDB.SetConnMaxIdleTime(time.Minute)
	e.reads = newSQLiteReader(path, readConns, int(opts.statementTimeout.Milliseconds()))
	e.reads.checkFile = e.checkFile
	if e.locks != nil {
		if err := e.lockLog(ctx); err != nil {
			e.readDB.Close()
			e.writeDB.Close()
			e.unlock()
			return nil, err
		}
	}
	go e.runWriter()
	return e, nil
}

// lockLog has SQLite open the write-ahead log (a read does), then locks
// it: see fileLocks.
func (e *sqliteEngine) lockLog(ctx context.Context) error {
	var tables int
	if err := e.writeDB.GetContext(ctx, &tables, "SELECT count(*) FROM sqlite_schema"); err != nil {
		return fmt.Errorf("open database %s: %w", e.path, describeOpenError(err))
	}
	return e.locks.lockLog()
}

// checkDBPath gives a clear error for the mistakes SQLite reports badly: a
// missing folder, a path that is a folder, a file we may not read and write.
func checkDBPath(path string) error {
	dir := filepath.Dir(path)
	switch st, err := os.Stat(dir); {
	case errors.Is(err, os.ErrNotExist) || err == nil && !st.IsDir():
		return fmt.Errorf("database folder %s does not exist", dir)
	case err != nil:
		return fmt.Errorf("cannot reach the database folder: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil // missing: it will be created
	}
	if st.IsDir() {
		return fmt.Errorf("database path %s is a folder, not a file", path)
	}
	if !st.Mode().IsRegular() { // /dev/null: SQLite fails late, and leaves a journal in /dev
		return fmt.Errorf("database path %s is not a regular file", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cannot read and write the database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	// SQLite makes its -wal and -shm beside the file; in a folder it may
	// not write in, it said "attempt to write a readonly database" of a
	// file that is writable.
	if err := syscall.Access(dir, 0o2|0o1); err != nil { // W_OK|X_OK
		return fmt.Errorf("cannot write in the database folder %s (SQLite makes %s-wal and -shm there): %w", dir, filepath.Base(path), err)
	}
	return nil
}

// refuseForeignDatabase returns an error unless the file at path is empty
// (a new database) or a usersvc database: one with a schema version in
// user_version and every table and column usersvc's schema has at that
// version (the migrations create them and set the version in one
// transaction; an operator's own extra tables are fine). Anything else is
// another application's database, given to -db by mistake, and opening it
// for writing would switch it to WAL and add usersvc's tables and columns
// beside its own; a version newer than this binary knows is refused here
// too, for the same reason. So the file is only read: without locks or
// side files when it has no WAL (immutable), else read-only (a usersvc
// database left by a crash has its schema in the WAL), waiting out
// another program's write lock.
func refuseForeignDatabase(ctx context.Context, path string) error {
	params := url.Values{"mode": {"ro"}}
	if _, err := os.Stat(path + "-wal"); errors.Is(err, os.ErrNotExist) {
		params.Set("immutable", "1")
	}
	db, err := sqlx.Open("sqlite", dsn(path, []string{"busy_timeout(5000)"}, params))
	if err != nil {
		return fmt.Errorf("open database %s: %w", path, err)
	}
	defer db.Close()
	version, err := sqliteSchemaVersion(ctx, db)
	if err != nil {
		return fmt.Errorf("database %s: %w", path, err)
	}
	tables, err := sqliteTables(ctx, db)
	if err != nil {
		return fmt.Errorf("database %s: %w", path, describeOpenError(err))
	}
	if version == 0 && len(tables) == 0 {
		return nil // new: migrate creates the schema
	}
	lacks, err := missingSchema(ctx, db, tables, version)
	if err != nil {
		return fmt.Errorf("database %s: %w", path, describeOpenError(err))
	}
	if lacks != "" {
		return fmt.Errorf("%s is not a usersvc database (%s, user_version %d: %s): usersvc leaves another application's database as it is; use a new file",
			path, describeTables(tables), version, lacks)
	}
	if version > schemaVersion() {
		return fmt.Errorf("database %s: schema version %d is newer than this binary knows (%d): use a newer usersvc", path, version, schemaVersion())
	}
	return nil // ours: migrate brings it up to date
}

// missingSchema names what the database read by q, holding tables at
// schema version, lacks of usersvc's schema at that version (of the newest
// this binary knows, for a newer one): the version, a table, or a column
// of one. It is "" when nothing is missing. Only usersvc's tables are
// read: an operator's own, even a broken view, are none of its business.
func missingSchema(ctx context.Context, q sqlx.QueryerContext, tables []string, version int) (string, error) {
	if version == 0 {
		return "no schema version", nil
	}
	want, err := sqliteSchemaAt(ctx, min(version, schemaVersion()))
	if err != nil {
		return "", err
	}
	for _, table := range slices.Sorted(maps.Keys(want)) {
		if !slices.Contains(tables, table) {
			return fmt.Sprintf("no table %q", table), nil
		}
		columns, err := sqliteColumnsOf(ctx, q, table)
		if err != nil {
			return "", err
		}
		for _, c := range want[table] {
			if !slices.Contains(columns, c) {
				return fmt.Sprintf("no column %q in table %q", c, table), nil
			}
		}
	}
	return "", nil
}

// sqliteSchemaAt returns the tables usersvc's SQLite schema has at
// version, each with its columns: the steps up to version, applied to an
// empty database in memory.
func sqliteSchemaAt(ctx context.Context, version int) (map[string][]string, error) {
	steps, err := parseMigrations(sqliteSchema)
	if err != nil {
		return nil, err
	}
	db, err := sqlx.Open("sqlite", ":memory:")
	if err != nil {
		return nil, fmt.Errorf("open a database in memory: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // each connection would have a database of its own
	for _, step := range steps[:version] {
		if _, err := db.ExecContext(ctx, step.sql); err != nil {
			return nil, fmt.Errorf("schema version %d (%s): %w", step.version, step.name, err)
		}
	}
	tables, err := sqliteTables(ctx, db)
	if err != nil {
		return nil, err
	}
	schema := make(map[string][]string, len(tables))
	for _, t := range tables {
		if schema[t], err = sqliteColumnsOf(ctx, db, t); err != nil {
			return nil, err
		}
	}
	return schema, nil
}

// sqliteColumnsOf names the columns of table in the database read by q.
func sqliteColumnsOf(ctx context.Context, q sqlx.QueryerContext, table string) ([]string, error) {
	var names []string
	if err := sqlx.SelectContext(ctx, q, &names, "SELECT name FROM pragma_table_info(?)", table); err != nil {
		return nil, fmt.Errorf("read the columns of %q: %w", table, err)
	}
	return names, nil
}

// describeTables names the first few of tables, for a message.
func describeTables(tables []string) string {
	if len(tables) == 0 {
		return "no tables"
	}
	quoted := make([]string, 0, 3)
	for _, t := range tables[:min(3, len(tables))] {
		quoted = append(quoted, strconv.Quote(t))
	}
	if len(tables) > 3 {
		quoted = append(quoted, fmt.Sprintf("and %d more", len(tables)-3))
	}
	return "tables " + strings.Join(quoted, ", ")
}

// createPrivate creates path as an empty file readable and writable by the
// owner only, whatever the umask, unless it exists already.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, dbFileMode)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	defer f.Close()
	if err := f.Chmod(dbFileMode); err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	return nil
}

// fileLocks are the exclusive flocks a serving usersvc holds: on the
// database file, and on its write-ahead log. SQLite's own locks are fcntl
// locks, which flock does not touch, so readers such as usersvc backup
// still work while they are held. The database file alone is not enough: a
// file restored over the path while a server runs is a new file, free to
// lock, but the log beside it is still the running server's, and a second
// server would apply it to the restored file.
type fileLocks struct {
	db, wal *os.File // wal is nil until the log exists (see lockLog)
	walPath string   // where SQLite keeps the log: beside the file a symlink at -db names
}

// lockFiles takes the lock on the database at path, and on its log if
// there is one, or says another usersvc holds them. It never creates the
// log: SQLite takes a database with a log beside it for a WAL database.
func lockFiles(path string) (*fileLocks, error) {
	db, err := flockFile(path)
	if err != nil {
		return nil, err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		real = path
	}
	l := &fileLocks{db: db, walPath: real + "-wal"}
	if err := l.lockLog(); err != nil {
		db.Close()
		return nil, err
	}
	return l, nil
}

// lockLog takes the lock on the database's log once it exists, if it is
// not held yet. A serving usersvc keeps its log from its first read to its
// stop, so a second server always finds it.
func (l *fileLocks) lockLog() error {
	if l.wal != nil {
		return nil
	}
	wal, err := flockFile(l.walPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l.wal = wal
	return err
}

// flockFile opens path and takes an exclusive flock on it without waiting.
func flockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(path, "-wal") {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("open %s to lock it: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("database %s is in use by another usersvc: stop that one first (usersvc backup works while it runs)", strings.TrimSuffix(path, "-wal"))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// unlock releases the locks exclusive took, if any.
func (e *sqliteEngine) unlock() {
	if l := e.locks; l != nil {
		if l.wal != nil {
			l.wal.Close() // closing a descriptor releases its flock
		}
		l.db.Close()
	}
}

// dropOrphanedLog runs at the stop, once the writer is the only
// connection of this server left. When the file was removed or replaced
// while the server ran, SQLite does not write the log back into the file at
// its close (it is no longer at the path), and the next start would apply
// the log to the file now there: pages of one database onto another (a
// restored backup came up corrupt). So the log is written into the file the
// server has open, wherever it is now (moved aside, it then holds every
// acknowledged write: removing the log alone lost them), and then removed
// with the shared memory. When it cannot be written in (another process
// holds a read transaction on it: a report, a backup), it is moved aside
// instead, never left at the path. It returns nil when there was nothing
// to do, else an errOrphanedLog saying what became of the log.
func (e *sqliteEngine) dropOrphanedLog() error {
	if e.locks == nil || e.locks.wal == nil || e.checkFile() == nil {
		return nil
	}
	ours, err := e.locks.wal.Stat()
	if err != nil || !isFileAt(ours, e.locks.walPath) {
		return nil // not ours: a newer server's, or gone
	}
	wal, shm := e.locks.walPath, strings.TrimSuffix(e.locks.walPath, "-wal")+"-shm"
	var busy, frames, done int
	err = e.writeDB.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &done)
	if err == nil && busy == 0 {
		os.Remove(shm) //nolint:errcheck // rebuilt at the next start
		if err := os.Remove(wal); err != nil {
			return fmt.Errorf("%w, and its write-ahead log, written into it, could not be removed from %s: remove it and %s before the next start (%v)", errOrphanedLog, wal, shm, err)
		}
		return fmt.Errorf("%w: its write-ahead log was written into that file (wherever it is now) and removed from the path, so that the next start does not apply it to the file now there", errOrphanedLog)
	}
	if err == nil {
		err = errors.New("another process holds a read transaction on it")
	}
	aside := wal + ".of-the-replaced-file"
	if rerr := os.Rename(wal, aside); rerr != nil {
		return fmt.Errorf("%w, and its write-ahead log could not be written into it (%v) nor moved aside (%v): remove %s and %s before the next start, or it will be applied to the file now there", errOrphanedLog, err, rerr, wal, shm)
	}
	os.Remove(shm) //nolint:errcheck // rebuilt at the next start
	return fmt.Errorf("%w: its write-ahead log could not be written into it (%v), so it was moved to %s, away from the file now at the path; if the file was moved aside rather than replaced, put it back with this log beside it (as %s) before starting on it",
		errOrphanedLog, err, aside, filepath.Base(wal))
}

// isFileAt reports whether the file at path is f.
func isFileAt(f os.FileInfo, path string) bool {
	at, err := os.Stat(path)
	return err == nil && os.SameFile(f, at)
}

func (e *sqliteEngine) describe() string { return e.path }
func (e *sqliteEngine) forUpdate() string {
	return "" // one writer: a write transaction already excludes every other
}

// abortsOnError is false: SQLite undoes a failed statement and the
// transaction goes on.
func (e *sqliteEngine) abortsOnError() bool { return false }

// txExec runs a statement in the write transaction, through the writer
// connection's kept prepared statement for query when there is one:
// parsing SQL costs more than running these. The first time a query comes,
// it runs unprepared and is noted; the writer prepares it between batches
// (prepareNoted), when its one connection is free.
func (e *sqliteEngine) txExec(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (sql.Result, error) {
	if st, ok := e.writeStmts.Load(query); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).ExecContext(ctx, args...)
	}
	e.noted.Store(query, true)
	return tx.ExecContext(ctx, query, args...)
}

// txQueryRow is txExec for a query that returns one row.
func (e *sqliteEngine) txQueryRow(ctx context.Context, tx *sqlx.Tx, query string, args ...any) *sql.Row {
	if st, ok := e.writeStmts.Load(query); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).QueryRowContext(ctx, args...)
	}
	e.noted.Store(query, true)
	return tx.QueryRowContext(ctx, query, args...)
}

// prepareNoted prepares on the writer connection the write queries seen
// unprepared. The writer calls it between batches: inside a transaction
// the one connection is taken. The write queries are a small, fixed set.
func (e *sqliteEngine) prepareNoted() {
	e.noted.Range(func(q, _ any) bool {
		e.noted.Delete(q)
		if st, err := e.writeDB.Prepare(q.(string)); err == nil {
			e.writeStmts.Store(q, st)
		}
		return true
	})
}

// pools is the writer only: a server's reads run on the reader's own
// connections (sqlite_reader.go), outside database/sql, and readDB serves
// only copy's snapshot.
func (e *sqliteEngine) pools() map[string]*sql.DB {
	return map[string]*sql.DB{"writer": e.writeDB.DB}
}

// close stops taking writes, commits the ones queued, closes the pools
// and releases the file lock.
func (e *sqliteEngine) close() error {
	e.closeOnce.Do(func() {
		close(e.stopping)
		<-e.writerDone
		e.writeStmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
		e.reads.close()
		e.closeErr = errors.Join(e.readDB.Close(), e.dropOrphanedLog())
		e.closeErr = errors.Join(e.closeErr, e.writeDB.Close())
		e.unlock()
	})
	return e.closeErr
}

// sqliteCode is the extended SQLite result code inside err (from the
// driver, or from the read path), or 0.
func sqliteCode(err error) int {
	var de *sqlite.Error
	var re *sqliteError
	switch {
	case errors.As(err, &de):
		return de.Code()
	case errors.As(err, &re):
		return re.code
	}
	return 0
}

// query runs a read on the read path's pool (sqlite_reader.go).
func (e *sqliteEngine) query(ctx context.Context, query string, keep bool, args ...any) (rowsIter, error) {
	return e.reads.query(ctx, query, keep, args...)
}

// beginRead begins a read transaction on the read pool.
func (e *sqliteEngine) beginRead(ctx context.Context) (readTx, error) {
	return e.reads.begin(ctx)
}

// classify marks the failures that mean the database cannot take the work
// now (read-only, full, I/O, locked elsewhere past the busy timeout) as
// unavailable, so clients get 503 and reads go on; a foreign key failure
// can only mean the goal's user is gone.
func (e *sqliteEngine) classify(err error) error {
	if err == nil {
		return nil
	}
	code := sqliteCode(err)
	switch code & 0xff {
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR,
		sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_PERM:
		return unavailable(err)
	}
	switch {
	case code == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return errUserNotFound
	case errors.Is(err, errStoreClosed):
		return unavailable(err)
	}
	return err
}

// isUniqueViolation reports whether err is a UNIQUE constraint failure.
func (e *sqliteEngine) isUniqueViolation(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// ---- migrations ----

func (e *sqliteEngine) schemaSource() string { return sqliteSchema }

// lockSchema has nothing to do: the migration's transaction is IMMEDIATE,
// so it holds the one write lock, and the file lock keeps other servers out.
func (e *sqliteEngine) lockSchema(context.Context, *sqlx.Tx) error { return nil }

func (e *sqliteEngine) schemaVersion(ctx context.Context, tx *sqlx.Tx) (int, error) {
	return sqliteSchemaVersion(ctx, tx)
}

// sqliteSchemaVersion reads the schema version, kept in PRAGMA
// user_version.
func sqliteSchemaVersion(ctx context.Context, q sqlx.QueryerContext) (int, error) {
	var v int
	if err := sqlx.GetContext(ctx, q, &v, "PRAGMA user_version"); err != nil {
		return 0, describeOpenError(err)
	}
	return v, nil
}

func (e *sqliteEngine) tables(ctx context.Context, tx *sqlx.Tx) ([]string, error) {
	return sqliteTables(ctx, tx)
}

// sqliteTables names the tables and views in the file, but SQLite's own.
func sqliteTables(ctx context.Context, q sqlx.QueryerContext) ([]string, error) {
	var names []string
	err := sqlx.SelectContext(ctx, q, &names, `SELECT name FROM sqlite_master
		WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	return names, err
}

func (e *sqliteEngine) setSchemaVersion(ctx context.Context, tx *sqlx.Tx, v int) error {
	_, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(v))
	return err
}

// adminDB is the connection migrations and copy run on: the writer's.
func (e *sqliteEngine) adminDB() *sqlx.DB { return e.writeDB }

// snapshot begins a read transaction: in WAL mode it reads one snapshot,
// taken at its first statement, whatever is written meanwhile.
func (e *sqliteEngine) snapshot(ctx context.Context) (*sqlx.Tx, error) {
	return e.readDB.BeginTxx(ctx, nil)
}

// sqliteSource is a SQLite database a copy reads. It is opened read-only
// and with none of the server's pragmas (journal_mode=WAL would rewrite a
// backup's header and put WAL files beside it), so the file is left as it
// was, byte for byte.
type sqliteSource struct {
	path string
	db   *sqlx.DB
}

// openSQLiteSource opens the database file at path for reading only (it
// may be a file we may not write, such as a backup kept read-only).
func openSQLiteSource(path string) (*sqliteSource, error) {
	db, err := sqlx.Open("sqlite", dsn(path, []string{"busy_timeout(5000)", "query_only(1)"}, url.Values{"mode": {"ro"}}))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return &sqliteSource{path: path, db: db}, nil
}

// snapshot begins a read transaction, which sees one state of the file
// throughout (a WAL snapshot, or a shared lock in rollback-journal mode).
func (s *sqliteSource) snapshot(ctx context.Context) (*sqlx.Tx, error) {
	return s.db.BeginTxx(ctx, nil)
}

func (s *sqliteSource) schemaVersion(ctx context.Context, tx *sqlx.Tx) (int, error) {
	return sqliteSchemaVersion(ctx, tx)
}

func (s *sqliteSource) describe() string { return s.path }
func (s *sqliteSource) close() error     { return s.db.Close() }

// describeOpenError turns SQLite's first-contact failures into a sentence.
func describeOpenError(err error) error {
	switch sqliteCode(err) & 0xff {
	case sqlite3.SQLITE_NOTADB:
		return errors.New("file is not a SQLite database")
	case sqlite3.SQLITE_CANTOPEN:
		return fmt.Errorf("cannot open the file: %w", err)
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
		return fmt.Errorf("cannot write the file: %w", err)
	}
	return fmt.Errorf("open: %w", err)
}

// ---- group commit ----

// maxBatch caps how many writes share one transaction, so one commit never
// waits on an unbounded queue.
const maxBatch = 128

var errStoreClosed = errors.New("store is closed")

// writeOp is one caller's write: fn runs inside the batch transaction, under
// its own savepoint, and err is sent on done once the batch has committed.
type writeOp struct {
	ctx   context.Context
	fn    txFunc
	hooks commitHooks
	done  chan error
}

// write runs fn in a write transaction and returns once that transaction has
// committed (the change is on disk) or failed. fn's changes are undone when
// it returns an error; other writes in the same batch are not affected.
// fn must use the ctx it is given (never the caller's: cancelling one
// statement would roll back the whole shared transaction), must not keep tx,
// and publishes results through its closure.
func (e *sqliteEngine) write(ctx context.Context, fn txFunc, hooks commitHooks) error {
	op := &writeOp{ctx: ctx, fn: fn, hooks: hooks, done: make(chan error, 1)}
	select {
	case e.ops <- op:
	case <-e.stopping:
		return errStoreClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the op may commit: wait for the answer even if ctx ends,
	// so the caller never reports a failure for a write that landed.
	return <-op.done
}

// runWriter takes queued writes and commits them in batches until the store
// stops, then drains what is left.
func (e *sqliteEngine) runWriter() {
	defer close(e.writerDone)
	for {
		select {
		case op := <-e.ops:
			e.commitBatch(e.collectBatch(op))
			e.prepareNoted()
		case <-e.stopping:
			for {
				select {
				case op := <-e.ops:
					e.commitBatch(e.collectBatch(op))
				default:
					return
				}
			}
		}
	}
}

// collectBatch adds to first every write already waiting, up to maxBatch.
func (e *sqliteEngine) collectBatch(first *writeOp) []*writeOp {
	batch := []*writeOp{first}
	for len(batch) < maxBatch {
		select {
		case op := <-e.ops:
			batch = append(batch, op)
		default:
			return batch
		}
	}
	return batch
}

// commitBatch runs each op under its own savepoint in one transaction, then
// commits once and answers every op.
func (e *sqliteEngine) commitBatch(batch []*writeOp) {
	results := make([]error, len(batch))
	err := e.runBatch(batch, results)
	for i, op := range batch {
		if err != nil && results[i] == nil {
			results[i] = err
		}
		if op.hooks.ended != nil { // here, in commit order (see commitHooks)
			op.hooks.ended(results[i] == nil)
		}
		op.done <- results[i]
	}
}

// errFileReplaced answers writes, and fails /healthz, once the file at -db
// is no longer the one usersvc opened.
var errFileReplaced = &Error{Code: codeUnavailable, Message: "the database is unavailable: its file was removed or replaced while usersvc ran (restart usersvc)"}

// errOrphanedLog begins what a stop says of the log of a file removed or
// replaced while the server ran (dropOrphanedLog).
var errOrphanedLog = errors.New("its file was removed or replaced while usersvc ran")

// checkFile returns errFileReplaced when the file at the database's path
// is gone or another file (deleted, or moved or restored over while the
// server ran): SQLite would go on writing to the file it has open, which
// no one opens again, and every write acknowledged from then on would be
// lost at the next start; a new read connection would read the other
// file. One stat, once a write batch and once a read connection opens. A
// file copied over in place stays the same file, and is not detected.
func (e *sqliteEngine) checkFile() error {
	now, err := os.Stat(e.path)
	if err != nil || !os.SameFile(now, e.file) {
		return errFileReplaced
	}
	return nil
}

// runBatch executes the batch; a returned error means nothing committed.
func (e *sqliteEngine) runBatch(batch []*writeOp, results []error) error {
	if err := e.checkFile(); err != nil {
		return err
	}
	// Statements run without the callers' contexts: interrupting one
	// statement would roll back the whole shared transaction.
	ctx := context.Background()
	tx, err := e.writeDB.BeginTxx(ctx, nil)
	if err != nil {
		return e.classify(fmt.Errorf("begin write: %w", err))
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if results[i], err = e.runOp(ctx, tx, op.fn); err != nil {
			return e.classify(err)
		}
	}
	for _, op := range batch {
		if op.hooks.committing != nil {
			op.hooks.committing()
		}
	}
	if err := tx.Commit(); err != nil {
		return e.classify(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// runOp runs fn under a savepoint, again while it asks for a retry, at
// most maxWriteTries times. It returns fn's error, and a second error only
// when the savepoint itself could not be managed (the transaction is then
// unusable: after a full disk or an I/O error SQLite has already rolled
// back the whole transaction).
func (e *sqliteEngine) runOp(ctx context.Context, tx *sqlx.Tx, fn txFunc) (fnErr, err error) {
	for try := 1; ; try++ {
		if _, err := e.txExec(ctx, tx, "SAVEPOINT op"); err != nil {
			return nil, fmt.Errorf("savepoint: %w", err)
		}
		fnErr = fn(ctx, tx)
		if fnErr != nil {
			if _, err := e.txExec(ctx, tx, "ROLLBACK TO SAVEPOINT op"); err != nil {
				return fnErr, fmt.Errorf("rollback to savepoint: %w", err)
			}
		}
		if _, err := e.txExec(ctx, tx, "RELEASE SAVEPOINT op"); err != nil {
			return fnErr, fmt.Errorf("release savepoint: %w", err)
		}
		if !errors.Is(fnErr, errRetry) || try == maxWriteTries {
			return fnErr, nil
		}
	}
}

// ---- backup ----

// backup writes a consistent copy of the database to dst (see
// backupSQLite).
func (e *sqliteEngine) backup(ctx context.Context, dst string) error {
	return backupSQLite(ctx, e.path, dst)
}

// backupSQLite writes a consistent copy of the database at src to dst
// with VACUUM INTO, which reads one snapshot (safe while a server writes).
// The copy is made beside dst, readable by the owner only, and linked into
// place, so dst never holds a partial copy and an existing dst is never
// overwritten.
func backupSQLite(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("database %s: %w", src, err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s already exists: refusing to overwrite it", dst)
	}
	tmp := dst + ".partial"
	release, err := claimPartial(tmp, dst)
	if err != nil {
		return err
	}
	defer release()
	db, err := sqlx.Open("sqlite", dsn(src, nil, url.Values{"mode": {"ro"}}))
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", tmp); err != nil {
		return fmt.Errorf("copy %s: %w", src, describeOpenError(err))
	}
	if err := checkIntegrity(ctx, tmp); err != nil {
		return err
	}
	// On disk before it has its name, and the name on disk before we say
	// done: a crash never leaves a backup that exists but is incomplete.
	if err := syncPath(tmp); err != nil {
		return err
	}
	if err := os.Link(tmp, dst); err != nil {
		return fmt.Errorf("put the copy at %s: %w", dst, err)
	}
	return syncPath(filepath.Dir(dst))
}

// claimPartial makes tmp an empty private file (VACUUM INTO accepts one,
// and keeps its mode) held with a flock until release, which removes it.
// A tmp no one holds is a leftover of a backup that was killed, and is
// taken over with its journal; one held is another backup's, to the same
// dst, running now: the second used to remove the first's file, and both
// failed with messages about the disk.
func claimPartial(tmp, dst string) (release func(), err error) {
	// Not through a symlink: one at tmp would have the copy written over
	// the file it names.
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, dbFileMode)
	if err == nil {
		if st, serr := f.Stat(); serr != nil || !st.Mode().IsRegular() {
			f.Close()
			err = errors.New("it is not a regular file")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", tmp, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another usersvc backup to %s is running", dst)
		}
		return nil, fmt.Errorf("lock %s: %w", tmp, err)
	}
	release = func() {
		os.Remove(tmp + "-journal") //nolint:errcheck // if SQLite left one
		os.Remove(tmp)              //nolint:errcheck // linked to dst by then, or failed
		f.Close()
	}
	os.Remove(tmp + "-journal") //nolint:errcheck // a leftover's, if any
	if err := errors.Join(f.Truncate(0), f.Chmod(dbFileMode)); err != nil {
		release()
		return nil, fmt.Errorf("create %s: %w", tmp, err)
	}
	return release, nil
}

// syncPath flushes the file or directory at path to disk.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// checkIntegrity runs PRAGMA integrity_check and foreign_key_check on the
// database at path.
func checkIntegrity(ctx context.Context, path string) error {
	db, err := sqlx.Open("sqlite", uriPath(path)+"?mode=ro")
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	var result string
	if err := db.GetContext(ctx, &result, "PRAGMA integrity_check"); err != nil {
		return fmt.Errorf("integrity check of %s: %w", path, err)
	}
	if result != "ok" {
		return fmt.Errorf("integrity check of %s: %s", path, result)
	}
	rows, err := db.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("foreign key check of %s: %w", path, err)
	}
	defer rows.Close()
	if rows.Next() {
		return fmt.Errorf("foreign key check of %s: a row points at nothing", path)
	}
	return rows.Err()
}
