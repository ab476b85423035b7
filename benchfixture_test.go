// benchfixture_test.go: builds the databases bench/run measures against,
// through the same bulk insert the in-process benchmarks use.
package main

import (
	"bufio"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/jmoiron/sqlx"
)

// TestBenchFixture writes a database of USERSVC_BENCH_USERS users to
// USERSVC_BENCH_FIXTURE and, when USERSVC_BENCH_IDS names a file, a random
// sample of their ids to it (one a line, in random order; at most
// USERSVC_BENCH_SAMPLE of them, 100,000 by default). It only runs when the
// first two are set (bench/run sets them); otherwise it skips.
func TestBenchFixture(t *testing.T) {
	path, count := os.Getenv("USERSVC_BENCH_FIXTURE"), os.Getenv("USERSVC_BENCH_USERS")
	if path == "" || count == "" {
		t.Skip("builds bench/run's database: set USERSVC_BENCH_FIXTURE=PATH (a new file) and USERSVC_BENCH_USERS=COUNT " +
			"(and optionally USERSVC_BENCH_IDS=FILE for a sample of the ids), e.g. " +
			"USERSVC_BENCH_FIXTURE=/tmp/users.db USERSVC_BENCH_USERS=100000 go test -run '^TestBenchFixture$' .")
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		t.Fatalf("USERSVC_BENCH_USERS=%q: want a positive count", count)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatalf("%s exists: the fixture is written to a new file", path)
	}
	if err := buildUsersDB(path, n); err != nil {
		t.Fatalf("build %d users in %s: %v", n, path, err)
	}
	idsFile := os.Getenv("USERSVC_BENCH_IDS")
	if idsFile == "" {
		return
	}
	sample := 100000
	if s := os.Getenv("USERSVC_BENCH_SAMPLE"); s != "" {
		if sample, err = strconv.Atoi(s); err != nil || sample < 1 {
			t.Fatalf("USERSVC_BENCH_SAMPLE=%q: want a positive count", s)
		}
	}
	if err := writeIDSample(path, idsFile, sample); err != nil {
		t.Fatalf("write the id sample: %v", err)
	}
}

// writeIDSample writes up to sample ids of the users in the database at
// dbPath to file, drawn at random, in random order.
func writeIDSample(dbPath, file string, sample int) error {
	db, err := sqlx.Open("sqlite", uriPath(dbPath)+"?mode=ro")
	if err != nil {
		return err
	}
	defer db.Close()
	var ids []string
	if err := db.Select(&ids, "SELECT id FROM users"); err != nil {
		return err
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, id := range ids[:min(sample, len(ids))] {
		w.WriteString(id)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
