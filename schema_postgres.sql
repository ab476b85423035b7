-- schema_postgres.sql: the PostgreSQL schema as forward-only migration
-- steps, numbered and named as in schema_sqlite.sql (a test checks it).
--
-- Each step starts with a line "-- version N: what it does". At start the
-- service takes an advisory lock, then applies in one transaction every
-- step above the version in usersvc_schema, and records the last one.
-- Never edit a step that has shipped: add a new one.
--
-- Ids are text in the "C" collation, so they sort byte by byte as on
-- SQLite (lists page by id). Timestamps are the API's own fixed-width text
-- (UTC, milliseconds), so copies between engines are byte for byte.

-- version 1: users
CREATE TABLE users (
    id            text COLLATE "C" NOT NULL PRIMARY KEY,
    username      text   NOT NULL,
    email         text,
    full_name     text,
    password_hash text   NOT NULL,
    version       bigint NOT NULL DEFAULT 1,
    created_at    text   NOT NULL,
    modified_at   text   NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- version 2: goals
CREATE TABLE goals (
    id             text COLLATE "C" NOT NULL PRIMARY KEY,
    user_id        text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title          text    NOT NULL,
    period         text    NOT NULL DEFAULT 'day' CHECK (period IN ('day', 'week')),
    target_minutes integer NOT NULL CHECK (target_minutes BETWEEN 1 AND 10080),
    description    text,
    version        bigint  NOT NULL DEFAULT 1,
    created_at     text    NOT NULL,
    modified_at    text    NOT NULL
);
CREATE INDEX goals_user_id ON goals (user_id, id);

-- version 3: case-folded keys for unique usernames and emails
-- See schema_sqlite.sql: the keys are computed in Go (foldKey), and the
-- Go step that follows fills them in for rows that exist.
ALTER TABLE users ADD COLUMN username_key text;
ALTER TABLE users ADD COLUMN email_key text;
DROP INDEX users_username_key;
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_username_fold ON users (username_key);
CREATE UNIQUE INDEX users_email_fold ON users (email_key);

-- version 4: the login lockout, shared by every instance and kept across restarts
-- See schema_sqlite.sql. Times are Unix milliseconds.
CREATE TABLE login_failures (
    username_key text   NOT NULL PRIMARY KEY,
    window_start bigint NOT NULL,
    failures     integer NOT NULL
);
CREATE INDEX login_failures_window ON login_failures (window_start);
CREATE TABLE login_pending (
    id           text   NOT NULL PRIMARY KEY,
    username_key text   NOT NULL,
    started      bigint NOT NULL
);
CREATE INDEX login_pending_username ON login_pending (username_key, started);

-- version 5: an email's key leaves out a dot ending its domain
-- See schema_sqlite.sql. No SQL.

-- version 6: no email key ends in a dot, even one an older instance writes
-- During a rolling upgrade, instances of the version before step 5 still
-- write keys with the dot, which would make one mailbox two again; this
-- refuses such a write (those instances answer it 500) until they are
-- replaced. This binary never writes one.
ALTER TABLE users ADD CONSTRAINT users_email_key_no_final_dot CHECK (email_key NOT LIKE '%.');
