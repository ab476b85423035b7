// copy.go: usersvc copy SRC DST, which moves every user and goal from one
// database to an empty one of either kind (SQLite to PostgreSQL is the case
// that matters: a team outgrowing one machine keeps every login).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// copyBatch is how many rows one INSERT carries: 10 columns a row stays
// well under both engines' limits on parameters.
const copyBatch = 500

// copyCommand copies SRC to DST (see copyDatabase) and says what it copied.
func copyCommand(ctx context.Context, src, dst string, stdout io.Writer) error {
	n, err := copyDatabase(ctx, src, dst)
	if err != nil {
		left := "nothing was committed to " + describeDB(dst)
		if _, committing := errors.AsType[*commitError](err); committing {
			left = "while committing: " + describeDB(dst) + " holds the whole copy or none of it; look before copying again"
		}
		return fmt.Errorf("copy: %w", interrupted(ctx, err, left))
	}
	fmt.Fprintf(stdout, "copied %d users and %d goals from %s to %s\n", n.users, n.goals, describeDB(src), describeDB(dst))
	return nil
}

// describeDB is a -db value fit to print: a URL loses its password.
func describeDB(db string) string {
	if isPostgresURL(db) {
		return redactURL(db)
	}
	return db
}

// copyCounts is what a copy moved.
type copyCounts struct{ users, goals int }

// copyDatabase copies every user and goal, with ids, password hashes,
// timestamps and versions unchanged, from SRC (read in one snapshot, so a
// server may go on writing to it) to DST, which must hold no users or
// goals. Everything is written in one transaction, which commits only when
// the rows in DST are as many as in the snapshot: a copy is whole or
// absent.
func copyDatabase(ctx context.Context, src, dst string) (copyCounts, error) {
	var n copyCounts
	from, err := openCopySource(ctx, src)
	if err != nil {
		return n, fmt.Errorf("source: %w", err)
	}
	defer from.close()
	snap, err := from.snapshot(ctx)
	if err != nil {
		return n, fmt.Errorf("read %s: %w", from.describe(), err)
	}
	defer snap.Rollback() //nolint:errcheck // read-only
	if err := checkSourceSchema(ctx, from, snap); err != nil {
		return n, fmt.Errorf("source: %w", err) // before the destination is touched
	}
	to, err := openCopyDestination(ctx, dst)
	if err != nil {
		return n, fmt.Errorf("destination: %w", err)
	}
	defer to.close()
	tx, err := to.adminDB().BeginTxx(ctx, nil)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", to.describe(), err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if err := lockCopyDestination(ctx, tx, dst); err != nil {
		return n, fmt.Errorf("lock %s: %w", to.describe(), err)
	}
	if err := refuseNonEmpty(ctx, tx, to.describe(), copyTables); err != nil {
		return n, err
	}
	for _, t := range copyTables {
		copied, err := copyRows(ctx, snap, tx, t, isPostgresURL(dst))
		if err != nil {
			if t.name == "users" && to.isUniqueViolation(err) {
				return n, fmt.Errorf("two users of %s have one username or email as this usersvc compares them (without regard to case, or to a dot ending a domain): start this usersvc on the source once, which names them, then copy again: %w", from.describe(), err)
			}
			return n, err
		}
		if err := checkCount(ctx, snap, tx, t.name, copied); err != nil {
			return n, err
		}
		if t.name == "users" {
			n.users = copied
		} else {
			n.goals = copied
		}
	}
	if err := tx.Commit(); err != nil {
		return n, &commitError{err}
	}
	return n, nil
}

// commitError is a failed COMMIT of the copy: cut short (by a signal, a
// lost connection), it may have taken effect on the server or not.
type commitError struct{ err error }

func (e *commitError) Error() string { return "commit the copy: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// lockCopyDestination keeps a PostgreSQL destination's tables from any
// other writer until the copy commits: a server's writes wait, and a second
// copy finds the first's rows and is refused, rather than both landing in
// one database. A SQLite destination is locked to the copy already (see
// openCopyDestination).
func lockCopyDestination(ctx context.Context, tx *sqlx.Tx, dst string) error {
	if !isPostgresURL(dst) {
		return nil
	}
	_, err := tx.ExecContext(ctx, "LOCK TABLE users, goals IN EXCLUSIVE MODE")
	return err
}

// copySource is what a copy needs of the database it reads.
type copySource interface {
	snapshot(ctx context.Context) (*sqlx.Tx, error)
	schemaVersion(ctx context.Context, tx *sqlx.Tx) (int, error)
	describe() string
	close() error
}

// openCopySource opens the database a copy reads, which must exist and
// is left as it is: a server may be running on it, on its schema. A
// SQLite file is opened read-only (see openSQLiteSource).
func openCopySource(ctx context.Context, src string) (copySource, error) {
	if isPostgresURL(src) {
		return openEngine(ctx, src, storeOptions{statementTimeout: copyStatementTimeout})
	}
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no database at %s", src)
	}
	return openSQLiteSource(src)
}

// checkSourceSchema fails unless snap reads a usersvc database with both
// tables, at a schema this binary knows.
func checkSourceSchema(ctx context.Context, eng copySource, snap *sqlx.Tx) error {
	v, err := eng.schemaVersion(ctx, snap)
	if err != nil {
		return fmt.Errorf("%s is not a usersvc database: %w", eng.describe(), err)
	}
	switch {
	case v == 0:
		return fmt.Errorf("%s is not a usersvc database (it has no schema)", eng.describe())
	case v < copyMinSchema:
		return fmt.Errorf("%s has schema version %d, before goals: start usersvc on it once to bring it up to date", eng.describe(), v)
	case v > schemaVersion():
		return fmt.Errorf("%s has schema version %d, newer than this binary knows (%d): use a newer usersvc", eng.describe(), v, schemaVersion())
	}
	return nil
}

// copyStatementTimeout bounds the statements of a copy's PostgreSQL source
// instead of a server's few seconds: reading a large source in one
// snapshot takes as long as it takes, and takes no lock a server waits on.
// The destination keeps a server's timeout, which also bounds its waits
// for locks (a second copy's, a SQLite file's busy writer).
const copyStatementTimeout = 24 * time.Hour

// copyMinSchema is the first schema version with every table a copy reads.
const copyMinSchema = 2

// openCopyDestination opens the database a copy writes (a SQLite file is
// created when missing, and locked against a server) and brings its schema
// up to date, but only once it is known to hold no users or goals: a
// refused copy leaves the destination as it found it.
func openCopyDestination(ctx context.Context, dst string) (engine, error) {
	eng, err := openEngine(ctx, dst, storeOptions{exclusive: true})
	if err != nil {
		return nil, err
	}
	if err := refuseNonEmptySchema(ctx, eng); err != nil {
		eng.close()
		return nil, err
	}
	if err := migrate(ctx, eng, nil); err != nil {
		eng.close()
		return nil, fmt.Errorf("database %s: %w", eng.describe(), err)
	}
	return eng, nil
}

// refuseNonEmptySchema is refuseNonEmpty before any migration: it looks
// only at the tables the database's schema version already has, in a
// transaction it rolls back.
func refuseNonEmptySchema(ctx context.Context, eng engine) error {
	tx, err := eng.adminDB().BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("open %s: %w", eng.describe(), err)
	}
	defer tx.Rollback() //nolint:errcheck // only reads (lockSchema's table is rolled back too)
	if err := eng.lockSchema(ctx, tx); err != nil {
		return fmt.Errorf("lock the schema of %s: %w", eng.describe(), err)
	}
	v, err := eng.schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if v == 0 {
		if err := refuseOtherTables(ctx, eng, tx); err != nil {
			return err
		}
	}
	var present []copyTable
	for _, t := range copyTables {
		if v >= t.since {
			present = append(present, t)
		}
	}
	return refuseNonEmpty(ctx, tx, eng.describe(), present)
}

// refuseOtherTables fails when a database with no usersvc schema holds
// tables: it belongs to something else, which a copy must not add to. It
// is PostgreSQL's check: a SQLite file like that is refused earlier, as it
// is opened (refuseForeignDatabase).
func refuseOtherTables(ctx context.Context, eng engine, tx *sqlx.Tx) error {
	names, err := eng.tables(ctx, tx)
	if err != nil {
		return fmt.Errorf("list the tables of %s: %w", eng.describe(), err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%s is not a usersvc database: it has no usersvc schema but tables of its own (%s); copy into a new or empty database",
			eng.describe(), strings.Join(names, ", "))
	}
	return nil
}

// copyTable is one table a copy moves: the columns read, the columns
// written, and how a row read becomes a row written (the users' fold keys
// are computed anew, so the destination's keys follow this binary).
type copyTable struct {
	name        string
	since       int // the schema version that made the table
	read, write string
	row         func(scan func(...any) error) ([]any, error)
}

var copyTables = []copyTable{
	{"users", 1, userColumns, "id, username, username_key, email, email_key, full_name, password_hash, version, created_at, modified_at", func(scan func(...any) error) ([]any, error) {
		var u User
		if err := scan(&u.ID, &u.Username, &u.Email, &u.FullName, &u.PasswordHash, &u.Version, &u.CreatedAt, &u.ModifiedAt); err != nil {
			return nil, err
		}
		return []any{u.ID, u.Username, foldKey(u.Username), u.Email, emailKey(u.Email), u.FullName, u.PasswordHash, u.Version, u.CreatedAt, u.ModifiedAt}, nil
	}},
	{"goals", copyMinSchema, goalColumns, goalColumns, func(scan func(...any) error) ([]any, error) {
		var g Goal
		if err := scanGoal(scanner(scan), &g); err != nil {
			return nil, err
		}
		return []any{g.ID, g.UserID, g.Title, g.Period, g.TargetMinutes, g.Description, g.Version, g.CreatedAt, g.ModifiedAt}, nil
	}},
}

// scanner adapts a scan function to scanGoal's argument.
type scanner func(...any) error

func (s scanner) Scan(dest ...any) error { return s(dest...) }

// copyRows streams one table from snap into tx in id order, a batch of
// rows an INSERT, and returns how many rows it wrote. toPostgres refuses,
// by its id, a row PostgreSQL cannot hold, rather than fail its batch with
// an encoding error.
func copyRows(ctx context.Context, snap, tx *sqlx.Tx, t copyTable, toPostgres bool) (int, error) {
	rows, err := snap.QueryContext(ctx, "SELECT "+t.read+" FROM "+t.name+" ORDER BY id")
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", t.name, err)
	}
	defer rows.Close()
	copied := 0
	var batch [][]any
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := insertRows(ctx, tx, t, batch); err != nil {
			return err
		}
		copied += len(batch)
		batch = batch[:0]
		return nil
	}
	for rows.Next() {
		row, err := t.row(rows.Scan)
		if err != nil {
			return 0, fmt.Errorf("read %s: %w", t.name, err)
		}
		if toPostgres && rowHoldsNUL(row) {
			return 0, fmt.Errorf("copy %s: the row with id %v holds U+0000, which PostgreSQL cannot store (older versions let a goal's description hold it): change it (PATCH /api/%s/%v) and copy again", t.name, row[0], t.name, row[0])
		}
		if batch = append(batch, row); len(batch) == copyBatch {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", t.name, err)
	}
	return copied, flush()
}

// rowHoldsNUL reports whether a text value of row holds U+0000.
func rowHoldsNUL(row []any) bool {
	for _, v := range row {
		if p, ok := v.(*string); ok && p != nil {
			v = *p
		}
		if s, ok := v.(string); ok && hasNUL(s) {
			return true
		}
	}
	return false
}

// insertRows writes rows into t with one multi-row INSERT.
func insertRows(ctx context.Context, tx *sqlx.Tx, t copyTable, rows [][]any) error {
	one := "(" + placeholders(len(rows[0])) + ")"
	values := strings.TrimSuffix(strings.Repeat(one+", ", len(rows)), ", ")
	args := make([]any, 0, len(rows)*len(rows[0]))
	for _, r := range rows {
		args = append(args, r...)
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind("INSERT INTO "+t.name+" ("+t.write+") VALUES "+values), args...); err != nil {
		return fmt.Errorf("write %s: %w", t.name, err)
	}
	return nil
}

// refuseNonEmpty fails when any of tables in the destination holds a row:
// a copy never merges into, or overwrites, data.
func refuseNonEmpty(ctx context.Context, tx *sqlx.Tx, dst string, tables []copyTable) error {
	for _, t := range tables {
		var n int
		if err := tx.GetContext(ctx, &n, "SELECT count(*) FROM "+t.name); err != nil {
			return fmt.Errorf("count %s in %s: %w", t.name, dst, err)
		}
		if n > 0 {
			return fmt.Errorf("%s is not empty (it has %d %s): copy only into an empty database", dst, n, t.name)
		}
	}
	return nil
}

// checkCount fails unless the table holds as many rows in the destination
// (inside the copy's transaction) as in the source snapshot, and as many
// as were written.
func checkCount(ctx context.Context, snap, tx *sqlx.Tx, table string, copied int) error {
	var want, got int
	if err := snap.GetContext(ctx, &want, "SELECT count(*) FROM "+table); err != nil {
		return fmt.Errorf("count %s in the source: %w", table, err)
	}
	if err := tx.GetContext(ctx, &got, "SELECT count(*) FROM "+table); err != nil {
		return fmt.Errorf("count %s in the destination: %w", table, err)
	}
	if want != got || got != copied {
		return fmt.Errorf("%s: the source has %d, %d were written, the destination has %d: nothing was committed", table, want, copied, got)
	}
	return nil
}
