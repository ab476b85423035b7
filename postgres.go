// postgres.go: the PostgreSQL engine, for teams that run several instances
// on one database: a pool through pgx, writes as transactions that retry
// when rows change under them, error codes, the schema version under an
// advisory lock, and no backup (that is pg_dump's job).
package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"
)

//go:embed schema_postgres.sql
var postgresSchema string

// postgresEngine is one instance's pool on a PostgreSQL database that other
// instances share: nothing here may assume it sees every write.
type postgresEngine struct {
	db       *sqlx.DB
	redacted string // the URL without its password, for logs and errors
	timeout  time.Duration
}

// schemaLockKey is the advisory lock migrations hold, so that instances
// starting at once on an empty database migrate it exactly once.
const schemaLockKey = 0x75736572737663 // "usersvc"

// connectTimeout bounds each attempt to reach the server, so a database
// that is down is a quick 503, not a hang.
const connectTimeout = 3 * time.Second

// openPostgres connects to the database at rawURL with a pool of
// opts.maxConns connections, each with a statement timeout.
func openPostgres(ctx context.Context, rawURL string, opts storeOptions) (*postgresEngine, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		// pgx's message may quote the URL: say only that it does not parse.
		return nil, errors.New("the database URL does not parse (postgres://user:password@host:port/database)")
	}
	redacted := describeConfig(cfg)
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > connectTimeout {
		cfg.ConnectTimeout = connectTimeout
	}
	cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(opts.statementTimeout.Milliseconds(), 10)
	cfg.RuntimeParams["application_name"] = "usersvc"
	db := sqlx.NewDb(stdlib.OpenDB(*cfg), "pgx")
	db.SetMaxOpenConns(opts.maxConns)
	db.SetMaxIdleConns(opts.maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(30 * time.Minute)
	e := &postgresEngine{db: db, redacted: redacted, timeout: opts.statementTimeout}
	pingCtx, cancel := context.WithTimeout(ctx, 2*connectTimeout)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %s", redacted, scrubPassword(err.Error(), cfg))
	}
	return e, nil
}

// redactURL is a database URL fit for anything a person or a log may
// read: who, where and which database, never the password (wherever the
// URL carries it: in the user part, or as ?password=), nor any other
// parameter. It is built from what pgx makes of the URL, so a URL that
// net/url reads differently (a password holding '#' or '?') cannot slip
// through.
func redactURL(raw string) string {
	cfg, err := pgx.ParseConfig(raw)
	if err != nil {
		return "postgres://(a URL that does not parse)"
	}
	return describeConfig(cfg)
}

// describeConfig is postgres://user@host:port/database.
func describeConfig(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("postgres://%s@%s/%s", cfg.User, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), cfg.Database)
}

// scrubPassword removes cfg's password from a message, should a driver
// ever quote it (pgx does not). A short password, or one found in what
// the message shows anyway (the user, the database, the host), would turn
// up by coincidence: replacing it there garbles the message and tells the
// reader what the password is ("user=xxxxx"), so it is left alone.
func scrubPassword(msg string, cfg *pgx.ConnConfig) string {
	password := cfg.Password
	if len(password) < minScrubbedPassword {
		return msg
	}
	for _, shown := range []string{cfg.User, cfg.Database, cfg.Host} {
		if strings.Contains(shown, password) {
			return msg
		}
	}
	msg = strings.ReplaceAll(msg, password, "xxxxx")
	return strings.ReplaceAll(msg, url.QueryEscape(password), "xxxxx")
}

// minScrubbedPassword is the shortest password scrubPassword looks for.
const minScrubbedPassword = 8

func (e *postgresEngine) adminDB() *sqlx.DB         { return e.db }
func (e *postgresEngine) describe() string          { return e.redacted }
func (e *postgresEngine) forUpdate() string         { return " FOR UPDATE" }
func (e *postgresEngine) pools() map[string]*sql.DB { return map[string]*sql.DB{"postgres": e.db.DB} }
func (e *postgresEngine) close() error              { return e.db.Close() }

// write runs fn in its own transaction (READ COMMITTED). Other instances
// write at the same time, so fn names the row versions it read; when one
// moved on (errRetry), or PostgreSQL reports a serialization failure or a
// deadlock, fn runs again in a new transaction. So does a transaction that
// could not begin on a pooled connection the server had closed (a restart,
// a failover): nothing was sent, and the pool dials afresh. One that could
// not begin because no connection came free in time does not: the pool is
// busy (a lock held elsewhere keeps its connections waiting), and running
// again would wait again, 80 s where the client waits 60 (review 19).
func (e *postgresEngine) write(ctx context.Context, fn txFunc, hooks commitHooks) error {
	for try := 1; ; try++ {
		err := e.runTx(ctx, fn)
		var be beginError
		retry := errors.Is(err, errRetry) || isRetryable(err) ||
			errors.As(err, &be) && isServerGone(err) && !poolBusy(err)
		if err == nil || try == maxWriteTries || !retry {
			if hooks.ended != nil {
				hooks.ended(err == nil)
			}
			return err
		}
	}
}

// poolBusy reports a begin that ran out of time waiting for a pooled
// connection: a deadline, but no connection attempt that failed (pgx
// reports a connect that timed out as a deadline too, inside a
// ConnectError, and that one is worth another try).
func poolBusy(err error) bool {
	_, connecting := errors.AsType[*pgconn.ConnectError](err)
	return errors.Is(err, context.DeadlineExceeded) && !connecting
}

// beginError is a failure to begin a transaction: nothing of it ran.
type beginError struct{ error }

func (e beginError) Unwrap() error { return e.error }

// runTx runs fn in one transaction. The client leaving does not cut it
// short (a write that is under way finishes, as on SQLite); the statement
// timeout and this deadline bound it instead.
func (e *postgresEngine) runTx(ctx context.Context, fn txFunc) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*e.timeout)
	defer cancel()
	// READ COMMITTED, whatever the server's default: the writes lock the
	// rows they read (FOR UPDATE) and retry on conflicts they can meet.
	tx, err := e.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return beginError{fmt.Errorf("begin write: %w", err)}
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// pgCode is the SQLSTATE of a PostgreSQL error inside err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// query runs a read on the pool; pgx prepares and keeps each query text
// on each connection by itself. The read, its wait for a connection
// included, is bounded as a write's begin is: a pool kept busy (by writes
// waiting on a lock held elsewhere) makes it a 503, not an answer that
// never comes.
func (e *postgresEngine) query(ctx context.Context, query string, _ bool, args ...any) (rowsIter, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*e.timeout)
	rows, err := e.db.QueryContext(ctx, e.db.Rebind(query), args...)
	if err != nil {
		cancel()
		return nil, err
	}
	return boundedRows{rows, cancel}, nil
}

// boundedRows are rows whose deadline ends when they are closed.
type boundedRows struct {
	*sql.Rows
	cancel context.CancelFunc
}

func (r boundedRows) Close() error {
	err := r.Rows.Close()
	r.cancel()
	return err
}

// beginRead begins a read-only transaction that reads one snapshot,
// bounded as a read is (see query), its wait for a connection included.
func (e *postgresEngine) beginRead(ctx context.Context) (readTx, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*e.timeout)
	tx, err := e.snapshot(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("begin a read: %w", err)
	}
	return sqlReadTx{tx, cancel}, nil
}

// sqlReadTx is a readTx over a database/sql transaction.
type sqlReadTx struct {
	tx     *sqlx.Tx
	cancel context.CancelFunc
}

func (t sqlReadTx) query(ctx context.Context, query string, _ bool, args ...any) (rowsIter, error) {
	return t.tx.QueryContext(ctx, t.tx.Rebind(query), args...)
}

// end rolls back: the transaction only read, so there is nothing to keep,
// and a connection that broke meanwhile is dropped by database/sql. Again,
// it does nothing (database/sql says the transaction is done).
func (t sqlReadTx) end() {
	t.tx.Rollback() //nolint:errcheck // see above
	t.cancel()
}

// abortsOnError is true: after a failed statement PostgreSQL refuses the
// rest of the transaction, unless it was under a savepoint.
func (e *postgresEngine) abortsOnError() bool { return true }

// txExec runs a statement in a write transaction; pgx keeps the prepared
// statement on the connection by itself.
func (e *postgresEngine) txExec(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (sql.Result, error) {
	return tx.ExecContext(ctx, tx.Rebind(query), args...)
}

// txQueryRow is txExec for a query that returns one row.
func (e *postgresEngine) txQueryRow(ctx context.Context, tx *sqlx.Tx, query string, args ...any) *sql.Row {
	return tx.QueryRowContext(ctx, tx.Rebind(query), args...)
}

// isRetryable reports a serialization failure or a deadlock: the
// transaction did nothing, and running it again can succeed.
func isRetryable(err error) bool {
	return isRetryableCode(pgCode(err))
}

// isRetryableCode: serialization_failure, deadlock_detected.
func isRetryableCode(c string) bool { return c == "40001" || c == "40P01" }

// classify maps PostgreSQL's failures onto the domain's: a lost or refused
// connection, a server shutting down, a read-only standby, too many
// connections or a statement cut by the timeout are unavailable (503, the
// cause in the log, and the pool reconnects by itself when the server is
// back); a foreign key failure means the goal's user is gone.
func (e *postgresEngine) classify(err error) error {
	if err == nil {
		return nil
	}
	switch c := pgCode(err); {
	case c == "23503":
		return errUserNotFound
	case c == "57014", // query_canceled: the statement timeout
		c == "25006",                // read_only_sql_transaction: a standby
		strings.HasPrefix(c, "08"),  // connection exception
		strings.HasPrefix(c, "53"),  // insufficient resources: too many connections, disk full
		strings.HasPrefix(c, "57P"), // admin or crash shutdown, cannot connect now
		isRetryableCode(c):          // retried already, still failing
		return unavailable(err)
	case c != "":
		return err
	}
	if isConnectionFailure(err) {
		return unavailable(err)
	}
	return err
}

// isServerGone reports a connection the server has closed or refused: a
// connection failure, or an admin or crash shutdown, or a server that
// cannot take connections yet.
func isServerGone(err error) bool {
	c := pgCode(err)
	return isConnectionFailure(err) || strings.HasPrefix(c, "57P") || strings.HasPrefix(c, "08")
}

// isConnectionFailure reports errors of reaching the server rather than of
// the query: the database is down, restarting, or the network is.
func isConnectionFailure(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, errStoreClosed)
}

// isUniqueViolation reports a unique_violation.
func (e *postgresEngine) isUniqueViolation(err error) bool { return pgCode(err) == "23505" }

// ---- migrations ----

func (e *postgresEngine) schemaSource() string { return postgresSchema }

// lockSchema takes the migrations' advisory lock for the rest of the
// transaction (other instances wait here, then find the schema current)
// and makes sure the version table exists. The migration's transaction has
// no statement timeout: the pool's (5 s) would make an instance that waits
// for another's migration give up, and would cut a step over a large
// table; its waits for table locks keep that bound (lock_timeout).
func (e *postgresEngine) lockSchema(ctx context.Context, tx *sqlx.Tx) error {
	if _, err := tx.ExecContext(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
		return e.classify(err)
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLockKey)); err != nil {
		return e.classify(err)
	}
	// Past the wait for the lock, a step may still not wait long for a
	// table's lock: one queued behind a long reader of users (a pg_dump, an
	// idle psql) would queue every instance's reads and writes behind it.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", e.timeout.Milliseconds())); err != nil {
		return e.classify(err)
	}
	_, err := tx.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS usersvc_schema (version integer NOT NULL)")
	return err
}

func (e *postgresEngine) schemaVersion(ctx context.Context, tx *sqlx.Tx) (int, error) {
	var v int
	if err := tx.GetContext(ctx, &v, "SELECT coalesce(max(version), 0) FROM usersvc_schema"); err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	return v, nil
}

func (e *postgresEngine) tables(ctx context.Context, tx *sqlx.Tx) ([]string, error) {
	var names []string
	err := tx.SelectContext(ctx, &names, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_name <> 'usersvc_schema' ORDER BY table_name`)
	return names, err
}

func (e *postgresEngine) setSchemaVersion(ctx context.Context, tx *sqlx.Tx, v int) error {
	if _, err := tx.ExecContext(ctx, "DELETE FROM usersvc_schema"); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, "INSERT INTO usersvc_schema (version) VALUES ($1)", v)
	return err
}

// snapshot begins a read-only transaction that sees one state of the
// database throughout.
func (e *postgresEngine) snapshot(ctx context.Context) (*sqlx.Tx, error) {
	return e.db.BeginTxx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
}

// backup is refused: a consistent copy of a PostgreSQL database is
// pg_dump's job.
func (e *postgresEngine) backup(context.Context, string) error {
	return errors.New("the database is PostgreSQL: back it up with pg_dump (for example: pg_dump --format=custom --file=usersvc.dump \"$USERSVC_DB\")")
}
