// sqlite_reader.go: the read path of the SQLite engine. Reads run on
// connections of our own, opened read-only and without SQLite's
// per-connection mutex, and step statements through SQLite's C API (as
// modernc transpiles it) rather than through database/sql and the driver.
//
// Why: the modernc driver opens every connection in SQLite's serialized
// mode, which takes and releases a mutex on every sqlite3_column_* call,
// and database/sql boxes every column in an interface. A page of 100 users
// cost 122 µs that way and 40 µs this way (measured on this machine; the
// mutexes alone were a quarter of a list request's CPU). A connection here
// is used by one goroutine at a time (the pool hands it out), which is
// what SQLite's multi-thread mode asks. Writes still go through
// database/sql on the one writer connection (sqlite.go).
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteReader is a pool of read-only connections.
type sqliteReader struct {
	path    string
	busy    int            // busy timeout, milliseconds
	idle    chan *readConn // connections not in use
	permits chan struct{}  // one a connection open (or opening): at most cap
	closing chan struct{}  // closed by close, to wake whoever waits

	mu     sync.Mutex
	closed bool

	// checkFile, when set, is asked before each connection opens: a file
	// removed or replaced at path must not be read as the database (see
	// sqliteEngine.checkFile); connections already open read the file the
	// server opened.
	checkFile func() error
}

// newSQLiteReader returns a pool of at most n read connections to the
// database file at path; connections open on first use.
func newSQLiteReader(path string, n, busyMillis int) *sqliteReader {
	return &sqliteReader{path: path, busy: busyMillis, idle: make(chan *readConn, n),
		permits: make(chan struct{}, n), closing: make(chan struct{})}
}

// readConn is one connection and its prepared statements.
type readConn struct {
	tls   *libc.TLS
	db    uintptr
	stmts map[string]uintptr // kept statements, by query text
}

// sqliteError is a failure SQLite reported: its extended result code and
// message. sqliteCode reads the code, as it does the driver's errors.
type sqliteError struct {
	code int
	msg  string
}

func (e *sqliteError) Error() string { return fmt.Sprintf("%s (%d)", e.msg, e.code) }

// get takes an idle connection, or opens one while under the limit, or
// waits for one to come back, until ctx ends or the pool closes.
func (r *sqliteReader) get(ctx context.Context) (*readConn, error) {
	select {
	case c := <-r.idle:
		return c, nil
	default:
	}
	select {
	case c := <-r.idle:
		return c, nil
	case r.permits <- struct{}{}:
		c, err := r.dial()
		if err != nil {
			<-r.permits
			return nil, err
		}
		return c, nil
	case <-r.closing:
		return nil, errStoreClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a read connection: %w", ctx.Err())
	}
}

// put gives a connection back to the pool, or closes it once the pool is
// closed.
func (r *sqliteReader) put(c *readConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.close()
		<-r.permits
		return
	}
	r.idle <- c // never blocks: there are never more connections than room
}

// discard closes a connection taken from the pool instead of giving it
// back, and frees its place.
func (r *sqliteReader) discard(c *readConn) {
	c.close()
	<-r.permits
}

// dial opens a read-only connection without SQLite's mutex.
func (r *sqliteReader) dial() (*readConn, error) {
	if r.checkFile != nil {
		if err := r.checkFile(); err != nil {
			return nil, err
		}
	}
	tls := libc.NewTLS()
	name, err := libc.CString(uriPath(r.path) + "?mode=ro")
	if err != nil {
		tls.Close()
		return nil, err
	}
	pdb := tls.Alloc(int(unsafe.Sizeof(uintptr(0))))
	flags := int32(sqlite3.SQLITE_OPEN_READONLY | sqlite3.SQLITE_OPEN_NOMUTEX | sqlite3.SQLITE_OPEN_URI)
	rc := sqlite3.Xsqlite3_open_v2(tls, name, pdb, flags, 0)
	c := &readConn{tls: tls, db: *(*uintptr)(cPointer(pdb)), stmts: map[string]uintptr{}}
	tls.Free(int(unsafe.Sizeof(uintptr(0))))
	libc.Xfree(tls, name)
	if rc != sqlite3.SQLITE_OK {
		err := c.errorOf(rc)
		c.close()
		return nil, fmt.Errorf("open %s for reading: %w", r.path, err)
	}
	sqlite3.Xsqlite3_extended_result_codes(tls, c.db, 1)
	sqlite3.Xsqlite3_busy_timeout(tls, c.db, int32(r.busy))
	if err := c.enableQPSG(); err != nil {
		c.close()
		return nil, fmt.Errorf("open %s for reading: %w", r.path, err)
	}
	if err := c.exec(readerPragmas); err != nil {
		c.close()
		return nil, fmt.Errorf("open %s for reading: %w", r.path, err)
	}
	return c, nil
}

// readerPragmas are set on each read connection: a page cache of 1 MiB
// (SQLite's default is 2 MiB). The read cache in front answers most reads,
// and the memory is better spent there.
const readerPragmas = "PRAGMA cache_size = -1024"

// enableQPSG turns on SQLite's query planner stability guarantee: a plan
// never depends on the values bound. Without it, a statement whose LIMIT
// is a parameter (every list page) is marked to be prepared again each
// time a value is bound to it, so a kept statement was compiled again on
// every request: about a tenth of a list request's CPU.
func (c *readConn) enableQPSG() error {
	const vaSlot = 8 // libc.VaList's stride: every argument takes 8 bytes
	va := libc.Xmalloc(c.tls, 2*vaSlot)
	if va == 0 {
		return &sqliteError{code: sqlite3.SQLITE_NOMEM, msg: "out of memory"}
	}
	defer libc.Xfree(c.tls, va)
	if rc := sqlite3.Xsqlite3_db_config(c.tls, c.db, sqlite3.SQLITE_DBCONFIG_ENABLE_QPSG, libc.VaList(va, int32(1), uintptr(0))); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("enable the query planner stability guarantee: %w", c.errorOf(rc))
	}
	return nil
}

// exec runs statements that return no rows.
func (c *readConn) exec(sql string) error {
	z, err := libc.CString(sql)
	if err != nil {
		return err
	}
	defer libc.Xfree(c.tls, z)
	if rc := sqlite3.Xsqlite3_exec(c.tls, c.db, z, 0, 0, 0); rc != sqlite3.SQLITE_OK {
		return c.errorOf(rc)
	}
	return nil
}

// errorOf is the connection's last error, for result code rc.
func (c *readConn) errorOf(rc int32) error {
	msg := "sqlite error"
	if c.db != 0 {
		msg = libc.GoString(sqlite3.Xsqlite3_errmsg(c.tls, c.db))
		rc = sqlite3.Xsqlite3_extended_errcode(c.tls, c.db)
	}
	return &sqliteError{code: int(rc), msg: msg}
}

// prepare returns a statement for query, and whether it is kept: the kept
// one when keep says so (queries whose text does not vary with the data),
// else a new one the caller finalizes.
func (c *readConn) prepare(query string, keep bool) (uintptr, bool, error) {
	if st, ok := c.stmts[query]; ok {
		return st, true, nil
	}
	z, err := libc.CString(query)
	if err != nil {
		return 0, false, err
	}
	defer libc.Xfree(c.tls, z)
	pst := c.tls.Alloc(int(unsafe.Sizeof(uintptr(0))))
	defer c.tls.Free(int(unsafe.Sizeof(uintptr(0))))
	var flags uint32
	if keep {
		flags = sqlite3.SQLITE_PREPARE_PERSISTENT
	}
	if rc := sqlite3.Xsqlite3_prepare_v3(c.tls, c.db, z, -1, flags, pst, 0); rc != sqlite3.SQLITE_OK {
		return 0, false, fmt.Errorf("prepare: %w", c.errorOf(rc))
	}
	st := *(*uintptr)(cPointer(pst))
	if keep {
		c.stmts[query] = st
	}
	return st, keep, nil
}

// bind sets the statement's parameters: strings and integers are all the
// store binds.
func (c *readConn) bind(st uintptr, args []any) error {
	for i, a := range args {
		var rc int32
		switch v := a.(type) {
		case string:
			rc = c.bindText(st, int32(i+1), v)
		case int:
			rc = sqlite3.Xsqlite3_bind_int64(c.tls, st, int32(i+1), int64(v))
		case int64:
			rc = sqlite3.Xsqlite3_bind_int64(c.tls, st, int32(i+1), v)
		default:
			return fmt.Errorf("bind parameter %d: unsupported type %T", i+1, a)
		}
		if rc != sqlite3.SQLITE_OK {
			return fmt.Errorf("bind parameter %d: %w", i+1, c.errorOf(rc))
		}
	}
	return nil
}

// bindText binds s, which SQLite copies (SQLITE_TRANSIENT) from a buffer
// on the connection's C stack.
func (c *readConn) bindText(st uintptr, i int32, s string) int32 {
	n := len(s)
	p := c.tls.Alloc(n + 1)
	defer c.tls.Free(n + 1)
	copy(unsafe.Slice((*byte)(cPointer(p)), n), s)
	return sqlite3.Xsqlite3_bind_text(c.tls, st, i, p, int32(n), sqlite3.SQLITE_TRANSIENT)
}

// close finalizes the kept statements and closes the connection.
func (c *readConn) close() {
	for _, st := range c.stmts {
		sqlite3.Xsqlite3_finalize(c.tls, st)
	}
	if c.db != 0 {
		sqlite3.Xsqlite3_close_v2(c.tls, c.db)
	}
	c.tls.Close()
}

// query runs query with args on a pooled connection and returns its rows,
// which hold the connection until they are closed. ctx bounds only the
// wait for a connection: a statement, once running, is bounded by itself
// (a key lookup or a page) and by the busy timeout.
func (r *sqliteReader) query(ctx context.Context, query string, keep bool, args ...any) (*readRows, error) {
	c, err := r.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.query(r, query, keep, args)
}

// query runs query with args on c and returns its rows, which give c back
// to the pool owner when they are closed, unless owner is nil.
func (c *readConn) query(owner *sqliteReader, query string, keep bool, args []any) (*readRows, error) {
	st, keep, err := c.prepare(query, keep)
	if err != nil {
		if owner != nil {
			owner.put(c)
		}
		return nil, err
	}
	rows := &readRows{r: owner, c: c, st: st, keep: keep}
	if err := c.bind(st, args); err != nil {
		rows.Close()
		return nil, err
	}
	return rows, nil
}

// sqliteReadTx is a read transaction on one pooled connection: in WAL mode
// it reads the snapshot its first statement takes until it ends.
type sqliteReadTx struct {
	r *sqliteReader
	c *readConn
}

// begin takes a connection and begins a read transaction on it.
func (r *sqliteReader) begin(ctx context.Context) (*sqliteReadTx, error) {
	c, err := r.get(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.exec("BEGIN"); err != nil {
		r.discard(c)
		return nil, fmt.Errorf("begin a read: %w", err)
	}
	return &sqliteReadTx{r: r, c: c}, nil
}

// errReadTxEnded refuses a read through a transaction that has ended: its
// connection is back in the pool, another goroutine's.
var errReadTxEnded = errors.New("a read after its read transaction ended")

// query runs a statement in the transaction; its rows keep the connection.
func (t *sqliteReadTx) query(_ context.Context, query string, keep bool, args ...any) (rowsIter, error) {
	if t.c == nil {
		return nil, errReadTxEnded
	}
	return t.c.query(nil, query, keep, args)
}

// end commits the transaction (it wrote nothing) and gives the connection
// back; one that cannot say it ended is closed rather than reused inside a
// transaction. Ending it again does nothing.
func (t *sqliteReadTx) end() {
	c := t.c
	if c == nil {
		return
	}
	t.c = nil
	if err := c.exec("COMMIT"); err != nil {
		t.r.discard(c)
		return
	}
	t.r.put(c)
}

// close closes the idle connections now and the others as they come
// back, and wakes whoever waits for one; reads asked for after it fail.
func (r *sqliteReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	close(r.closing)
	for {
		select {
		case c := <-r.idle:
			c.close()
			<-r.permits
		default:
			return
		}
	}
}

// readRows steps a statement, in the manner of sql.Rows: Next, Scan, Err,
// Close. Text is copied out of SQLite into an arena of the rows' own, so
// a page of users costs a few allocations, not one a column.
type readRows struct {
	r     *sqliteReader // the pool to give c back to on Close; nil in a transaction
	c     *readConn
	st    uintptr
	keep  bool
	err   error
	done  bool
	arena []byte
}

// Next steps to the next row; false at the end or on an error (Err).
func (rs *readRows) Next() bool {
	if rs.done {
		return false
	}
	switch rc := sqlite3.Xsqlite3_step(rs.c.tls, rs.st); rc {
	case sqlite3.SQLITE_ROW:
		return true
	case sqlite3.SQLITE_DONE:
	default:
		rs.err = rs.c.errorOf(rc)
	}
	rs.done = true
	return false
}

// Scan copies the row's columns into dest, which must match them in
// number; the types the store scans are *string, **string (NULL is nil),
// *int and *int64.
func (rs *readRows) Scan(dest ...any) error {
	c, st := rs.c, rs.st
	if n := int(sqlite3.Xsqlite3_column_count(c.tls, st)); n != len(dest) {
		return fmt.Errorf("scan: %d columns into %d destinations", n, len(dest))
	}
	for i, d := range dest {
		col := int32(i)
		switch p := d.(type) {
		case *string:
			*p = rs.text(col)
		case **string:
			if sqlite3.Xsqlite3_column_type(c.tls, st, col) == sqlite3.SQLITE_NULL {
				*p = nil
			} else {
				s := rs.text(col)
				*p = &s
			}
		case *int64:
			*p = sqlite3.Xsqlite3_column_int64(c.tls, st, col)
		case *int:
			*p = int(sqlite3.Xsqlite3_column_int64(c.tls, st, col))
		default:
			return fmt.Errorf("scan column %d: unsupported destination %T", i, d)
		}
	}
	return nil
}

// text returns column col as a string whose bytes live in the arena.
func (rs *readRows) text(col int32) string {
	p := sqlite3.Xsqlite3_column_text(rs.c.tls, rs.st, col)
	n := int(sqlite3.Xsqlite3_column_bytes(rs.c.tls, rs.st, col))
	if p == 0 || n == 0 {
		return ""
	}
	if cap(rs.arena)-len(rs.arena) < n {
		// A new chunk, twice the last (a single row needs one small one, a
		// page of 100 a handful); strings already handed out keep the old
		// one alive.
		rs.arena = make([]byte, 0, max(512, 2*cap(rs.arena), 2*n))
	}
	start := len(rs.arena)
	rs.arena = append(rs.arena, unsafe.Slice((*byte)(cPointer(p)), n)...)
	b := rs.arena[start:len(rs.arena):len(rs.arena)]
	return unsafe.String(unsafe.SliceData(b), n)
}

// Err is the error that ended the rows, if any.
func (rs *readRows) Err() error { return rs.err }

// Close resets (or finalizes) the statement and gives the connection back.
func (rs *readRows) Close() error {
	if rs.c == nil {
		return nil
	}
	if rs.keep {
		sqlite3.Xsqlite3_reset(rs.c.tls, rs.st)
		sqlite3.Xsqlite3_clear_bindings(rs.c.tls, rs.st)
	} else {
		sqlite3.Xsqlite3_finalize(rs.c.tls, rs.st)
	}
	if rs.r != nil {
		rs.r.put(rs.c)
	}
	rs.c = nil
	return nil
}

// cPointer is a C address (memory of modernc's libc, outside the Go heap)
// as an unsafe.Pointer, to read or write it from Go. The address is
// reinterpreted rather than converted, since vet rightly warns about
// converting a uintptr that could hold a Go pointer the GC moved or freed;
// these never do.
func cPointer(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }
