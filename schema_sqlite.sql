-- schema_sqlite.sql: the SQLite schema as forward-only migration steps,
-- numbered and named as in schema_postgres.sql.
--
-- Each step starts with a line "-- version N: what it does". At start the
-- service applies, in one transaction, every step above the database's
-- PRAGMA user_version and then sets user_version to the last step applied.
-- Never edit a step that has shipped: add a new one.

-- version 1: users
CREATE TABLE users (
    id            TEXT    NOT NULL PRIMARY KEY,
    username      TEXT    NOT NULL,
    email         TEXT,
    full_name     TEXT,
    password_hash TEXT    NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT    NOT NULL,
    modified_at   TEXT    NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- version 2: goals
CREATE TABLE goals (
    id             TEXT    NOT NULL PRIMARY KEY,
    user_id        TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title          TEXT    NOT NULL,
    period         TEXT    NOT NULL DEFAULT 'day' CHECK (period IN ('day', 'week')),
    target_minutes INTEGER NOT NULL CHECK (target_minutes BETWEEN 1 AND 10080),
    description    TEXT,
    version        INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT    NOT NULL,
    modified_at    TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX goals_user_id ON goals (user_id, id);

-- version 3: case-folded keys for unique usernames and emails
-- Uniqueness without regard to case is Unicode simple case folding, done in
-- Go (foldKey) into these columns, so every engine agrees; lower() folded
-- ASCII only. The keys of rows that exist are filled in by the Go step that
-- follows this one (migrationHooks).
ALTER TABLE users ADD COLUMN username_key TEXT;
ALTER TABLE users ADD COLUMN email_key TEXT;
DROP INDEX users_username_key;
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_username_fold ON users (username_key);
CREATE UNIQUE INDEX users_email_fold ON users (email_key);

-- version 4: the login lockout, shared by every instance and kept across restarts
-- failures counts one username's failed authenticates in a window that
-- starts at the first failure; login_pending holds the attempts being
-- checked now, so concurrent guesses count before their answer. An attempt
-- left behind by a crash is forgotten once it is older than any attempt
-- can take.
CREATE TABLE login_failures (
    username_key TEXT    NOT NULL PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_failures_window ON login_failures (window_start);
CREATE TABLE login_pending (
    id           TEXT    NOT NULL PRIMARY KEY,
    username_key TEXT    NOT NULL,
    started      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_pending_username ON login_pending (username_key, started);

-- version 5: an email's key leaves out a dot ending its domain
-- "a@example.com." is the mailbox of "a@example.com": the Go step that
-- follows gives such addresses the key without the dot, and stops, naming
-- both users, where two would then share one (migrationHooks). No SQL.

-- version 6: no email key ends in a dot, even one an older instance writes
-- On PostgreSQL only (see schema_postgres.sql): one server owns a SQLite
-- file, and an older binary refuses a database at version 5. No SQL.
