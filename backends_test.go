// backends_test.go: running every test on both engines. A plain run uses
// SQLite files in temp folders; when USERSVC_TEST_POSTGRES names a server,
// TestMain then runs the whole test binary again with every test on a
// fresh PostgreSQL database of its own.
package main

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// testBackend is the engine this run of the test binary uses: "sqlite",
// or "postgres" in the second run TestMain starts.
var testBackend = cmpOr(os.Getenv("USERSVC_TEST_BACKEND"), "sqlite")

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// postgresEnv names the variable that enables the PostgreSQL run: a URL of
// a server on which the tests may create and drop databases.
const postgresEnv = "USERSVC_TEST_POSTGRES"

// requireEnv lists what a run must not skip (USERSVC_TEST_REQUIRE=
// postgres,chromium in CI): a test that needs a missing part then fails
// instead of skipping.
const requireEnv = "USERSVC_TEST_REQUIRE"

// skipWithout skips the test because part is missing, unless the run
// requires part, in which case it fails.
func skipWithout(t testing.TB, part, why string) {
	t.Helper()
	if slices.Contains(strings.Split(os.Getenv(requireEnv), ","), part) {
		t.Fatalf("%s is required in this run (%s) but missing: %s", part, requireEnv, why)
	}
	t.Skip(why)
}

func TestMain(m *testing.M) {
	code := m.Run()
	cleanupFixtures()
	if testBackend == "sqlite" && wholeSuiteRun() {
		// Once, on the first engine: the second runs the same tests.
		code = max(code, checkSpecCoverage())
	}
	if testBackend == "sqlite" && !fuzzingOrBenchmarking() {
		code = max(code, runOnPostgres())
	}
	os.Exit(code)
}

// fuzzingOrBenchmarking reports a run of fuzz targets or benchmarks, which
// run on the engine they are told (USERSVC_TEST_BACKEND) and only once.
func fuzzingOrBenchmarking() bool {
	for _, name := range []string{"test.fuzz", "test.bench"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return true
		}
	}
	return false
}

// runOnPostgres runs this test binary again, with the same flags, on
// PostgreSQL, and returns its exit code; or says how to enable it.
func runOnPostgres() int {
	if os.Getenv(postgresEnv) == "" {
		msg := "PostgreSQL run skipped: set " + postgresEnv + "=postgres://user@host/postgres (a server where the tests may create databases) to run every test on PostgreSQL too"
		fmt.Println(msg)
		if slices.Contains(strings.Split(os.Getenv(requireEnv), ","), "postgres") {
			fmt.Println("FAIL: " + requireEnv + " requires the PostgreSQL run")
			return 1
		}
		return 0
	}
	fmt.Println("== the same tests on PostgreSQL")
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), "USERSVC_TEST_BACKEND=postgres")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("PostgreSQL run:", err)
		return 1
	}
	return 0
}

// testDB returns a fresh, empty database for one test: a SQLite file in a
// temp folder, or on PostgreSQL a new database dropped when the test ends.
func testDB(t testing.TB) string {
	t.Helper()
	if testBackend != "postgres" {
		return filepath.Join(t.TempDir(), "test.db")
	}
	return newPostgresDB(t)
}

var (
	pgAdminOnce sync.Once
	pgAdmin     *sql.DB
	pgAdminErr  error
)

// newPostgresDB creates a database on the server of USERSVC_TEST_POSTGRES
// and returns its URL; it is dropped (with any connection left) at the
// end of the test.
func newPostgresDB(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(postgresEnv)
	if admin == "" {
		skipWithout(t, "postgres", "this test needs PostgreSQL: set "+postgresEnv)
	}
	pgAdminOnce.Do(func() { pgAdmin, pgAdminErr = sql.Open("pgx", admin) })
	if pgAdminErr != nil {
		t.Fatalf("connect to %s: %v", redactURL(admin), pgAdminErr)
	}
	var b [6]byte
	rand.Read(b[:]) //nolint:errcheck // never fails
	name := "usersvc_test_" + hex.EncodeToString(b[:])
	if _, err := pgAdmin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// FORCE ends the test's own connections, but a role without
		// pg_signal_backend may not end an autovacuum worker's (42501):
		// that one is gone in a moment, so try again for a while.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			_, err := pgAdmin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
			if err == nil {
				return
			}
			if pgCode(err) != "42501" || time.Now().After(deadline) {
				t.Errorf("drop database %s: %v", name, err)
				return
			}
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("%s: %v", postgresEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}

// onlySQLite skips a test of something only SQLite has (a file, its modes,
// VACUUM INTO) on the PostgreSQL run.
func onlySQLite(t testing.TB, what string) {
	t.Helper()
	if testBackend != "sqlite" {
		t.Skip("SQLite only: " + what)
	}
}
