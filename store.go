// store.go: every query and write of users and goals, written once for
// both engines ("?" placeholders, rebound for PostgreSQL), and opening a
// database by its -db value. What differs between SQLite and PostgreSQL
// lives behind the engine interface (sqlite.go, postgres.go).
package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/cespare/xxhash/v2"
	"github.com/jmoiron/sqlx"
)

// commitHooks are told of a write transaction's commit. committing runs
// just before the commit is sent, on SQLite only (PostgreSQL has no read
// cache to warn). ended runs once the transaction has ended, before write
// returns; ok says it committed fn's changes. SQLite runs both on its one
// writer, in the order of the commits.
type commitHooks struct {
	committing func()
	ended      func(ok bool)
}

// engine is what differs between the databases: their pools, how a write
// transaction runs, how driver errors are classified, how the schema
// version is kept, and backups.
type engine interface {
	// query runs a read; keep says its text does not vary with the data,
	// so its prepared statement may be kept.
	query(ctx context.Context, query string, keep bool, args ...any) (rowsIter, error)
	// write runs fn in a write transaction and returns once its changes
	// are committed, or failed (then nothing of fn's is kept). When fn
	// returns errRetry, or the database reports a serialization failure,
	// fn runs again on fresh state, a few times at most. hooks are told
	// of the commit (see commitHooks).
	write(ctx context.Context, fn txFunc, hooks commitHooks) error
	// classify turns a driver error into a domain error where it has a
	// domain meaning (unavailable, not found through a foreign key, …)
	// and returns any other error as it is.
	classify(err error) error
	// isUniqueViolation reports whether err is a unique constraint failure.
	isUniqueViolation(err error) bool
	// forUpdate is appended to a SELECT inside a write to lock its rows
	// until commit; "" where writes are serialised anyway.
	forUpdate() string
	// txExec and txQueryRow run a statement with "?" placeholders in a
	// write transaction, its prepared statement kept where that pays.
	txExec(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (sql.Result, error)
	txQueryRow(ctx context.Context, tx *sqlx.Tx, query string, args ...any) *sql.Row
	// abortsOnError reports whether a failed statement aborts the whole
	// transaction (then the store uses savepoints around statements that
	// may fail on purpose).
	abortsOnError() bool
	// Migrations: lock them against other instances, read and set the
	// schema version, and the numbered steps of this engine's schema.
	lockSchema(ctx context.Context, tx *sqlx.Tx) error
	schemaVersion(ctx context.Context, tx *sqlx.Tx) (int, error)
	setSchemaVersion(ctx context.Context, tx *sqlx.Tx, v int) error
	schemaSource() string
	// tables lists the tables the database holds, but the engine's own
	// (SQLite's, the schema version's), sorted.
	tables(ctx context.Context, tx *sqlx.Tx) ([]string, error)
	// adminDB is the pool for work outside the request path: migrations
	// and copy.
	adminDB() *sqlx.DB
	// beginRead begins a read-only transaction for a request's reads (see
	// store.oneRead).
	beginRead(ctx context.Context) (readTx, error)
	// snapshot begins a read-only transaction that sees one consistent
	// state of the database throughout (copy reads its source in one).
	snapshot(ctx context.Context) (*sqlx.Tx, error)
	// backup writes a consistent copy of the database to dst.
	backup(ctx context.Context, dst string) error
	// pools names the connection pools, for metrics.
	pools() map[string]*sql.DB
	// describe is the database for log lines: a path, or a URL without
	// its password.
	describe() string
	// close finishes the writes under way and closes the pools.
	close() error
}

// txFunc is one write: it runs inside a transaction on tx.
type txFunc func(ctx context.Context, tx *sqlx.Tx) error

// errRetry asks the engine to run a write again: the row it read changed
// before its update (the update named a version that is gone).
var errRetry = errors.New("row changed under the write: retry")

// maxWriteTries bounds how often one write runs when rows keep changing.
const maxWriteTries = 8

// store is the database as the handlers see it: users and goals.
type store struct {
	eng      engine
	now      func() time.Time
	maxGoals int

	// onQuery is called for every read statement; tests count them.
	onQuery func()

	// changes counts the writes of each user (and of its goals), in
	// stripes: see Generation.
	changes [changeStripes]atomic.Uint64

	// watcher, when set, is told of each user a write changes (the read
	// cache): see committing and touched.
	watcher atomic.Pointer[writeWatcher]

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
}

// changeStripes is how many generation counters the users share (1 MiB of
// them, so 100,000 users busy at once rarely share one): a write to one
// user also moves the counter of the others in its stripe, which can only
// keep a read of one of them from putting its row in the cache, never
// make an answer stale.
const changeStripes = 1 << 17

// A write moves the generation of each user it changes twice: by
// writePending just before its commit, and by writeEnded once its
// transaction has ended (1<<16 in all). The low 16 bits so count the
// writes committing now (at most a batch's), and the rest the writes done.
const (
	writePending = 1
	writeEnded   = 1<<16 - writePending
	writeDone    = writePending + writeEnded // a write that was never marked pending
)

// A batch's writes, each of one user, must fit in the low 16 bits: this
// does not compile otherwise.
const _ = uint(writeDone - 1 - maxBatch)

// writesPending reports whether a write to a user with generation gen (or
// to one sharing its stripe) is committing: what a read finds of that user
// may be older than the database already is, or about to be.
func writesPending(gen uint64) bool { return gen&(writeDone-1) != 0 }

// Generation is a number that moves with every write to the user with id:
// just before it commits, and again before the writer is answered (on
// SQLite, in the order of the commits). A reader that notes it before
// reading and finds it unchanged later, and no write pending
// (writesPending), knows its answer is still current, as long as this
// process sees every write (SeesEveryWrite).
func (s *store) Generation(userID string) uint64 {
	return s.changes[changeStripe(userID)].Load()
}

// changeStripe is the generation counter of the user with id.
func changeStripe(userID string) uint64 { return xxhash.Sum64String(userID) % changeStripes }

// writeWatcher is told of each user a write changes: pending just before
// the write commits, after the user's generation moved (writesPending is
// then true), and written once the write's transaction has ended, with the
// row it committed (nil when it deleted the user or did not commit) and
// the generation the user now has.
type writeWatcher struct {
	pending func(id string)
	written func(id string, row *User, gen uint64)
}

// committing marks the users a write changed (noted by its fn with
// wtx.touch) as being written, just before its commit: from then until
// touched, what a read finds of them can be older than the database.
func (s *store) committing(users []touchedUser) {
	w := s.watcher.Load()
	for _, u := range users {
		s.changes[changeStripe(u.id)].Add(writePending)
		if w != nil {
			w.pending(u.id)
		}
	}
}

// touched moves the generations of the users a write changed once its
// transaction has ended, taking off the marks committing put (marked says
// it did): before its caller can answer anyone and, on SQLite, in the
// order of the commits. Each user then goes to the watcher with the
// generation it now has and the row the write committed (nil when it
// deleted the user or did not commit): in commit order, so the last row a
// cache is given for a user is the database's.
func (s *store) touched(users []touchedUser, committed, marked bool) {
	w := s.watcher.Load()
	step := uint64(writeDone)
	if marked {
		step = writeEnded
	}
	for _, u := range users {
		gen := s.changes[changeStripe(u.id)].Add(step)
		if w == nil {
			continue
		}
		row := u.row
		if !committed {
			row = nil
		}
		w.written(u.id, row, gen)
	}
}

// touchedUser is a user a write changed, and its row as written (nil when
// the write deleted it).
type touchedUser struct {
	id  string
	row *User
}

// SeesEveryWrite reports whether every write to the database goes through
// this store: on SQLite the file is locked to one server (and there is one
// writer); on PostgreSQL other instances write too, and this one would not
// know.
func (s *store) SeesEveryWrite() bool {
	_, ok := s.eng.(*sqliteEngine)
	return ok
}

// storeOptions tune openStore. Each zero field means its default; serve
// also sets exclusive, limits from its flags.
type storeOptions struct {
	now      func() time.Time // clock of created_at and modified_at; nil is time.Now
	maxGoals int              // goals one user may have; 0 is defaultMaxGoals
	onQuery  func()           // called for every read statement (tests)
	// statementTimeout cuts a statement that waits or runs longer (a lock
	// held elsewhere); 0 is defaultStatementTimeout.
	statementTimeout time.Duration
	maxConns         int  // PostgreSQL pool size; 0 is defaultDBMaxConns
	exclusive        bool // SQLite: refuse a second process serving the file
	// onUpgrade is told before an existing database's schema is upgraded
	// (see migrate); nil for no one.
	onUpgrade func(from, to int)
}

const (
	defaultMaxGoals         = 1000
	defaultStatementTimeout = 5 * time.Second
	defaultDBMaxConns       = 16
)

// isPostgresURL reports whether a -db value names a PostgreSQL server.
// Values pass through checkDBName first, which writes the scheme in lower
// case.
func isPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// urlScheme is RFC 3986's scheme: only such a scheme is quoted back (what
// precedes :// may be a user and password).
var urlScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// postgresTypo is a postgres:// URL with a slash missing (postgres:/u:pw@h),
// which would otherwise be a path whose folder does not exist, named in
// full in the error.
var postgresTypo = regexp.MustCompile(`(?i)^postgres(ql)?:/?[^/]`)

// keywordSettings matches PostgreSQL's key=value connection settings
// (host=… dbname=…), which pgx reads but a -db value is not taken as.
var keywordSettings = regexp.MustCompile(`(^|\s)(host|hostaddr|port|dbname|user|password|sslmode|service)=`)

// checkDBName refuses a database name (-db, or copy's SRC and DST) that
// would be taken for a SQLite file though it is not one, and returns it
// with a URL's scheme in lower case (as RFC 3986 allows it in any case).
// Taken as a file name, a POSTGRES:// URL or key=value settings made a new,
// empty SQLite file, named with the password, and the service served it.
// The errors never quote the name: it may hold a password.
func checkDBName(what, db string) (string, error) {
	if i := strings.IndexFunc(db, unicode.IsControl); i >= 0 {
		return "", usageError{fmt.Sprintf("%s holds a control character at byte %d (a carriage return from a file with Windows line ends?)", what, i)}
	}
	scheme, rest, isURL := strings.Cut(db, "://")
	switch {
	case isURL && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql")):
		return strings.ToLower(scheme) + "://" + rest, nil
	case isURL && urlScheme.MatchString(scheme):
		return "", usageError{fmt.Sprintf("%s is a %s:// URL: give a SQLite file path or a postgres:// URL", what, scheme)}
	case isURL && !strings.ContainsAny(scheme, "/\\"):
		return "", usageError{what + " holds :// after something that is no URL scheme: give a SQLite file path or a postgres:// URL"}
	case postgresTypo.MatchString(db):
		return "", usageError{what + " starts like a postgres:// URL but is not one (a slash missing?)"}
	case keywordSettings.MatchString(db):
		return "", usageError{what + " looks like PostgreSQL key=value settings: give them as a URL, postgres://user@host:port/database (the password in PGPASSWORD)"}
	}
	return db, nil
}

// openStore opens the database db names (a SQLite path, created when
// missing, or a PostgreSQL URL), brings its schema up to date and returns
// the store.
func openStore(ctx context.Context, db string, opts storeOptions) (*store, error) {
	eng, err := openEngine(ctx, db, opts)
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, eng, opts.onUpgrade); err != nil {
		eng.close()
		return nil, fmt.Errorf("database %s: %w", eng.describe(), err)
	}
	s := &store{eng: eng, now: opts.now, maxGoals: opts.maxGoals, onQuery: opts.onQuery}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxGoals == 0 {
		s.maxGoals = defaultMaxGoals
	}
	return s, nil
}

// openEngine connects to the database db names, as it is: no schema is
// created or brought up to date.
func openEngine(ctx context.Context, db string, opts storeOptions) (engine, error) {
	if opts.statementTimeout == 0 {
		opts.statementTimeout = defaultStatementTimeout
	}
	if opts.maxConns == 0 {
		opts.maxConns = defaultDBMaxConns
	}
	if isPostgresURL(db) {
		return openPostgres(ctx, db, opts)
	}
	return openSQLite(ctx, db, opts)
}

// backupDatabase writes a consistent copy of the database db names to
// the file dst. A PostgreSQL database is refused without connecting: that
// is pg_dump's job.
func backupDatabase(ctx context.Context, db, dst string) error {
	if isPostgresURL(db) {
		return (&postgresEngine{}).backup(ctx, dst)
	}
	return backupSQLite(ctx, db, dst)
}

// Close finishes the writes under way and closes the database. It is safe
// to call more than once.
func (s *store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.eng.close()
	})
	return s.closeErr
}

// Ping runs a trivial query on the read path.
func (s *store) Ping(ctx context.Context) error {
	if f, ok := s.eng.(interface{ checkFile() error }); ok { // SQLite's file
		if err := f.checkFile(); err != nil {
			return fmt.Errorf("ping database: %w", err)
		}
	}
	rows, err := s.queryRead(ctx, true, "SELECT 1")
	if err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return fmt.Errorf("ping database: %w", errOr(rows.Err(), errors.New("no row")))
	}
	return nil
}

// errOr is err, or def when err is nil.
func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// write runs fn as one write transaction (see engine.write) and classifies
// what fails. A write whose rows kept changing under it through every try
// is answered as unavailable: retrying later can succeed.
func (s *store) write(ctx context.Context, fn func(ctx context.Context, t wtx) error) error {
	if s.closed.Load() {
		return unavailable(errStoreClosed)
	}
	var touches []touchedUser
	marked := false
	err := s.eng.classify(s.eng.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		touches = touches[:0] // a write that runs again notes its users again
		return fn(ctx, wtx{tx: tx, eng: s.eng, touches: &touches})
	}, commitHooks{
		committing: func() { s.committing(touches); marked = true },
		ended:      func(ok bool) { s.touched(touches, ok, marked) },
	}))
	if errors.Is(err, errRetry) {
		return unavailable(err)
	}
	return err
}

// rowsIter is the rows of a read: *sql.Rows, or SQLite's read path's.
type rowsIter interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// queryRead runs a read, in the read transaction ctx carries if any (see
// oneRead); prepared says whether its statement may be kept (only for
// query texts that do not vary with the data).
func (s *store) queryRead(ctx context.Context, prepared bool, query string, args ...any) (rowsIter, error) {
	if s.onQuery != nil {
		s.onQuery()
	}
	if s.closed.Load() {
		return nil, unavailable(errStoreClosed)
	}
	var rows rowsIter
	var err error
	if tx, ok := ctx.Value(readTxKey{}).(readTx); ok {
		rows, err = tx.query(ctx, query, prepared, args...)
	} else {
		rows, err = s.eng.query(ctx, query, prepared, args...)
	}
	return rows, s.eng.classify(err)
}

// readTx is a read-only transaction: every query run through it sees one
// state of the database.
type readTx interface {
	query(ctx context.Context, query string, keep bool, args ...any) (rowsIter, error)
	// end ends it, once every rows read through it are closed; ending it
	// again does nothing.
	end()
}

// readTxKey is the context key of the read transaction oneRead began.
type readTxKey struct{}

// oneRead begins a read-only transaction and returns a context whose reads
// through s all run in it, and the function that ends it. An answer read
// in more than one statement (a goal and its owner, a page and its goals)
// so shows one state of the database: never a goal without the owner a
// delete removed between the two. Every read of that answer must use the
// context returned (on SQLite the transaction holds one of the pool's
// connections), and end runs after their rows are closed; it may run
// more than once (the first ends the transaction).
func (s *store) oneRead(ctx context.Context) (context.Context, func(), error) {
	if s.closed.Load() {
		return ctx, nil, unavailable(errStoreClosed)
	}
	tx, err := s.eng.beginRead(ctx)
	if err != nil {
		return ctx, nil, s.eng.classify(err)
	}
	return context.WithValue(ctx, readTxKey{}, tx), tx.end, nil
}

// page is one page of a list: rows with id > After (all when ""), at most
// Limit of them.
type page struct {
	After string
	Limit int
}

// plusOne asks for one row more than the page holds, to learn whether a
// next page exists.
func (p page) plusOne() page { return page{After: p.After, Limit: p.Limit + 1} }

// ---- users ----

// userColumns are every column a user is read back with, in the order
// scanUser scans them.
const userColumns = "id, username, email, full_name, password_hash, version, created_at, modified_at"

// userExtras says which optional user columns a read fetches: reading and
// scanning fewer columns is most of what a list page costs.
type userExtras struct {
	Email, FullName bool
}

// userRead is one shape of user read: the extras, and whether the row
// version is read too (single users need it for their ETag; lists do not).
type userRead struct {
	extras  userExtras
	version bool
	rows    int // how many rows to make room for at once (a page's); 0 for a few
}

// columns is the select list, in the order dest scans it.
func (ur userRead) columns() string {
	cols := "id, username"
	if ur.extras.Email {
		cols += ", email"
	}
	if ur.extras.FullName {
		cols += ", full_name"
	}
	if ur.version {
		cols += ", version"
	}
	return cols + ", created_at, modified_at"
}

// dest appends to buf the scan destinations in u for columns.
func (ur userRead) dest(u *User, buf []any) []any {
	buf = append(buf, &u.ID, &u.Username)
	if ur.extras.Email {
		buf = append(buf, &u.Email)
	}
	if ur.extras.FullName {
		buf = append(buf, &u.FullName)
	}
	if ur.version {
		buf = append(buf, &u.Version)
	}
	return append(buf, &u.CreatedAt, &u.ModifiedAt)
}

// queryUsers selects the columns ur names with the query tail ("FROM …
// WHERE …") and scans every row.
func (s *store) queryUsers(ctx context.Context, prepared bool, ur userRead, tail string, args ...any) ([]User, error) {
	rows, err := s.queryRead(ctx, prepared, "SELECT "+ur.columns()+" "+tail, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	users := make([]User, 0, cmp.Or(ur.rows, 8))
	dest := make([]any, 0, 7)
	for rows.Next() {
		users = append(users, User{})
		if err := rows.Scan(ur.dest(&users[len(users)-1], dest[:0])...); err != nil {
			return nil, err
		}
	}
	return users, s.eng.classify(rows.Err())
}

// GetUser returns the user with id with the extras asked for, or
// errUserNotFound.
func (s *store) GetUser(ctx context.Context, id string, extras userExtras) (User, error) {
	users, err := s.queryUsers(ctx, true, userRead{extras: extras, version: true}, "FROM users WHERE id = ?", id)
	return firstRow(users, err, errUserNotFound, "get user")
}

// GetUserByUsername returns the user whose username matches name without
// regard to case, with the extras asked for, or errUserNotFound.
func (s *store) GetUserByUsername(ctx context.Context, name string, extras userExtras) (User, error) {
	if impossibleUsername(name) {
		return User{}, errUserNotFound
	}
	users, err := s.queryUsers(ctx, true, userRead{extras: extras, version: true}, "FROM users WHERE username_key = ?", foldKey(name))
	return firstRow(users, err, errUserNotFound, "get user by username")
}

// impossibleUsername reports whether name, sent in a path or a query
// parameter and not checked by the username rules, holds U+0000, which no
// username does. PostgreSQL would fail the query rather than find nothing,
// so such a lookup finds no one, on both engines, without asking either.
func impossibleUsername(name string) bool { return hasNUL(name) }

// firstRow is the single row of a lookup, or missing when it found none.
func firstRow[T any](rows []T, err, missing error, doing string) (T, error) {
	var zero T
	if err != nil {
		return zero, fmt.Errorf("%s: %w", doing, err)
	}
	if len(rows) == 0 {
		return zero, missing
	}
	return rows[0], nil
}

// GetCredentials returns the user called name (without regard to case)
// with every column, its password hash included, for authenticate; or
// errUserNotFound.
func (s *store) GetCredentials(ctx context.Context, name string) (User, error) {
	rows, err := s.queryRead(ctx, true, "SELECT "+userColumns+" FROM users WHERE username_key = ?", foldKey(name))
	if err != nil {
		return User{}, fmt.Errorf("get credentials: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return User{}, fmt.Errorf("get credentials: %w", s.eng.classify(err))
		}
		return User{}, errUserNotFound
	}
	var u User
	if err := scanUser(rows, &u); err != nil {
		return User{}, fmt.Errorf("get credentials: %w", err)
	}
	return u, nil
}

// scanUser scans a row of userColumns into u.
func scanUser(row interface{ Scan(...any) error }, u *User) error {
	return row.Scan(&u.ID, &u.Username, &u.Email, &u.FullName, &u.PasswordHash, &u.Version, &u.CreatedAt, &u.ModifiedAt)
}

// ListUsers returns one page of users in id order with the extras asked
// for; with username, only the one whose username matches it without
// regard to case.
func (s *store) ListUsers(ctx context.Context, q page, username *string, extras userExtras) ([]User, error) {
	if username != nil && impossibleUsername(*username) {
		return []User{}, nil
	}
	query := "FROM users WHERE id > ?"
	args := []any{q.After}
	if username != nil {
		query += " AND username_key = ?"
		args = append(args, foldKey(*username))
	}
	query += " ORDER BY id LIMIT ?"
	args = append(args, q.Limit)
	// A list's ETag hashes the page, so the rows' versions are not read.
	// Room for a default page at once (a page of 1,000 grows from there,
	// and a short or empty one does not pay for a long one).
	ur := userRead{extras: extras, rows: min(q.Limit, defaultLimit+1)}
	if username != nil {
		ur.rows = 1 // a username names one user at most
	}
	users, err := s.queryUsers(ctx, true, ur, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// TakenFields names the unique fields (username, email) whose values,
// when given, a user other than exceptID already holds. Handlers ask it
// before hashing a password, so a taken name costs no hash; the write
// checks again, in its transaction.
func (s *store) TakenFields(ctx context.Context, username, email *string, exceptID string) ([]string, error) {
	var taken []string
	for _, f := range uniqueFields(username, email) {
		found, err := s.anyRow(ctx, "SELECT id FROM users WHERE "+f.column+" = ? AND id <> ?", f.key, exceptID)
		if err != nil {
			return nil, fmt.Errorf("find taken %s: %w", f.name, err)
		}
		if found {
			taken = append(taken, f.name)
		}
	}
	return taken, nil
}

// EmailTakenByOtherThan reports whether a user other than the one called
// username (without regard to case) holds email (without regard to case).
func (s *store) EmailTakenByOtherThan(ctx context.Context, email, username string) (bool, error) {
	found, err := s.anyRow(ctx, "SELECT id FROM users WHERE email_key = ? AND username_key <> ?", emailFoldKey(email), foldKey(username))
	if err != nil {
		return false, fmt.Errorf("find taken email: %w", err)
	}
	return found, nil
}

// anyRow reports whether query, on the read path, finds a row.
func (s *store) anyRow(ctx context.Context, query string, args ...any) (bool, error) {
	rows, err := s.queryRead(ctx, true, query, args...)
	if err != nil {
		return false, err
	}
	found := rows.Next()
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return false, s.eng.classify(err)
	}
	return found, nil
}

// uniqueField is a field no two users may share, apart from case: its
// name in errors, its key column, and the key of the value looked for.
type uniqueField struct{ name, column, key string }

// uniqueFields lists the unique fields among a username and an email that
// are given (not nil, not empty).
func uniqueFields(username, email *string) []uniqueField {
	fields := make([]uniqueField, 0, 2)
	if username != nil && *username != "" {
		fields = append(fields, uniqueField{"username", "username_key", foldKey(*username)})
	}
	if email != nil && *email != "" {
		fields = append(fields, uniqueField{"email", "email_key", emailFoldKey(*email)})
	}
	return fields
}

// CreateUser inserts u, setting its timestamps and version. A taken
// username or email is a conflict naming it.
func (s *store) CreateUser(ctx context.Context, u *User) error {
	created := *u
	// A new id is in no cache, so there is nothing to touch; its first
	// read fills the cache.
	err := s.write(ctx, func(ctx context.Context, t wtx) error {
		created = *u
		return s.insertUser(ctx, t, &created)
	})
	if err != nil {
		return err
	}
	*u = created
	return nil
}

// insertUser inserts u inside tx, under a savepoint: on PostgreSQL a failed
// statement aborts the transaction, and the conflict is then looked up.
func (s *store) insertUser(ctx context.Context, t wtx, u *User) error {
	u.Version = 1
	u.CreatedAt = formatTime(s.now())
	u.ModifiedAt = u.CreatedAt
	err := t.savepoint(ctx, "insert_user", func() error {
		_, err := t.exec(ctx, (`INSERT INTO users (id, username, username_key, email, email_key,
			full_name, password_hash, version, created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			u.ID, u.Username, foldKey(u.Username), u.Email, emailKey(u.Email), u.FullName, u.PasswordHash,
			u.Version, u.CreatedAt, u.ModifiedAt)
		return err
	})
	if s.eng.isUniqueViolation(err) {
		return userConflict(ctx, t, u)
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

// wtx is a write transaction as the store's writes use it: queries with
// "?" placeholders, their statements kept where the engine keeps them.
type wtx struct {
	tx      *sqlx.Tx
	eng     engine
	touches *[]touchedUser
}

// touch notes that the write changes the user with id; row, when given,
// is the user's row as the write leaves it (filled in by the time the
// write's fn returns). See store.touched.
func (t wtx) touch(id string, row *User) {
	if id != "" {
		*t.touches = append(*t.touches, touchedUser{id: id, row: row})
	}
}

// exec runs a statement.
func (t wtx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.eng.txExec(ctx, t.tx, query, args...)
}

// row runs a query whose one row the caller scans (sql.ErrNoRows when
// there is none).
func (t wtx) row(ctx context.Context, query string, args ...any) *sql.Row {
	return t.eng.txQueryRow(ctx, t.tx, query, args...)
}

// get scans the one row of a query into dest.
func (t wtx) get(ctx context.Context, dest any, query string, args ...any) error {
	return t.row(ctx, query, args...).Scan(dest)
}

// savepoint runs fn under a savepoint named name where the engine needs
// one to carry on after a failed statement (PostgreSQL aborts the whole
// transaction otherwise; SQLite undoes the one statement by itself),
// rolling back to it when fn fails so the transaction stays usable.
func (t wtx) savepoint(ctx context.Context, name string, fn func() error) error {
	if !t.eng.abortsOnError() {
		return fn()
	}
	if _, err := t.exec(ctx, "SAVEPOINT "+name); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if err := fn(); err != nil {
		if _, rbErr := t.exec(ctx, "ROLLBACK TO SAVEPOINT "+name); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rbErr))
		}
		return err
	}
	if _, err := t.exec(ctx, "RELEASE SAVEPOINT "+name); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// userConflict finds which unique fields of u another user already holds.
// It runs in the write's transaction. When it finds none, the other
// write that held the value is gone by now, and the write is retried.
func userConflict(ctx context.Context, t wtx, u *User) error {
	var fields []string
	for _, f := range uniqueFields(&u.Username, u.Email) {
		var n int
		if err := t.get(ctx, &n, ("SELECT count(*) FROM users WHERE " + f.column + " = ? AND id <> ?"), f.key, u.ID); err != nil {
			return fmt.Errorf("find conflict: %w", err)
		}
		if n > 0 {
			fields = append(fields, f.name)
		}
	}
	if len(fields) == 0 {
		return errRetry
	}
	return conflict(fields...)
}

// UpdateUser applies in to the user with id once pre accepts its current
// version; it returns the updated user.
// With answer it also returns the user's goals as the write left them,
// read in its transaction (see answerGoals): once a write has committed,
// its answer cannot fail.
func (s *store) UpdateUser(ctx context.Context, id string, in *userInput, pre *precondition, answer answerGoals) (User, []Goal, error) {
	if pre == nil {
		return s.setUserFields(ctx, id, in, answer)
	}
	var out User
	var goals []Goal
	err := s.write(ctx, func(ctx context.Context, t wtx) error {
		u, err := s.txGetUser(ctx, t, "id = ?", id)
		if err != nil {
			return err
		}
		if err := pre.check(u.ID, u.Version); err != nil {
			return err
		}
		if in.apply(&u) { // a write that changes nothing is a read: same version
			if err := s.updateUser(ctx, t, &u); err != nil {
				return err
			}
			t.touch(id, &u)
		}
		out = u
		goals, err = s.txGoalsOf(ctx, t, &out, answer)
		return err
	})
	return out, goals, err
}

// answerGoals, given to a user write whose answer embeds the user's goals,
// is asked inside the write's transaction, with the user and the goals the
// answer will show, whether that answer may be sent; its error undoes the
// write. (The handler's place for a large answer, see largeAnswers: an
// answer refused after its commit would leave the client unsure of a
// change that happened.)
type answerGoals func(u *User, goals []Goal) error

// txGoalsOf reads, when answer asks for them, the goals of u inside a
// write's transaction (as GoalsOfUser does outside one), and asks answer
// whether they may be sent.
func (s *store) txGoalsOf(ctx context.Context, t wtx, u *User, answer answerGoals) ([]Goal, error) {
	if answer == nil {
		return nil, nil
	}
	rows, err := t.tx.QueryContext(ctx, t.tx.Rebind("SELECT "+goalColumns+" FROM goals WHERE user_id = ? ORDER BY id LIMIT ?"), u.ID, s.maxGoals)
	if err != nil {
		return nil, fmt.Errorf("goals of user: %w", err)
	}
	goals, err := collectGoals(goalsIn(rows))
	if err != nil {
		return nil, fmt.Errorf("goals of user: %w", err)
	}
	return goals, answer(u, goals)
}

// txOwner reads, when asked, a goal's owner (every column) inside a
// write's transaction, for the answer to embed. It takes no lock: the
// write holds the goal's, and a delete of the user holds the user's and
// waits for the goal's (the cascade), so waiting here for the user's
// would deadlock the two.
func (s *store) txOwner(ctx context.Context, t wtx, userID string, asked bool) (*User, error) {
	if !asked {
		return nil, nil
	}
	var u User
	err := scanUser(t.row(ctx, ("SELECT "+userColumns+" FROM users WHERE id = ?"), userID), &u)
	if err := notFound(err, errUserNotFound, "get goal owner"); err != nil {
		return nil, err
	}
	return &u, nil
}

// setUserFields is an update that no If-Match conditions, in one
// statement: it sets only the columns of the fields in the body, counts
// the version up in place, and returns the row. Nothing is read first, so
// there is nothing to go stale: concurrent updates of different fields
// both survive, and each is one version. (An update with If-Match reads
// the row, checks its version, and writes only where the version is still
// the one read.) Setting fewer columns also spares the unique indexes
// when the username and email are not being changed.
func (s *store) setUserFields(ctx context.Context, id string, in *userInput, answer answerGoals) (User, []Goal, error) {
	var set setList
	if in.Username.Set {
		set.add("username", in.Username.Value)
		set.add("username_key", foldKey(in.Username.Value))
	}
	if in.Email.Set {
		set.add("email", nullable(in.Email))
		set.add("email_key", emailKey(nullable(in.Email)))
	}
	if in.FullName.Set {
		set.add("full_name", nullable(in.FullName))
	}
	if in.passwordHash != "" {
		set.add("password_hash", in.passwordHash)
	}
	var out User
	var goals []Goal
	update := func(ctx context.Context, t wtx) error {
		query, args := set.update("users", userColumns, id, formatTime(s.now()))
		return scanUser(t.row(ctx, query, args...), &out)
	}
	err := s.write(ctx, func(ctx context.Context, t wtx) error {
		err := sql.ErrNoRows // when the body sets nothing
		switch {
		case set.empty():
		case in.Username.Set || in.Email.Set:
			// A unique index may refuse it: look up which after it, under a
			// savepoint where a failed statement aborts the transaction.
			err = t.savepoint(ctx, "set_user", func() error { return update(ctx, t) })
		default:
			err = update(ctx, t)
		}
		switch {
		case s.eng.isUniqueViolation(err):
			u := User{ID: id}
			in.apply(&u)
			return userConflict(ctx, t, &u)
		case errors.Is(err, sql.ErrNoRows):
			// No such user, or one the body would not change: that write
			// is a read, and the user keeps its version.
			if out, err = s.txGetUser(ctx, t, "id = ?", id); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("update user: %w", err)
		default:
			t.touch(id, &out)
		}
		goals, err = s.txGoalsOf(ctx, t, &out, answer)
		return err
	})
	return out, goals, err
}

// setList is the SET list of an UPDATE: the columns a body names.
type setList struct {
	sql     strings.Builder
	args    []any
	changes []string // "column IS DISTINCT FROM ?", one for each of args
}

// add sets column to v.
func (l *setList) add(column string, v any) {
	l.sql.WriteString(column + " = ?, ")
	l.args = append(l.args, v)
	l.changes = append(l.changes, column+" IS DISTINCT FROM ?")
}

// empty reports whether the list sets no column.
func (l *setList) empty() bool { return len(l.args) == 0 }

// update is the statement that sets the list on table's row id, counts
// its version up and stamps modified_at, returning columns; and its
// arguments. It leaves a row the list would not change as it is, and
// returns no row then: a write that changes nothing is no new version.
// The list must not be empty.
func (l *setList) update(table, columns, id, modifiedAt string) (string, []any) {
	query := "UPDATE " + table + " SET " + l.sql.String() + "version = version + 1, modified_at = ? WHERE id = ? AND (" +
		strings.Join(l.changes, " OR ") + ") RETURNING " + columns
	args := append(slices.Clip(l.args), modifiedAt, id)
	return query, append(args, l.args...)
}

// PutUserByUsername creates the user called name when none exists
// (without regard to case) and otherwise updates it once pre (when
// given) accepts its version. created says which. Concurrent calls create
// the user once: the loser's insert meets the unique index and runs again
// as an update.
func (s *store) PutUserByUsername(ctx context.Context, name string, in *userInput, pre *precondition, toCreate func() (User, error), answer answerGoals) (out User, goals []Goal, created bool, err error) {
	err = s.write(ctx, func(ctx context.Context, t wtx) error {
		created = false
		u, err := s.txGetUser(ctx, t, "username_key = ?", foldKey(name))
		if errors.Is(err, errUserNotFound) {
			if err := pre.allowsCreate(); err != nil {
				return err
			}
			nu, err := toCreate()
			if err != nil {
				return err
			}
			if err := s.insertUser(ctx, t, &nu); err != nil {
				return retryOnUsernameTaken(err)
			}
			out, created, goals = nu, true, nil // a new user has no goals
			t.touch(out.ID, &out)
			return nil
		}
		if err != nil {
			return err
		}
		if err := pre.check(u.ID, u.Version); err != nil {
			return err
		}
		if in.apply(&u) { // a write that changes nothing is a read: same version
			if err := s.updateUser(ctx, t, &u); err != nil {
				return err
			}
			t.touch(u.ID, &u)
		}
		out = u
		goals, err = s.txGoalsOf(ctx, t, &out, answer)
		return err
	})
	return out, goals, created, err
}

// retryOnUsernameTaken turns "username taken" on a get-or-create insert
// into a retry: another write created the user since this one looked, so
// this one now finds it and updates.
func retryOnUsernameTaken(err error) error {
	var de *Error
	if errors.As(err, &de) && de.Code == codeConflict {
		if _, taken := de.Fields["username"]; taken {
			return errRetry
		}
	}
	return err
}

// txGetUser reads one user with every column inside a write transaction,
// locking its row where the engine has row locks: concurrent writes of one
// user then take turns instead of retrying.
func (s *store) txGetUser(ctx context.Context, t wtx, where string, arg any) (User, error) {
	var u User
	err := scanUser(t.row(ctx, ("SELECT "+userColumns+" FROM users WHERE "+where+s.eng.forUpdate()), arg), &u)
	return u, notFound(err, errUserNotFound, "get user for update")
}

// updateUser writes every column of u where its row still has the version
// u was read at, bumping version and modified_at. When another write got
// there first, it returns errRetry.
func (s *store) updateUser(ctx context.Context, t wtx, u *User) error {
	read := u.Version
	u.Version++
	u.ModifiedAt = formatTime(s.now())
	var res sql.Result
	err := t.savepoint(ctx, "update_user", func() error {
		var err error
		res, err = t.exec(ctx, (`UPDATE users SET username = ?, username_key = ?, email = ?,
			email_key = ?, full_name = ?, password_hash = ?, version = ?, modified_at = ?
			WHERE id = ? AND version = ?`),
			u.Username, foldKey(u.Username), u.Email, emailKey(u.Email), u.FullName, u.PasswordHash,
			u.Version, u.ModifiedAt, u.ID, read)
		return err
	})
	if s.eng.isUniqueViolation(err) {
		return userConflict(ctx, t, u)
	}
	if err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	return changedOne(res)
}

// changedOne is nil when res changed one row, and errRetry when it changed
// none (the row's version moved on since it was read).
func changedOne(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("rows affected: %w", err)
	}
	if n == 0 {
		return errRetry
	}
	return nil
}

// DeleteUser deletes the user with id, and its goals with it (ON DELETE
// CASCADE), once pre accepts its current version.
func (s *store) DeleteUser(ctx context.Context, id string, pre *precondition) error {
	return s.write(ctx, func(ctx context.Context, t wtx) error {
		u, err := s.txGetUser(ctx, t, "id = ?", id)
		if err != nil {
			return err
		}
		if err := pre.check(u.ID, u.Version); err != nil {
			return err
		}
		t.touch(id, nil)
		res, err := t.exec(ctx, ("DELETE FROM users WHERE id = ? AND version = ?"), id, u.Version)
		if err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		return changedOne(res)
	})
}

// notFound translates sql.ErrNoRows into the domain's not-found error and
// wraps anything else with what was being done.
func notFound(err, nf error, doing string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return nf
	default:
		return fmt.Errorf("%s: %w", doing, err)
	}
}

// placeholders returns "?, ?, …" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// ---- goals ----

const goalColumns = "id, user_id, title, period, target_minutes, description, version, created_at, modified_at"

// scanGoal scans a row of goalColumns into g.
func scanGoal(row interface{ Scan(...any) error }, g *Goal) error {
	return row.Scan(&g.ID, &g.UserID, &g.Title, &g.Period, &g.TargetMinutes, &g.Description, &g.Version, &g.CreatedAt, &g.ModifiedAt)
}

// queryGoals runs a query selecting goalColumns and scans every row.
func (s *store) queryGoals(ctx context.Context, prepared bool, query string, args ...any) ([]Goal, error) {
	return collectGoals(s.eachGoal(ctx, prepared, query, args...))
}

// collectGoals gathers every goal seq yields, stopping at its first error.
func collectGoals(seq iter.Seq2[Goal, error]) ([]Goal, error) {
	goals := make([]Goal, 0, 8)
	for g, err := range seq {
		if err != nil {
			return nil, err
		}
		goals = append(goals, g)
	}
	return goals, nil
}

// eachGoal runs a query selecting goalColumns and yields its rows one at
// a time, so a caller can stop early without holding them all.
func (s *store) eachGoal(ctx context.Context, prepared bool, query string, args ...any) iter.Seq2[Goal, error] {
	return func(yield func(Goal, error) bool) {
		rows, err := s.queryRead(ctx, prepared, query, args...)
		if err != nil {
			yield(Goal{}, err)
			return
		}
		for g, err := range goalsIn(rows) {
			if !yield(g, s.eng.classify(err)) || err != nil {
				return
			}
		}
	}
}

// goalsIn yields the goals in rows, then closes them.
func goalsIn(rows rowsIter) iter.Seq2[Goal, error] {
	return func(yield func(Goal, error) bool) {
		defer rows.Close()
		for rows.Next() {
			var g Goal
			if err := scanGoal(rows, &g); err != nil {
				yield(Goal{}, err)
				return
			}
			if !yield(g, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(Goal{}, err)
		}
	}
}

// GetGoal returns the goal with id, or errGoalNotFound.
func (s *store) GetGoal(ctx context.Context, id string) (Goal, error) {
	goals, err := s.queryGoals(ctx, true, "SELECT "+goalColumns+" FROM goals WHERE id = ?", id)
	return firstRow(goals, err, errGoalNotFound, "get goal")
}

// ListGoals returns one page of goals in id order; with userID, only that
// user's.
func (s *store) ListGoals(ctx context.Context, q page, userID *string) ([]Goal, error) {
	query := "SELECT " + goalColumns + " FROM goals WHERE id > ?"
	args := []any{q.After}
	if userID != nil {
		query += " AND user_id = ?"
		args = append(args, *userID)
	}
	query += " ORDER BY id LIMIT ?"
	args = append(args, q.Limit)
	goals, err := s.queryGoals(ctx, true, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list goals: %w", err)
	}
	return goals, nil
}

// GoalsOfUser returns the goals of one user in id order, at most the
// -max-goals a user may have.
func (s *store) GoalsOfUser(ctx context.Context, userID string) ([]Goal, error) {
	goals, err := s.queryGoals(ctx, true, "SELECT "+goalColumns+" FROM goals WHERE user_id = ? ORDER BY id LIMIT ?", userID, s.maxGoals)
	if err != nil {
		return nil, fmt.Errorf("goals of user: %w", err)
	}
	return goals, nil
}

// GoalsOfUsers yields the goals of every user in userIDs in one query,
// ordered by user id, then goal id; a caller that stops early stops the
// query. Ids from a page of users are in id order, so the goals come in
// the order the page lists their owners.
func (s *store) GoalsOfUsers(ctx context.Context, userIDs []string) iter.Seq2[Goal, error] {
	if len(userIDs) == 0 {
		return func(func(Goal, error) bool) {}
	}
	query := "SELECT " + goalColumns + " FROM goals WHERE user_id IN (" + placeholders(len(userIDs)) + ") ORDER BY user_id, id"
	return s.eachGoal(ctx, len(userIDs) == 1, query, anySlice(userIDs)...)
}

// UsersByID returns the users with the given ids in one query, keyed by id,
// with the extras asked for.
func (s *store) UsersByID(ctx context.Context, ids []string, extras userExtras) (map[string]User, error) {
	byID := make(map[string]User, len(ids))
	if len(ids) == 0 {
		return byID, nil
	}
	query := "FROM users WHERE id IN (" + placeholders(len(ids)) + ")"
	users, err := s.queryUsers(ctx, len(ids) == 1, userRead{extras: extras}, query, anySlice(ids)...)
	if err != nil {
		return nil, fmt.Errorf("users by id: %w", err)
	}
	for _, u := range users {
		byID[u.ID] = u
	}
	return byID, nil
}

// UserExists reports whether a user with id exists.
func (s *store) UserExists(ctx context.Context, id string) (bool, error) {
	users, err := s.queryUsers(ctx, true, userRead{}, "FROM users WHERE id = ?", id)
	if err != nil {
		return false, fmt.Errorf("user exists: %w", err)
	}
	return len(users) > 0, nil
}

// errTooManyGoals is the answer to a goal beyond -max-goals.
func errTooManyGoals(max int) error {
	return &Error{Code: codeConflict, Fields: fieldErrors{"goals": fmt.Sprintf("a user may have at most %d goals: delete one first", max)}}
}

// CreateGoal inserts g for its user, setting timestamps and version. A
// missing user (or one deleted meanwhile) is errUserNotFound; a user with
// -max-goals goals already is a conflict. The owner's row is locked for
// the count, so concurrent creates cannot pass the limit together.
// With withOwner it also returns the goal's owner, read in the write's
// transaction.
func (s *store) CreateGoal(ctx context.Context, g *Goal, withOwner bool) (*User, error) {
	created := *g
	var ownerRow *User
	err := s.write(ctx, func(ctx context.Context, t wtx) error {
		created = *g
		var owner string
		err := t.get(ctx, &owner, ("SELECT id FROM users WHERE id = ?" + s.eng.forUpdate()), g.UserID)
		if err := notFound(err, errUserNotFound, "lock goal owner"); err != nil {
			return err
		}
		var n int
		if err := t.get(ctx, &n, ("SELECT count(*) FROM goals WHERE user_id = ?"), g.UserID); err != nil {
			return fmt.Errorf("count goals: %w", err)
		}
		if n >= s.maxGoals {
			return errTooManyGoals(s.maxGoals)
		}
		created.Version = 1
		created.CreatedAt = formatTime(s.now())
		created.ModifiedAt = created.CreatedAt
		_, err = t.exec(ctx, (`INSERT INTO goals (` + goalColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			created.ID, created.UserID, created.Title, created.Period, created.TargetMinutes, created.Description,
			created.Version, created.CreatedAt, created.ModifiedAt)
		if err != nil {
			return fmt.Errorf("insert goal: %w", err)
		}
		ownerRow, err = s.txOwner(ctx, t, g.UserID, withOwner)
		return err
	})
	if err != nil {
		return nil, err
	}
	*g = created
	return ownerRow, nil
}

// UpdateGoal applies in to the goal with id once pre (when given)
// accepts its current version; it returns the updated goal.
// With withOwner it also returns the goal's owner, read in the write's
// transaction.
func (s *store) UpdateGoal(ctx context.Context, id string, in *goalInput, pre *precondition, withOwner bool) (Goal, *User, error) {
	var out Goal
	var ownerRow *User
	if pre == nil {
		var err error
		out, ownerRow, err = s.setGoalFields(ctx, id, in, withOwner)
		return out, ownerRow, err
	}
	err := s.write(ctx, func(ctx context.Context, t wtx) error {
		g, err := s.txGetGoal(ctx, t, id)
		if err != nil {
			return err
		}
		if err := pre.check(g.ID, g.Version); err != nil {
			return err
		}
		if !in.apply(&g) { // a write that changes nothing is a read: same version
			out = g
			ownerRow, err = s.txOwner(ctx, t, g.UserID, withOwner)
			return err
		}
		read := g.Version
		g.Version++
		g.ModifiedAt = formatTime(s.now())
		res, err := t.exec(ctx, (`UPDATE goals SET title = ?, period = ?, target_minutes = ?,
			description = ?, version = ?, modified_at = ? WHERE id = ? AND version = ?`),
			g.Title, g.Period, g.TargetMinutes, g.Description, g.Version, g.ModifiedAt, g.ID, read)
		if err != nil {
			return fmt.Errorf("update goal: %w", err)
		}
		out = g
		if err := changedOne(res); err != nil {
			return err
		}
		ownerRow, err = s.txOwner(ctx, t, g.UserID, withOwner)
		return err
	})
	return out, ownerRow, err
}

// setGoalFields is an update of a goal that no If-Match conditions, in
// one statement (see setUserFields); it fills out with the row.
func (s *store) setGoalFields(ctx context.Context, id string, in *goalInput, withOwner bool) (Goal, *User, error) {
	var set setList
	if in.Title.Set {
		set.add("title", in.Title.Value)
	}
	if in.Period.Set {
		set.add("period", in.Period.Value)
	}
	if in.TargetMinutes.Set {
		set.add("target_minutes", in.TargetMinutes.Value)
	}
	if in.Description.Set {
		set.add("description", nullable(in.Description))
	}
	var out Goal
	var owner *User
	err := s.write(ctx, func(ctx context.Context, t wtx) error {
		err := sql.ErrNoRows // when the body sets nothing
		if !set.empty() {
			query, args := set.update("goals", goalColumns, id, formatTime(s.now()))
			err = scanGoal(t.row(ctx, query, args...), &out)
		}
		switch {
		case errors.Is(err, sql.ErrNoRows):
			// No such goal, or one the body would not change: that write
			// is a read, and the goal keeps its version.
			if out, err = s.txGetGoal(ctx, t, id); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("update goal: %w", err)
		}
		owner, err = s.txOwner(ctx, t, out.UserID, withOwner)
		return err
	})
	return out, owner, err
}

// DeleteGoal deletes the goal with id once pre (when given) accepts its
// current version. It returns the goal as it was, so callers know its
// owner.
func (s *store) DeleteGoal(ctx context.Context, id string, pre *precondition) (Goal, error) {
	var out Goal
	err := s.write(ctx, func(ctx context.Context, t wtx) error {
		g, err := s.txGetGoal(ctx, t, id)
		if err != nil {
			return err
		}
		if err := pre.check(g.ID, g.Version); err != nil {
			return err
		}
		res, err := t.exec(ctx, ("DELETE FROM goals WHERE id = ? AND version = ?"), id, g.Version)
		if err != nil {
			return fmt.Errorf("delete goal: %w", err)
		}
		out = g
		return changedOne(res)
	})
	return out, err
}

// txGetGoal reads one goal inside a write transaction, locking its row
// (see txGetUser).
func (s *store) txGetGoal(ctx context.Context, t wtx, id string) (Goal, error) {
	var g Goal
	err := scanGoal(t.row(ctx, ("SELECT "+goalColumns+" FROM goals WHERE id = ?"+s.eng.forUpdate()), id), &g)
	return g, notFound(err, errGoalNotFound, "get goal for update")
}

// anySlice converts ids to query arguments.
func anySlice(ids []string) []any {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return args
}

// ---- the login lockout ----

// staleAttempt is how old an attempt still marked as being checked may be
// before it is forgotten (its instance crashed): longer than any
// authenticate takes.
const staleAttempt = 2 * time.Minute

// BeginLogin reserves an attempt at authenticating as name at time now,
// unless the username is locked: its failures in the window plus the
// attempts still being checked (on any instance) reach max. It returns the
// attempt's id, or the refusal: errLoginLocked when the failures alone
// reach max, errLoginsInFlight when attempts being checked make up the
// rest. The username's row is locked while it counts, so concurrent
// attempts are counted one after another.
func (s *store) BeginLogin(ctx context.Context, name string, now time.Time, window time.Duration, max int) (attempt string, refused *Error, err error) {
	key, nowMS := foldKey(name), now.UnixMilli()
	id, err := newID()
	if err != nil {
		return "", nil, err
	}
	err = s.write(ctx, func(ctx context.Context, t wtx) error {
		attempt, refused = "", nil
		start, failures, err := lockLoginRow(ctx, t, key, nowMS)
		if err != nil {
			return err
		}
		if nowMS-start >= window.Milliseconds() {
			start, failures = nowMS, 0
		}
		var pending int
		if err := t.get(ctx, &pending, ("SELECT count(*) FROM login_pending WHERE username_key = ? AND started > ?"),
			key, nowMS-staleAttempt.Milliseconds()); err != nil {
			return fmt.Errorf("count pending logins: %w", err)
		}
		switch {
		case failures >= max:
			refused = errLoginLocked(time.UnixMilli(start).Add(window).Sub(now))
			return nil
		case failures+pending >= max:
			refused = errLoginsInFlight
			return nil
		}
		if _, err := t.exec(ctx, ("INSERT INTO login_pending (id, username_key, started) VALUES (?, ?, ?)"), id, key, nowMS); err != nil {
			return fmt.Errorf("record a pending login: %w", err)
		}
		attempt = id
		return nil
	})
	return attempt, refused, err
}

// lockLoginRow reads (creating when missing) and locks the lockout row of
// key: the start of its window and the failures in it. One statement: as
// an insert and then a read, a sweep on another instance could delete the
// row between the two, and a right password was answered 500 (review 19);
// an upsert that meets a row deleted meanwhile inserts it instead.
func lockLoginRow(ctx context.Context, t wtx, key string, nowMS int64) (start int64, failures int, err error) {
	err = t.row(ctx, (`INSERT INTO login_failures (username_key, window_start, failures) VALUES (?, ?, 0)
		ON CONFLICT (username_key) DO UPDATE SET failures = login_failures.failures
		RETURNING window_start, failures`), key, nowMS).Scan(&start, &failures)
	if err != nil {
		return 0, 0, fmt.Errorf("lock the lockout row: %w", err)
	}
	return start, failures, nil
}

// FinishLogin records the outcome of attempt at time now: a failure counts
// in the username's window (which starts at its first failure), a success
// clears the username's failures, and anything else (an internal error)
// only ends the attempt.
func (s *store) FinishLogin(ctx context.Context, name, attempt string, now time.Time, window time.Duration, success, failed bool) error {
	key, nowMS := foldKey(name), now.UnixMilli()
	return s.write(ctx, func(ctx context.Context, t wtx) error {
		if _, err := t.exec(ctx, ("DELETE FROM login_pending WHERE id = ?"), attempt); err != nil {
			return fmt.Errorf("end a pending login: %w", err)
		}
		start, failures, err := lockLoginRow(ctx, t, key, nowMS)
		if err != nil {
			return err
		}
		switch {
		case failed && (failures == 0 || nowMS-start >= window.Milliseconds()):
			start, failures = nowMS, 1
		case failed:
			failures++
		case success:
			failures = 0
		}
		_, err = t.exec(ctx, ("UPDATE login_failures SET window_start = ?, failures = ? WHERE username_key = ?"), start, failures, key)
		if err != nil {
			return fmt.Errorf("record a login: %w", err)
		}
		return nil
	})
}

// SweepLogins forgets what the lockout no longer needs at time now:
// attempts left pending by a crash, and usernames whose window has ended
// with nothing pending. Then, if more than maxEntries usernames remain,
// the oldest windows go first, so a flood of usernames cannot grow the
// table without bound.
func (s *store) SweepLogins(ctx context.Context, now time.Time, window time.Duration, maxEntries int) error {
	nowMS := now.UnixMilli()
	return s.write(ctx, func(ctx context.Context, t wtx) error {
		if _, err := t.exec(ctx, ("DELETE FROM login_pending WHERE started <= ?"), nowMS-staleAttempt.Milliseconds()); err != nil {
			return fmt.Errorf("sweep pending logins: %w", err)
		}
		if _, err := t.exec(ctx, (`DELETE FROM login_failures WHERE (window_start <= ? OR failures = 0)
			AND NOT EXISTS (SELECT 1 FROM login_pending p WHERE p.username_key = login_failures.username_key)`),
			nowMS-window.Milliseconds()); err != nil {
			return fmt.Errorf("sweep ended lockouts: %w", err)
		}
		var n int
		if err := t.get(ctx, &n, "SELECT count(*) FROM login_failures"); err != nil {
			return fmt.Errorf("count lockouts: %w", err)
		}
		if n <= maxEntries {
			return nil
		}
		_, err := t.exec(ctx, (`DELETE FROM login_failures WHERE username_key IN
			(SELECT username_key FROM login_failures ORDER BY window_start LIMIT ?)`), n-maxEntries)
		if err != nil {
			return fmt.Errorf("trim lockouts to %d: %w", maxEntries, err)
		}
		return nil
	})
}
