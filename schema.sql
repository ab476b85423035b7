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
