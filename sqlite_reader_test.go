// sqlite_reader_test.go: the SQLite read path keeps its statements
// compiled.
package main

import (
	"fmt"
	"testing"

	sqlite3 "modernc.org/sqlite/lib"
)

// A list page binds its limit as a parameter; SQLite would compile a
// statement that does so again every time a value is bound, unless the
// plan may not depend on bound values (enableQPSG). The kept statements
// must never be compiled again.
func TestKeptReadStatementsAreNotCompiledAgain(t *testing.T) {
	onlySQLite(t, "the SQLite read path")
	ts := newTestServer(t)
	var ids []string
	for i := 0; i < 30; i++ {
		ids = append(ids, ts.mustCreateUser(t, fmt.Sprintf("kept%02d", i), "")["id"].(string))
	}
	for i, id := range ids {
		expect(t, "list", ts.do(t, "GET", fmt.Sprintf("/api/users?limit=%d&after=%s", 1+i%7, id), ""), 200)
		expect(t, "list of goals", ts.do(t, "GET", fmt.Sprintf("/api/users/%s/goals?limit=%d", id, 1+i%5), ""), 200)
		expect(t, "get", ts.do(t, "GET", "/api/users/"+id+"?show=goals", ""), 200)
	}
	reads := ts.store.eng.(*sqliteEngine).reads
	var conns []*readConn
	defer func() {
		for _, c := range conns {
			reads.idle <- c
		}
	}()
	kept, again := 0, int32(0)
	for {
		select {
		case c := <-reads.idle:
			conns = append(conns, c)
			for _, st := range c.stmts {
				kept++
				again += sqlite3.Xsqlite3_stmt_status(c.tls, st, sqlite3.SQLITE_STMTSTATUS_REPREPARE, 0)
			}
			continue
		default:
		}
		break
	}
	if kept == 0 {
		t.Fatal("no kept statements found on the idle read connections")
	}
	if again != 0 {
		t.Fatalf("the %d kept read statements were compiled again %d times over %d requests", kept, again, 3*len(ids))
	}
}
