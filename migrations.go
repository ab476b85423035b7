// migrations.go: the schema's numbered, forward-only steps (one SQL file
// per engine, the same numbers and names in both) and the Go steps that
// fill in what SQL cannot compute.
package main

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/jmoiron/sqlx"
	sqlite3 "modernc.org/sqlite/lib"
)

// migration is one step of a schema file.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationHeader = regexp.MustCompile(`(?m)^-- version (\d+): (.*)$`)

// parseMigrations splits a schema file into its numbered steps, which must
// run 1, 2, 3… without gaps.
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
			return nil, fmt.Errorf("schema: step %d is numbered %q", i+1, src[loc[2]:loc[3]])
		}
		steps = append(steps, migration{version: v, name: src[loc[4]:loc[5]], sql: src[loc[1]:end]})
	}
	return steps, nil
}

// schemaVersion is the newest schema version this binary knows (both
// schema files have the same steps; a test checks it).
func schemaVersion() int {
	steps, _ := parseMigrations(sqliteSchema)
	return len(steps)
}

// migrationHooks run after the SQL of their step, in the same transaction,
// for what SQL cannot do alike on both engines.
var migrationHooks = map[int]func(ctx context.Context, tx *sqlx.Tx) error{
	3: fillFoldKeys,
	5: refoldDottedEmails,
}

// migrationPreparations run before the SQL of their step, in the same
// transaction. Step 6's CHECK would fail on keys ending in a dot that
// instances of a version before step 5 wrote into a database already at
// version 5 (on PostgreSQL, during a rolling upgrade): step 5's refold runs
// again first, naming any two users that are one mailbox.
var migrationPreparations = map[int]func(ctx context.Context, tx *sqlx.Tx) error{
	6: refoldDottedEmails,
}

// migrate brings the database up to the newest schema in one transaction.
// A database newer than this binary is refused rather than guessed at.
// onUpgrade (nil for none) is told before an existing database is
// upgraded, which may take a while on a large one.
func migrate(ctx context.Context, eng engine, onUpgrade func(from, to int)) error {
	return migrateTo(ctx, eng, schemaVersion(), onUpgrade)
}

// migrateTo applies the steps of the engine's schema up to version target,
// holding the engine's migration lock, so that several instances starting
// at once migrate exactly once.
func migrateTo(ctx context.Context, eng engine, target int, onUpgrade func(from, to int)) error {
	steps, err := parseMigrations(eng.schemaSource())
	if err != nil {
		return err
	}
	tx, err := eng.adminDB().BeginTxx(ctx, nil)
	if err != nil {
		return describeOpenError(err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	if err := eng.lockSchema(ctx, tx); err != nil {
		return fmt.Errorf("lock the schema for migration: %w", err)
	}
	current, err := eng.schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if current > len(steps) {
		return fmt.Errorf("schema version %d is newer than this binary knows (%d): use a newer usersvc", current, len(steps))
	}
	if current > 0 && current < target && onUpgrade != nil {
		onUpgrade(current, target)
	}
	for _, step := range steps[current:max(current, target)] {
		if prepare := migrationPreparations[step.version]; prepare != nil {
			if err := prepare(ctx, tx); err != nil {
				return fmt.Errorf("migrate to version %d (%s): %w", step.version, step.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx, step.sql); err != nil {
			return fmt.Errorf("migrate to version %d (%s): %w", step.version, step.name, err)
		}
		if hook := migrationHooks[step.version]; hook != nil {
			if err := hook(ctx, tx); err != nil {
				return fmt.Errorf("migrate to version %d (%s): %w", step.version, step.name, err)
			}
		}
		if err := eng.setSchemaVersion(ctx, tx, step.version); err != nil {
			return fmt.Errorf("set schema version %d: %w", step.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migrations: %w", err)
	}
	return nil
}

// fillFoldKeys computes username_key and email_key for the users that
// exist (step 3), a batch of rows at a time. Two addresses that differ only
// in non-ASCII case were two users before and would be one now, so the
// unique index stops the step, and the message names the user, rather than
// choosing which to keep.
func fillFoldKeys(ctx context.Context, tx *sqlx.Tx) error {
	const batch = 1000
	read := tx.Rebind("SELECT id, username, email FROM users WHERE id > ? ORDER BY id LIMIT ?")
	update := tx.Rebind("UPDATE users SET username_key = ?, email_key = ? WHERE id = ?")
	type row struct {
		id, username string
		email        *string
	}
	for after := ""; ; {
		var rows []row
		q, err := tx.QueryxContext(ctx, read, after, batch)
		if err != nil {
			return fmt.Errorf("read users: %w", err)
		}
		for q.Next() {
			var r row
			if err := q.Scan(&r.id, &r.username, &r.email); err != nil {
				q.Close()
				return fmt.Errorf("read users: %w", err)
			}
			rows = append(rows, r)
		}
		q.Close()
		if err := q.Err(); err != nil {
			return fmt.Errorf("read users: %w", err)
		}
		for _, r := range rows {
			var shippedEmailKey any // as step 3 shipped it: step 5 leaves out a dot ending the domain
			if r.email != nil {
				shippedEmailKey = foldKey(*r.email)
			}
			if _, err := tx.ExecContext(ctx, update, foldKey(r.username), shippedEmailKey, r.id); err != nil {
				if !isAnyUniqueViolation(err) { // interrupted, the disk full…: no clash to name
					return fmt.Errorf("fill the keys of user %s: %w", r.id, err)
				}
				email := ""
				if r.email != nil {
					email = fmt.Sprintf(" or its email %q", *r.email)
				}
				return fmt.Errorf("user %s: its username %q%s is, apart from case, another user's too (change one of them with an older usersvc, then upgrade): %w", r.id, r.username, email, err)
			}
		}
		if len(rows) < batch {
			return nil
		}
		after = rows[len(rows)-1].id
	}
}

// refoldDottedEmails (step 5) gives each address whose domain ends in a
// dot the key without it, as writes compute it now (emailFoldKey: foldKey
// leaves dots alone, so that is the stored key without its final dots).
// Two users whose addresses are one mailbox but for such dots would then
// share a key: the step stops and names both, rather than choosing which
// to keep. Each query is set-based or uses the key's index.
func refoldDottedEmails(ctx context.Context, tx *sqlx.Tx) error {
	if a, b, err := dottedPairOfOneMailbox(ctx, tx); err != nil {
		return err
	} else if a != nil {
		return fmt.Errorf("users %s (%q) and %s (%q) have one mailbox, a dot ending a domain changing nothing: change one of the addresses with an older usersvc, then upgrade",
			a.ID, a.Email, b.ID, b.Email)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE users SET email_key = rtrim(email_key, '.') WHERE email_key LIKE '%.'"); err != nil {
		return fmt.Errorf("refold the email keys: %w", err)
	}
	return nil
}

// mailboxUser is a user an upgrade names.
type mailboxUser struct {
	ID    string `db:"id"`
	Email string `db:"email"`
}

// dottedPairOfOneMailbox finds two users whose email keys would be one
// once their final dots go: a dotted key against a plain one (a look-up by
// the key's index for each dotted row), or two dotted keys (grouped). nil
// when there are none.
func dottedPairOfOneMailbox(ctx context.Context, tx *sqlx.Tx) (a, b *mailboxUser, err error) {
	var pair [2]mailboxUser
	err = tx.QueryRowxContext(ctx, `SELECT a.id, a.email, b.id, b.email FROM users a JOIN users b ON b.email_key = rtrim(a.email_key, '.')
		WHERE a.email_key LIKE '%.' AND b.id <> a.id ORDER BY a.id LIMIT 1`).Scan(&pair[0].ID, &pair[0].Email, &pair[1].ID, &pair[1].Email)
	switch {
	case err == nil:
		return &pair[1], &pair[0], nil
	case !errors.Is(err, sql.ErrNoRows):
		return nil, nil, fmt.Errorf("read users: %w", err)
	}
	var key string
	err = tx.GetContext(ctx, &key, `SELECT rtrim(email_key, '.') FROM users WHERE email_key LIKE '%.'
		GROUP BY rtrim(email_key, '.') HAVING count(*) > 1 ORDER BY 1 LIMIT 1`)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil, nil
	case err != nil:
		return nil, nil, fmt.Errorf("read users: %w", err)
	}
	var both []mailboxUser
	if err := tx.SelectContext(ctx, &both, tx.Rebind(`SELECT id, email FROM users WHERE email_key LIKE '%.' AND rtrim(email_key, '.') = ? ORDER BY id LIMIT 2`), key); err != nil || len(both) < 2 {
		return nil, nil, fmt.Errorf("read users: %v", cmp.Or(err, errors.New("the pair went missing")))
	}
	return &both[0], &both[1], nil
}

// isAnyUniqueViolation reports a unique constraint failure on either
// engine, for a migration hook, which is not told which engine runs it.
func isAnyUniqueViolation(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || pgCode(err) == "23505"
}
