// helpers_test.go: the test server on a temp-file database and the helpers
// every HTTP test uses.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testPasswordParams keep argon2id real but cheap, so tests stay fast.
var testPasswordParams = passwordParams{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

// testServer is the real handler over HTTP on a fresh database.
type testServer struct {
	*httptest.Server
	api   *server
	store *store
	db    string // the -db value: a SQLite path or a PostgreSQL URL
	cfg   config
}

// testConfig is the configuration tests start from. The test client's
// loopback address is a trusted proxy, so a test that needs many clients
// names each in X-Forwarded-For (see clientIP).
func testConfig() config {
	proxies, _ := parseTrustedProxies("127.0.0.1/32")
	return config{addr: "127.0.0.1:0", logFormat: "text", logLevel: "info", password: testPasswordParams,
		maxGoals: defaultMaxGoals, maxConns: 1024, dbMaxConns: defaultDBMaxConns, trustProxy: proxies, admin: true, cacheMiB: defaultCacheMiB}
}

// clientIP is the address of the i-th of many test clients, for
// X-Forwarded-For: per-client limits (two password hashes at a time) then
// count each alone.
func clientIP(i int) string {
	return fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)
}

// newTestServer starts the API on a fresh database of the backend under
// test.
func newTestServer(t *testing.T) *testServer {
	t.Helper()
	return newTestServerWith(t, testConfig())
}

// newTestServerWith starts the API with cfg on a fresh database.
func newTestServerWith(t *testing.T, cfg config) *testServer {
	t.Helper()
	return newTestServerLogged(t, cfg, errorLogger(t))
}

// slogTo is a text logger writing every line to w.
func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// newCounter is a Prometheus counter of a test's own.
func newCounter(name string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name})
}

// quietLogger throws every line away.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// errorLogger shows the server's error lines in the test's log (seen when
// the test fails, or with -v) and drops the rest.
func errorLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))
}

// testLogWriter writes log lines to t.Log.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newTestServerLogged starts the API with cfg on a fresh database, logging
// to logger.
func newTestServerLogged(t *testing.T, cfg config, logger *slog.Logger) *testServer {
	t.Helper()
	return newTestServerAt(t, cfg, testDB(t), logger, storeOptions{})
}

// newTestServerAt starts the API with cfg on the database db (opened with
// opts, plus what cfg asks), logging to logger.
func newTestServerAt(t *testing.T, cfg config, db string, logger *slog.Logger, opts storeOptions) *testServer {
	t.Helper()
	opts.exclusive, opts.maxGoals, opts.maxConns = true, cfg.maxGoals, cfg.dbMaxConns
	st, err := openStore(context.Background(), db, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	cfg.db = db
	api := newServer(cfg, logger, st)
	srv := httptest.NewServer(api)
	// Every exchange through the server's client is checked against
	// openapi.json (openapi_test.go).
	client := srv.Client()
	client.Transport = &specCheck{base: client.Transport, owner: t}
	t.Cleanup(func() {
		srv.Close()
		if err := st.Close(); err != nil && !errors.Is(err, errOrphanedLog) {
			t.Errorf("close store: %v", err)
		}
	})
	return &testServer{Server: srv, api: api, store: st, db: db, cfg: cfg}
}

// sqlSelect runs a query with "?" placeholders on the store's read pool
// and scans its rows into dst (a pointer to a slice).
func (ts *testServer) sqlSelect(t *testing.T, dst any, query string, args ...any) {
	t.Helper()
	if err := rawDB(ts.store).Select(dst, rawDB(ts.store).Rebind(query), args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// sqlGet runs a query with "?" placeholders on the store's read pool and
// scans its one row into dst.
func (ts *testServer) sqlGet(t *testing.T, dst any, query string, args ...any) {
	t.Helper()
	if err := rawDB(ts.store).Get(dst, rawDB(ts.store).Rebind(query), args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// hashes is how many argon2id computations the server has run.
func (ts *testServer) hashes() float64 {
	return testutil.ToFloat64(ts.api.metrics.passwordHashes)
}

// response is what a test request got back.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic value, failing the test when it is
// not JSON.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v; body %s", err, r.body)
	}
	return m
}

// list decodes the body as a JSON array of objects.
func (r response) list(t *testing.T) []map[string]any {
	t.Helper()
	var l []map[string]any
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("body is not a JSON array: %v; body %s", err, r.body)
	}
	return l
}

// do sends a request with a JSON body (when body is not empty) and returns
// the whole response. headers are name, value pairs.
func (ts *testServer) do(t *testing.T, method, path, body string, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1] // the client sends req.Host, not a Host header
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	return ts.send(t, req)
}

// transport is the HTTP transport under the client's document check, for a
// test that tunes its connections.
func (ts *testServer) transport() *http.Transport {
	return ts.Client().Transport.(*specCheck).base.(*http.Transport)
}

// send sends req and reads the whole response; a response openapi.json
// does not allow fails t.
func (ts *testServer) send(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := ts.Client().Do(withTest(req, t))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if rb, ok := resp.Body.(*readBody); ok { // read already, to be checked
		return response{status: resp.StatusCode, header: resp.Header, body: rb.body}
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// expect fails the test unless the response has status want.
func expect(t *testing.T, what string, r response, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: status = %d, want %d; body %s", what, r.status, want, r.body)
	}
	if len(r.body) > 0 && !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("%s: Content-Type = %q, want application/json", what, r.header.Get("Content-Type"))
	}
}

// mustCreateUser creates a user and returns its JSON object.
func (ts *testServer) mustCreateUser(t *testing.T, username, extra string) map[string]any {
	t.Helper()
	body := `{"username":"` + username + `","password":"correct horse"` + extra + `}`
	r := ts.do(t, "POST", "/api/users?show=email,full_name", body)
	expect(t, "POST /api/users "+username, r, http.StatusCreated)
	return r.json(t)["user"].(map[string]any)
}

// errorsOf returns the "errors" object of a 4xx body.
func errorsOf(t *testing.T, r response) map[string]any {
	t.Helper()
	e, ok := r.json(t)["errors"].(map[string]any)
	if !ok {
		t.Fatalf("body has no \"errors\" object: %s", r.body)
	}
	return e
}

// keysInOrder returns the keys of the first JSON object in b in the order
// they are written.
func keysInOrder(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", b)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("value: %v", err)
		}
	}
	return keys
}

// parseTime parses an API timestamp, failing the test when it is not RFC
// 3339 UTC with milliseconds.
func parseTime(t *testing.T, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	tm, err := time.Parse(timeFormat, s)
	if err != nil {
		t.Fatalf("timestamp %q is not %s: %v", s, timeFormat, err)
	}
	return tm
}

// fakeClock is a clock tests move by hand, so time windows are tested
// without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rawDB is the store's own database handle, for tests that look under the
// API.
func rawDB(st *store) *sqlx.DB { return st.eng.adminDB() }
