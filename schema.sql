-- schema.sql: the database schema as forward-only migration steps.
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
