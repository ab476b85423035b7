// store.go: all SQL. Opening and migrating the database, and every query
// and write of users and goals.
package main

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed schema.sql
var schemaSQL string

func init() {
	// sqlx does not know the modernc driver's name; its placeholders are "?".
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
}

// store owns the database: one writer connection fed by the group-commit
// goroutine (writer.go) and a pool of read-only connections.
type store struct {
	writeDB *sqlx.DB
	readDB  *sqlx.DB
	now     func() time.Time

	ops        chan *writeOp
	stopping   chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	// stmts caches prepared read statements by query text.
	stmts sync.Map
	// reads counts statements run on the read pool; tests use it to prove
	// that an embed costs one query, not one per row.
	reads atomic.Int64
}

// storeOptions tune openStore; the zero value is the production setting.
type storeOptions struct {
	now func() time.Time // the clock of created_at and modified_at; nil is time.Now
}

// readConns is the size of the read pool: enough for reads to overlap on
// 2 cores while one waits on the disk. Each holds its own SQLite page cache
// (about 2 MiB), which counts against the 64 MiB RSS budget.
const readConns = 4

// sqlitePragmas are set on every connection through the DSN, so each pooled
// connection gets them: WAL so readers never block the writer, FULL so an
// acknowledged commit survives a power cut, foreign keys for the cascades.
var sqlitePragmas = []string{"busy_timeout(10000)", "foreign_keys(1)", "journal_mode(WAL)", "synchronous(FULL)"}

// dsn builds a modernc.org/sqlite DSN for path with the pragmas and extra
// parameters.
func dsn(path string, extra url.Values) string {
	q := url.Values{"_pragma": sqlitePragmas}
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

// openStore opens (creating when missing) the database at path, applies the
// schema migrations and starts the writer.
func openStore(ctx context.Context, path string, opts storeOptions) (*store, error) {
	if err := checkDBPath(path); err != nil {
		return nil, err
	}
	writeDB, err := sqlx.Open("sqlite", dsn(path, url.Values{"_txlock": {"immediate"}}))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	writeDB.SetMaxOpenConns(1)
	writeDB.SetMaxIdleConns(1)
	writeDB.SetConnMaxLifetime(0)
	writeDB.SetConnMaxIdleTime(0)
	if err := migrate(ctx, writeDB); err != nil {
		writeDB.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	readDB, err := sqlx.Open("sqlite", dsn(path, url.Values{"_pragma": {"query_only(1)"}}))
	if err != nil {
		writeDB.Close()
		return nil, fmt.Errorf("open database %s for reading: %w", path, err)
	}
	readDB.SetMaxOpenConns(readConns)
	readDB.SetMaxIdleConns(readConns)
	readDB.SetConnMaxIdleTime(0)
	now := opts.now
	if now == nil {
		now = time.Now
	}
	s := &store{
		writeDB: writeDB, readDB: readDB, now: now,
		ops: make(chan *writeOp), stopping: make(chan struct{}), writerDone: make(chan struct{}),
	}
	go s.runWriter()
	return s, nil
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
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cannot read and write the database file: %w", err)
	}
	return f.Close()
}

// Close stops taking writes, commits the ones queued, and closes the
// database. It is safe to call more than once.
func (s *store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stopping)
		<-s.writerDone
		s.stmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
		s.closeErr = errors.Join(s.readDB.Close(), s.writeDB.Close())
	})
	return s.closeErr
}

// Ping runs a trivial query on the read pool.
func (s *store) Ping(ctx context.Context) error {
	var one int
	if err := s.readDB.GetContext(ctx, &one, "SELECT 1"); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// migration is one step of schema.sql.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationHeader = regexp.MustCompile(`(?m)^-- version (\d+): (.*)$`)

// parseMigrations splits schema.sql into its numbered steps, which must run
// 1, 2, 3… without gaps.
func parseMigrations(src string) ([]migration, error) {
	locs := migrationHeader.FindAllStringSubmatchIndex(src, -1)
	steps := make([]migration, 0, len(locs))
	for i, loc := range locs {
		end := len(src)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		v, err := strconv.Atoi(src[loc[2]:loc[3]])
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("schema.sql: step %d is numbered %q", i+1, src[loc[2]:loc[3]])
		}
		steps = append(steps, migration{version: v, name: src[loc[4]:loc[5]], sql: src[loc[1]:end]})
	}
	return steps, nil
}

// schemaVersion is the newest schema version this binary knows.
func schemaVersion() int {
	steps, _ := parseMigrations(schemaSQL)
	return len(steps)
}

// migrate brings the database up to the newest schema in one transaction.
// A database newer than this binary is refused rather than guessed at.
func migrate(ctx context.Context, db *sqlx.DB) error {
	return migrateTo(ctx, db, schemaVersion())
}

// migrateTo applies the steps of schema.sql up to version target.
func migrateTo(ctx context.Context, db *sqlx.DB, target int) error {
	steps, err := parseMigrations(schemaSQL)
	if err != nil {
		return err
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return describeOpenError(err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	var current int
	if err := tx.GetContext(ctx, &current, "PRAGMA user_version"); err != nil {
		return describeOpenError(err)
	}
	if current > len(steps) {
		return fmt.Errorf("schema version %d is newer than this binary knows (%d): use a newer usersvc", current, len(steps))
	}
	for _, step := range steps[current:target] {
		if _, err := tx.ExecContext(ctx, step.sql); err != nil {
			return fmt.Errorf("migrate to version %d (%s): %w", step.version, step.name, err)
		}
		if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(step.version)); err != nil {
			return fmt.Errorf("set schema version %d: %w", step.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	return nil
}

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

// sqliteCode is the extended SQLite result code inside err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// classifyWriteError marks the failures that mean the database cannot take
// writes now (read-only, full, I/O), so clients get 503 and reads go on.
func classifyWriteError(err error) error {
	if err == nil {
		return nil
	}
	switch sqliteCode(err) & 0xff {
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR,
		sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_PERM:
		if !errors.Is(err, errUnavailable) {
			return fmt.Errorf("%w: %w", errUnavailable, err)
		}
	}
	return err
}

// isUniqueViolation reports whether err is a UNIQUE constraint failure.
func isUniqueViolation(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// readStmt returns query prepared on the read pool, preparing it on first
// use: parsing SQL on every request costs more than running it.
func (s *store) readStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.readDB.PrepareContext(ctx, s.readDB.Rebind(query))
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// queryRead runs a query on the read pool; prepared says whether to keep
// its statement (only for query texts that do not vary with the data).
func (s *store) queryRead(ctx context.Context, prepared bool, query string, args ...any) (*sql.Rows, error) {
	s.reads.Add(1)
	// Reads are bounded (a key lookup or at most maxLimit+1 rows), so they
	// run to the end even if the client leaves: a cancellable context costs
	// two watcher goroutines a query (database/sql's and the driver's).
	ctx = context.WithoutCancel(ctx)
	if !prepared {
		return s.readDB.QueryContext(ctx, s.readDB.Rebind(query), args...)
	}
	st, err := s.readStmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// queryUsers selects the columns ur names with the query tail ("FROM …
// WHERE …") and scans every row.
func (s *store) queryUsers(ctx context.Context, prepared bool, ur userRead, tail string, args ...any) ([]User, error) {
	rows, err := s.queryRead(ctx, prepared, "SELECT "+ur.columns()+" "+tail, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	users := make([]User, 0, 8)
	dest := make([]any, 0, 7)
	for rows.Next() {
		users = append(users, User{})
		if err := rows.Scan(ur.dest(&users[len(users)-1], dest[:0])...); err != nil {
			return nil, err
		}
	}
	return users, rows.Err()
}

// queryGoals runs a query selecting goalColumns and scans every row.
func (s *store) queryGoals(ctx context.Context, prepared bool, query string, args ...any) ([]Goal, error) {
	rows, err := s.queryRead(ctx, prepared, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	goals := make([]Goal, 0, 8)
	for rows.Next() {
		goals = append(goals, Goal{})
		g := &goals[len(goals)-1]
		if err := rows.Scan(&g.ID, &g.UserID, &g.Title, &g.Period, &g.TargetMinutes, &g.Description, &g.Version, &g.CreatedAt, &g.ModifiedAt); err != nil {
			return nil, err
		}
	}
	return goals, rows.Err()
}

// precondition checks a row's current version inside the write
// transaction (If-Match); nil accepts any version.
type precondition func(version int64) error

// check runs p on version, accepting anything when p is nil.
func (p precondition) check(version int64) error {
	if p == nil {
		return nil
	}
	return p(version)
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

// userColumns are every column, for writes and authenticate; other reads
// select only what the response shows (userRead).
const userColumns = "id, username, email, full_name, password_hash, version, created_at, modified_at"

// userRead says which user columns a read selects: the default fields,
// the extras the response shows, and the row version when an ETag needs
// it. Reading and scanning fewer columns is most of what a list page costs.
type userRead struct {
	show    userShow
	version bool
}

// columns is the select list, in the order dest scans it.
func (ur userRead) columns() string {
	cols := "id, username"
	if ur.show.Email {
		cols += ", email"
	}
	if ur.show.FullName {
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
	if ur.show.Email {
		buf = append(buf, &u.Email)
	}
	if ur.show.FullName {
		buf = append(buf, &u.FullName)
	}
	if ur.version {
		buf = append(buf, &u.Version)
	}
	return append(buf, &u.CreatedAt, &u.ModifiedAt)
}

// GetUser returns the user with id, reading the extras show names, or
// errUserNotFound.
func (s *store) GetUser(ctx context.Context, id string, show userShow) (User, error) {
	users, err := s.queryUsers(ctx, true, userRead{show: show, version: true}, "FROM users WHERE id = ?", id)
	return oneUser(users, err, "get user")
}

// GetUserByUsername returns the user whose username matches name without
// regard to case, reading the extras show names, or errUserNotFound.
func (s *store) GetUserByUsername(ctx context.Context, name string, show userShow) (User, error) {
	users, err := s.queryUsers(ctx, true, userRead{show: show, version: true}, "FROM users WHERE lower(username) = lower(?)", name)
	return oneUser(users, err, "get user by username")
}

// oneUser is the single row of a lookup, or errUserNotFound.
func oneUser(users []User, err error, doing string) (User, error) {
	if err != nil {
		return User{}, fmt.Errorf("%s: %w", doing, err)
	}
	if len(users) == 0 {
		return User{}, errUserNotFound
	}
	return users[0], nil
}

// GetCredentials returns the user called name (without regard to case)
// with its password hash, for authenticate; or errUserNotFound.
func (s *store) GetCredentials(ctx context.Context, name string) (User, error) {
	var u User
	s.reads.Add(1)
	err := s.readDB.GetContext(ctx, &u, "SELECT "+userColumns+" FROM users WHERE lower(username) = lower(?)", name)
	return u, notFound(err, errUserNotFound, "get credentials")
}

// ListUsers returns one page of users in id order, reading the extras show
// names; with username, only the one whose username matches it without
// regard to case.
func (s *store) ListUsers(ctx context.Context, q page, username *string, show userShow) ([]User, error) {
	query := "FROM users WHERE id > ?"
	args := []any{q.After}
	if username != nil {
		query += " AND lower(username) = lower(?)"
		args = append(args, *username)
	}
	query += " ORDER BY id LIMIT ?"
	args = append(args, q.Limit)
	// A list's ETag hashes the page, so the rows' versions are not read.
	users, err := s.queryUsers(ctx, true, userRead{show: show}, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// CreateUser inserts u, setting its timestamps and version. A taken username
// or email is a *conflictError.
func (s *store) CreateUser(ctx context.Context, u *User) error {
	created := *u
	err := s.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		created = *u
		return insertUser(ctx, tx, &created, s.now())
	})
	if err != nil {
		return err
	}
	*u = created
	return nil
}

// insertUser inserts u inside tx at time now.
func insertUser(ctx context.Context, tx *sqlx.Tx, u *User, now time.Time) error {
	u.Version = 1
	u.CreatedAt = formatTime(now)
	u.ModifiedAt = u.CreatedAt
	_, err := tx.NamedExecContext(ctx, `INSERT INTO users (`+userColumns+`)
		VALUES (:id, :username, :email, :full_name, :password_hash, :version, :created_at, :modified_at)`, u)
	if isUniqueViolation(err) {
		return userConflict(ctx, tx, u)
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

// UpdateUser applies in to the user with id once pre accepts its current
// version; it returns the updated user.
func (s *store) UpdateUser(ctx context.Context, id string, in *userInput, pre precondition) (User, error) {
	var out User
	err := s.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		u, err := txGetUser(ctx, tx, "id = ?", id)
		if err != nil {
			return err
		}
		if err := applyToUser(ctx, tx, &u, in, pre, s.now()); err != nil {
			return err
		}
		out = u
		return nil
	})
	return out, err
}

// applyToUser writes in onto u inside tx, once pre accepts u's version.
func applyToUser(ctx context.Context, tx *sqlx.Tx, u *User, in *userInput, pre precondition, now time.Time) error {
	if err := pre.check(u.Version); err != nil {
		return err
	}
	in.apply(u)
	return updateUser(ctx, tx, u, now)
}

// PutUserByUsername creates the user called name when none exists
// (without regard to case) and otherwise updates it once pre (when
// given) accepts its version. created says which.
// Every write runs on the one writer, so concurrent calls create it once.
func (s *store) PutUserByUsername(ctx context.Context, name string, in *userInput, pre precondition, toCreate func() (User, error)) (out User, created bool, err error) {
	err = s.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		created = false
		u, err := txGetUser(ctx, tx, "lower(username) = lower(?)", name)
		if errors.Is(err, errUserNotFound) {
			nu, err := toCreate()
			if err != nil {
				return err
			}
			if err := insertUser(ctx, tx, &nu, s.now()); err != nil {
				return err
			}
			out, created = nu, true
			return nil
		}
		if err != nil {
			return err
		}
		if err := applyToUser(ctx, tx, &u, in, pre, s.now()); err != nil {
			return err
		}
		out = u
		return nil
	})
	return out, created, err
}

// txGetUser reads one user inside a write transaction.
func txGetUser(ctx context.Context, tx *sqlx.Tx, where string, arg any) (User, error) {
	var u User
	err := tx.GetContext(ctx, &u, "SELECT "+userColumns+" FROM users WHERE "+where, arg)
	return u, notFound(err, errUserNotFound, "get user for update")
}

// updateUser writes every column of u, bumping its version and modified_at.
func updateUser(ctx context.Context, tx *sqlx.Tx, u *User, now time.Time) error {
	u.Version++
	u.ModifiedAt = formatTime(now)
	_, err := tx.NamedExecContext(ctx, `UPDATE users SET username = :username, email = :email,
		full_name = :full_name, password_hash = :password_hash, version = :version,
		modified_at = :modified_at WHERE id = :id`, u)
	if isUniqueViolation(err) {
		return userConflict(ctx, tx, u)
	}
	if err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	return nil
}

// userConflict finds which unique fields of u another user already holds.
// It runs in the writer's transaction, so the answer cannot be stale.
func userConflict(ctx context.Context, tx *sqlx.Tx, u *User) error {
	var fields []string
	var n int
	if err := tx.GetContext(ctx, &n, "SELECT count(*) FROM users WHERE lower(username) = lower(?) AND id <> ?", u.Username, u.ID); err != nil {
		return fmt.Errorf("find conflict: %w", err)
	}
	if n > 0 {
		fields = append(fields, "username")
	}
	if u.Email != nil {
		if err := tx.GetContext(ctx, &n, "SELECT count(*) FROM users WHERE lower(email) = lower(?) AND id <> ?", *u.Email, u.ID); err != nil {
			return fmt.Errorf("find conflict: %w", err)
		}
		if n > 0 {
			fields = append(fields, "email")
		}
	}
	if len(fields) == 0 {
		fields = []string{"id"}
	}
	return &conflictError{fields: fields}
}

// DeleteUser deletes the user with id, and its goals with it (ON DELETE
// CASCADE), once pre accepts its current version.
func (s *store) DeleteUser(ctx context.Context, id string, pre precondition) error {
	return s.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		u, err := txGetUser(ctx, tx, "id = ?", id)
		if err != nil {
			return err
		}
		if err := pre.check(u.Version); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM users WHERE id = ?", id); err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		return nil
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

// GetGoal returns the goal with id, or errGoalNotFound.
func (s *store) GetGoal(ctx context.Context, id string) (Goal, error) {
	goals, err := s.queryGoals(ctx, true, "SELECT "+goalColumns+" FROM goals WHERE id = ?", id)
	if err != nil {
		return Goal{}, fmt.Errorf("get goal: %w", err)
	}
	if len(goals) == 0 {
		return Goal{}, errGoalNotFound
	}
	return goals[0], nil
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

// GoalsOfUsers returns the goals of every user in userIDs, in id order, in
// one query, keyed by user id.
func (s *store) GoalsOfUsers(ctx context.Context, userIDs []string) (map[string][]Goal, error) {
	byUser := make(map[string][]Goal, len(userIDs))
	if len(userIDs) == 0 {
		return byUser, nil
	}
	query := "SELECT " + goalColumns + " FROM goals WHERE user_id IN (" + placeholders(len(userIDs)) + ") ORDER BY user_id, id"
	goals, err := s.queryGoals(ctx, len(userIDs) == 1, query, anySlice(userIDs)...)
	if err != nil {
		return nil, fmt.Errorf("goals of users: %w", err)
	}
	for _, g := range goals {
		byUser[g.UserID] = append(byUser[g.UserID], g)
	}
	return byUser, nil
}

// UsersByID returns the users with the given ids in one query, keyed by id,
// reading the extras show names.
func (s *store) UsersByID(ctx context.Context, ids []string, show userShow) (map[string]User, error) {
	byID := make(map[string]User, len(ids))
	if len(ids) == 0 {
		return byID, nil
	}
	query := "FROM users WHERE id IN (" + placeholders(len(ids)) + ")"
	users, err := s.queryUsers(ctx, len(ids) == 1, userRead{show: show}, query, anySlice(ids)...)
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

// CreateGoal inserts g for its user, setting timestamps and version; a
// missing user is errUserNotFound.
func (s *store) CreateGoal(ctx context.Context, g *Goal) error {
	created := *g
	err := s.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		created = *g
		if _, err := txGetUser(ctx, tx, "id = ?", g.UserID); err != nil {
			return err
		}
		created.Version = 1
		created.CreatedAt = formatTime(s.now())
		created.ModifiedAt = created.CreatedAt
		_, err := tx.NamedExecContext(ctx, `INSERT INTO goals (`+goalColumns+`) VALUES (:id, :user_id,
			:title, :period, :target_minutes, :description, :version, :created_at, :modified_at)`, &created)
		if err != nil {
			return fmt.Errorf("insert goal: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	*g = created
	return nil
}

// UpdateGoal applies in to the goal with id once pre (when given)
// accepts its current version; it returns the updated goal.
func (s *store) UpdateGoal(ctx context.Context, id string, in *goalInput, pre precondition) (Goal, error) {
	var out Goal
	err := s.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		g, err := txGetGoal(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := pre.check(g.Version); err != nil {
			return err
		}
		in.apply(&g)
		g.Version++
		g.ModifiedAt = formatTime(s.now())
		_, err = tx.NamedExecContext(ctx, `UPDATE goals SET title = :title, period = :period,
			target_minutes = :target_minutes, description = :description, version = :version,
			modified_at = :modified_at WHERE id = :id`, &g)
		if err != nil {
			return fmt.Errorf("update goal: %w", err)
		}
		out = g
		return nil
	})
	return out, err
}

// DeleteGoal deletes the goal with id once pre (when given) accepts its
// current version.
func (s *store) DeleteGoal(ctx context.Context, id string, pre precondition) error {
	return s.write(ctx, func(ctx context.Context, tx *sqlx.Tx) error {
		g, err := txGetGoal(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := pre.check(g.Version); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM goals WHERE id = ?", id); err != nil {
			return fmt.Errorf("delete goal: %w", err)
		}
		return nil
	})
}

// txGetGoal reads one goal inside a write transaction.
func txGetGoal(ctx context.Context, tx *sqlx.Tx, id string) (Goal, error) {
	var g Goal
	err := tx.GetContext(ctx, &g, "SELECT "+goalColumns+" FROM goals WHERE id = ?", id)
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

// backupDatabase writes a consistent copy of the database at src to dst
// with VACUUM INTO, which reads one snapshot (safe while a server writes).
// The copy is made beside dst and linked into place, so dst never holds a
// partial copy and an existing dst is never overwritten.
func backupDatabase(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("database %s: %w", src, err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("%s already exists: refusing to overwrite it", dst)
	}
	tmp := dst + ".partial"
	os.Remove(tmp) //nolint:errcheck // a leftover from a failed run, if any
	defer os.Remove(tmp)
	db, err := sqlx.Open("sqlite", dsn(src, url.Values{"mode": {"ro"}}))
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
	if err := os.Link(tmp, dst); err != nil {
		return fmt.Errorf("put the copy at %s: %w", dst, err)
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
	if err := db.GetContext(ctx, &result, "PRAGMA integrity_check"); err != nil || result != "ok" {
		return fmt.Errorf("integrity check of %s: %q %v", path, result, err)
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
