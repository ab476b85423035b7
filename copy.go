// copy.go: usersvc copy SRC DST, which moves every user and goal from one
// database to an empty one of either kind (SQLite to PostgreSQL is the case
// that matters: a team outgrowing one machine keeps every login).
package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jmoiron/sqlx"
)

// copyBatch is how many rows one INSERT carries: 10 columns a row stays
// well under both engines' limits on parameters.
const copyBatch = 500

// copyCommand copies SRC to DST (see copyDatabase) and says what it copied.
func copyCommand(ctx context.Context, src, dst string, stdout io.Writer) error {
	n, err := copyDatabase(ctx, src, dst)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
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
	from, err := openStore(ctx, src, storeOptions{})
	if err != nil {
		return n, fmt.Errorf("source: %w", err)
	}
	defer from.Close()
	to, err := openStore(ctx, dst, storeOptions{exclusive: true})
	if err != nil {
		return n, fmt.Errorf("destination: %w", err)
	}
	defer to.Close()
	snap, err := from.eng.snapshot(ctx)
	if err != nil {
		return n, fmt.Errorf("read %s: %w", from.eng.describe(), err)
	}
	defer snap.Rollback() //nolint:errcheck // read-only
	tx, err := to.eng.adminDB().BeginTxx(ctx, nil)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", to.eng.describe(), err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if err := refuseNonEmpty(ctx, tx, to.eng.describe()); err != nil {
		return n, err
	}
	for _, t := range copyTables {
		copied, err := copyRows(ctx, snap, tx, t)
		if err != nil {
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
		return n, fmt.Errorf("commit the copy: %w", err)
	}
	return n, nil
}

// copyTable is one table a copy moves: the columns read, the columns
// written, and how a row read becomes a row written (the users' fold keys
// are computed anew, so the destination's keys follow this binary).
type copyTable struct {
	name        string
	read, write string
	row         func(scan func(...any) error) ([]any, error)
}

var copyTables = []copyTable{
	{"users", userColumns, "id, username, username_key, email, email_key, full_name, password_hash, version, created_at, modified_at", func(scan func(...any) error) ([]any, error) {
		var u User
		if err := scan(&u.ID, &u.Username, &u.Email, &u.FullName, &u.PasswordHash, &u.Version, &u.CreatedAt, &u.ModifiedAt); err != nil {
			return nil, err
		}
		return []any{u.ID, u.Username, foldKey(u.Username), u.Email, emailKey(u.Email), u.FullName, u.PasswordHash, u.Version, u.CreatedAt, u.ModifiedAt}, nil
	}},
	{"goals", goalColumns, goalColumns, func(scan func(...any) error) ([]any, error) {
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
// rows an INSERT, and returns how many rows it wrote.
func copyRows(ctx context.Context, snap, tx *sqlx.Tx, t copyTable) (int, error) {
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

// refuseNonEmpty fails when the destination holds any user or goal: a copy
// never merges into, or overwrites, data.
func refuseNonEmpty(ctx context.Context, tx *sqlx.Tx, dst string) error {
	for _, table := range []string{"users", "goals"} {
		var n int
		if err := tx.GetContext(ctx, &n, "SELECT count(*) FROM "+table); err != nil {
			return fmt.Errorf("count %s in %s: %w", table, dst, err)
		}
		if n > 0 {
			return fmt.Errorf("%s is not empty (it has %d %s): copy only into an empty database", dst, n, table)
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
