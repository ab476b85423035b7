// ops_test.go: what an operator relies on: health, metrics, access logs
// that never hold secrets, and backups under load.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestHealthz(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "GET", "/healthz", "")
	expect(t, "healthz", r, 200)
	if string(r.body) != `{"status":"ok"}`+"\n" {
		t.Fatalf("healthz body %s", r.body)
	}
	ts.store.Close()
	r = ts.do(t, "GET", "/healthz", "")
	expect(t, "healthz with a closed database", r, 503)
	if r.json(t)["status"] != "unavailable" || r.json(t)["error"] == nil {
		t.Fatalf("503 body %s", r.body)
	}
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t)
	a := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	b := ts.mustCreateUser(t, "max", "")["id"].(string)
	ts.do(t, "GET", "/api/users/"+a, "")
	ts.do(t, "GET", "/api/users/"+b, "")
	ts.do(t, "GET", "/api/users/by-username/zoe", "")
	ts.do(t, "GET", "/nope/"+a, "")
	for _, m := range []string{"BREW", "XYZZY"} {
		ts.do(t, m, "/api/users", "")
	}
	// Text whatever the client asks for: the format the document names.
	protobuf := "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
	for _, accept := range []string{protobuf, "application/openmetrics-text; version=1.0.0", "*/*"} {
		r := ts.do(t, "GET", "/metrics", "", "Accept", accept)
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
			t.Fatalf("/metrics with Accept: %s: %d %s", accept, r.status, r.header.Get("Content-Type"))
		}
	}
	r := ts.do(t, "GET", "/metrics", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", r.status, r.header.Get("Content-Type"))
	}
	text := string(r.body)
	pool := "writer" // SQLite's reads are outside database/sql
	if testBackend == "postgres" {
		pool = "postgres" // one pool
	}
	for _, want := range []string{
		`http_requests_total{code="200",method="GET",route="GET /api/users/{id}"} 2`,
		`http_requests_total{code="201",method="POST",route="POST /api/users"} 2`,
		`http_requests_total{code="200",method="GET",route="GET /api/users/by-username/{username}"} 1`,
		`http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`http_requests_total{code="405",method="OTHER",route="unmatched"} 2`,
		`http_request_duration_seconds_bucket{method="GET",route="GET /api/users/{id}",le="+Inf"} 2`,
		`http_requests_in_flight 1`,
		`go_sql_open_connections{db_name="` + pool + `"}`,
		`go_sql_wait_duration_seconds_total{db_name="` + pool + `"}`,
		`usersvc_password_hashes_total `,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, a) || strings.Contains(text, "BREW") {
		t.Error("/metrics holds a raw id or method: labels must be bounded")
	}
}

func TestMetricsToken(t *testing.T) {
	for _, public := range []bool{false, true} {
		cfg := testConfig()
		cfg.token, cfg.metricsPublic = "tok", public
		ts := newTestServerWith(t, cfg)
		want := map[bool]int{false: 401, true: 200}[public]
		if r := ts.do(t, "GET", "/metrics", ""); r.status != want {
			t.Fatalf("metrics-public=%v without token: %d, want %d", public, r.status, want)
		}
		if r := ts.do(t, "GET", "/metrics", "", "Authorization", "Bearer tok"); r.status != 200 {
			t.Fatalf("metrics with token: %d", r.status)
		}
	}
	// A request refused before routing is counted under the route it asked
	// for, not as unmatched.
	cfg := testConfig()
	cfg.token = "tok"
	ts := newTestServerWith(t, cfg)
	expect(t, "GET /api/users without the token", ts.do(t, "GET", "/api/users", ""), http.StatusUnauthorized)
	expect(t, "GET /api/nope without the token", ts.do(t, "GET", "/api/nope", ""), http.StatusUnauthorized)
	text := string(ts.do(t, "GET", "/metrics", "", "Authorization", "Bearer tok").body)
	for _, want := range []string{
		`http_requests_total{code="401",method="GET",route="GET /api/users"} 1`,
		`http_requests_total{code="401",method="GET",route="unmatched"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// logLines decodes JSON log output into one map a line.
func logLines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", sc.Bytes())
		}
		lines = append(lines, m)
	}
	return lines
}

func TestAccessLogLine(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := newTestServerLogged(t, testConfig(), logger)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	r := ts.do(t, "GET", "/api/users/"+id, "", "X-Request-ID", "trace-42")
	var found map[string]any
	for _, l := range logLines(t, []byte(buf.String())) {
		if l["msg"] == "request" && l["request_id"] == "trace-42" {
			found = l
		}
	}
	if found == nil {
		t.Fatalf("no access log line with request_id trace-42:\n%s", buf.String())
	}
	want := map[string]any{"method": "GET", "route": "GET /api/users/{id}", "status": 200.0, "bytes": float64(len(r.body)), "client": "127.0.0.1", "level": "INFO"}
	for k, v := range want {
		if found[k] != v {
			t.Errorf("log %s = %v, want %v", k, found[k], v)
		}
	}
	if d, ok := found["duration"].(float64); !ok || d <= 0 {
		t.Errorf("log duration = %v, want > 0", found["duration"])
	}
	if found["time"] == nil {
		t.Error("log line has no time")
	}
}

func TestALongMethodIsCutInTheAccessLineAndOnlyHealthProbesEscapeTheLimit(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	cfg := testConfig()
	cfg.rateLimit, cfg.rateBurst = 1, 3
	ts := newTestServerLogged(t, cfg, logger)
	long := strings.Repeat("A", 60000)
	statuses := map[int]int{}
	for i := 0; i < 10; i++ {
		req, err := http.NewRequest(long, ts.URL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	if statuses[http.StatusTooManyRequests] == 0 {
		t.Fatalf("10 requests of an unknown method to /healthz at a burst of 3: %v, want some 429s", statuses)
	}
	for i := 0; i < 10; i++ {
		expect(t, "a health probe past the limit", ts.do(t, "GET", "/healthz", ""), http.StatusOK)
	}
	lines := 0
	for _, l := range logLines(t, []byte(buf.String())) {
		if m, _ := l["method"].(string); strings.HasPrefix(m, "AAAA") {
			lines++
			if m != strings.Repeat("A", maxLoggedMethod)+"..." {
				t.Fatalf("an access line wrote the method as %d bytes: %.60q", len(m), m)
			}
		}
	}
	if lines != 10 {
		t.Fatalf("%d access lines of the long method, want 10", lines)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testConfig()
	cfg.token = "tok-very-secret-42"
	cfg.maxLoginFailures = 2
	ts := newTestServerLogged(t, cfg, logger)
	auth := []string{"Authorization", "Bearer " + cfg.token}
	pw := "pw-never-in-logs-7"
	r := ts.do(t, "POST", "/api/users", `{"username":"zoe","password":"`+pw+`"}`, auth...)
	expect(t, "create", r, 201)
	id := r.json(t)["user"].(map[string]any)["id"].(string)
	ts.do(t, "PATCH", "/api/users/"+id, `{"password":"`+pw+`-2"}`, auth...)
	ts.do(t, "PUT", "/api/users/by-username/max", `{"password":"`+pw+`-3"}`, auth...)
	for _, p := range []string{pw + "-2", "wrong-" + pw, "wrong-" + pw, pw + "-2"} {
		ts.do(t, "POST", "/api/authenticate", `{"username":"zoe","password":"`+p+`"}`, auth...)
	}
	ts.do(t, "GET", "/api/users", "", "Authorization", "Bearer wrong-"+cfg.token)
	ts.do(t, "POST", "/api/users", `{"username":"x","password":"`+pw+`","bad":1`, auth...)
	logs := buf.String()
	if len(logLines(t, []byte(logs))) < 8 {
		t.Fatalf("too few log lines to prove anything:\n%s", logs)
	}
	for _, secret := range []string{pw, cfg.token, "argon2id"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("%q appears in the logs:\n%s", secret, logs)
		}
	}
}

func TestBackupUnderConcurrentWrites(t *testing.T) {
	onlySQLite(t, "VACUUM INTO")
	ts := newTestServer(t)
	ctx := context.Background()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var created atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				r := ts.do(t, "POST", "/api/users", fmt.Sprintf(`{"username":"w%d_%d","password":"12345678"}`, w, i), "X-Forwarded-For", clientIP(w))
				if r.status != 201 {
					t.Errorf("create during backup: %d %s", r.status, r.body)
					return
				}
				created.Add(1)
			}
		}(w)
	}
	for deadline := time.Now().Add(30 * time.Second); created.Load() < 50; time.Sleep(time.Millisecond) {
		if t.Failed() || time.Now().After(deadline) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("the writers made %d users in 30 s; want 50 before the backup starts", created.Load())
		}
	}
	count := func() int {
		var n int
		ts.sqlGet(t, &n, "SELECT count(*) FROM users")
		return n
	}
	before := count()
	dst := filepath.Join(t.TempDir(), "copy.db")
	if err := backupDatabase(ctx, ts.db, dst); err != nil {
		t.Fatalf("backup: %v", err)
	}
	after := count()
	stop.Store(true)
	wg.Wait()

	copyServer := newTestServerAt(t, testConfig(), dst, quietLogger(), storeOptions{})
	var n int
	for next := "/api/users?limit=1000"; next != ""; {
		r := copyServer.do(t, "GET", next, "")
		expect(t, "list the copy", r, 200)
		n += len(r.list(t))
		next = nextLink(t, r.header.Get("Link"))
	}
	t.Logf("committed before backup %d, in the copy %d, committed after %d", before, n, after)
	if n < before || n > after {
		t.Fatalf("copy holds %d users; want between %d (before) and %d (after)", n, before, after)
	}
	if err := checkIntegrity(ctx, dst); err != nil {
		t.Fatal(err)
	}
	if err := backupDatabase(ctx, ts.db, dst); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second backup to the same file: %v", err)
	}
	if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
		t.Fatal("a partial copy was left behind")
	}
}

// servedBackupSource serves a SQLite file holding one user, live.db in the
// folder it returns, for a backup to copy.
func servedBackupSource(t *testing.T) (dir, db string) {
	t.Helper()
	onlySQLite(t, "backup of a file")
	dir = t.TempDir()
	db = filepath.Join(dir, "live.db")
	newTestServerAt(t, testConfig(), db, quietLogger(), storeOptions{}).mustCreateUser(t, "zoe", "")
	return dir, db
}

func TestTwoBackupsToOneFileDoNotSpoilEachOther(t *testing.T) {
	// Found in review: a second backup to the same file removed the
	// first's partial copy, and both failed with messages about the disk.
	dir, db := servedBackupSource(t)
	dst := filepath.Join(dir, "copy.db")
	// A backup to dst is running: it holds dst.partial.
	running, err := claimPartial(dst+".partial", dst)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".partial", []byte("half a copy"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = backupSQLite(t.Context(), db, dst)
	if err == nil || !strings.Contains(err.Error(), "another usersvc backup to "+dst+" is running") {
		t.Fatalf("a second backup to the same file: %v", err)
	}
	if b, _ := os.ReadFile(dst + ".partial"); string(b) != "half a copy" {
		t.Fatalf("the running backup's file was touched: %q", b)
	}
	running()
	// One that was killed leaves its file and journal, held by no one:
	// the next takes them over.
	for _, leftover := range []string{dst + ".partial", dst + ".partial-journal"} {
		if err := os.WriteFile(leftover, []byte("left by a killed backup"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := backupSQLite(t.Context(), db, dst); err != nil {
		t.Fatalf("a backup after a killed one: %v", err)
	}
	if err := checkIntegrity(t.Context(), dst); err != nil {
		t.Fatal(err)
	}
	for _, leftover := range []string{dst + ".partial", dst + ".partial-journal"} {
		if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is left: %v", leftover, err)
		}
	}
}

func TestBackupCommand(t *testing.T) {
	onlySQLite(t, "backup of a file")
	dir := t.TempDir()
	db := filepath.Join(dir, "live.db")
	_, _, stop := startRun(t, []string{"-addr", "127.0.0.1:0", "-db", db}, envOf())
	defer stop()
	var out bytes.Buffer
	dst := filepath.Join(dir, "copy.db")
	if err := run(context.Background(), []string{"usersvc", "-db", db, "backup", dst}, envOf(), &out, &out); err != nil {
		t.Fatalf("backup: %v", err)
	}
	if err := run(context.Background(), []string{"usersvc", "-db", db, "backup", dst}, envOf(), &out, &out); err == nil {
		t.Fatal("backup overwrote an existing file")
	}
	if err := run(context.Background(), []string{"usersvc", "-db", filepath.Join(dir, "missing.db"), "backup", filepath.Join(dir, "x.db")}, envOf(), &out, &out); err == nil {
		t.Fatal("backup of a missing database succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); err == nil {
		t.Fatal("backup created the database it was asked to copy")
	}
}

func TestCancelledRequestIsNotAnInternalError(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/users", nil)
	writeError(rec, req, logger, fmt.Errorf("list users: %w", context.Canceled))
	if rec.Code != 503 || !json.Valid(rec.Body.Bytes()) || strings.Contains(rec.Body.String(), "internal") {
		t.Fatalf("cancelled: %d %s, want a JSON 503 that is not an internal error", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	writeError(rec, req, logger, errors.New("disk on fire at /var/lib/x"))
	if rec.Code != 500 || rec.Body.String() != `{"error":"internal error"}`+"\n" || !strings.Contains(logs.String(), "disk on fire") {
		t.Fatalf("unexpected: %d %s; log %s", rec.Code, rec.Body, logs.String())
	}
}

func TestEveryAccessLineReachesTheFileByShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildTestBinary(t)
	// SIGHUP (a closed terminal) stops as SIGTERM does: it killed the
	// process at once, and the buffered lines with it.
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) { testAccessLinesReachTheFile(t, bin, sig) })
	}
}

func testAccessLinesReachTheFile(t *testing.T, bin string, sig syscall.Signal) {
	logPath := filepath.Join(t.TempDir(), "access.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-db", testDB(t), "-rate-limit", "0", "-max-404", "0")
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	base := waitForServingLine(t, cmd, logPath) // written at once, not held in the buffer
	const n = 2000
	client := &http.Client{}
	for i := 0; i < n; i++ {
		resp, err := client.Get(base + "/api/users?limit=1")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // a test
		resp.Body.Close()
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "msg=request method=GET"); got != n {
		t.Fatalf("%d access lines in the file after a graceful stop, want %d", got, n)
	}
	if !strings.Contains(string(b), "msg=stopped") {
		t.Fatal("the stop line is missing")
	}
}

// waitForServingLine waits for the binary cmd runs to write its start line
// to the file at logPath, and returns its base URL; it kills cmd and fails
// the test when none comes.
func waitForServingLine(t *testing.T, cmd *exec.Cmd, logPath string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if m := servingAddr.FindSubmatch(b); m != nil {
			return "http://" + string(m[1])
		}
	}
	cmd.Process.Kill() //nolint:errcheck // failing anyway
	t.Fatal("no start line")
	return ""
}

func TestASecondSignalEndsAStopAtOnce(t *testing.T) {
	// A stop waits up to 30 s for requests in flight; a second signal is
	// the operator saying not to wait.
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildTestBinary(t)
	logPath := filepath.Join(t.TempDir(), "log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-db", testDB(t))
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // gone by then when all goes well
	base := waitForServingLine(t, cmd, logPath)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /api/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	time.Sleep(100 * time.Millisecond) // the request is being read
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the stop waits for the stalled request
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("after a second SIGTERM: %v, want the process ended by it", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second SIGTERM did not end the stop")
	}
}

func TestAServerStartedWithNohupKeepsServingOnSIGHUP(t *testing.T) {
	// Found in review: SIGHUP stops gracefully now, but a server whose
	// SIGHUP was ignored when it started (nohup) must keep ignoring it.
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildTestBinary(t)
	logPath := filepath.Join(t.TempDir(), "log")
	cmd := exec.Command("sh", "-c", `trap "" HUP; exec "$0" -addr 127.0.0.1:0 -db "$1" 2>"$2"`, bin, testDB(t), logPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // stopped below when all goes well
	base := waitForServingLine(t, cmd, logPath)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("after SIGHUP, with SIGHUP ignored at start: %v", err)
	}
	resp.Body.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestABackupDoesNotWriteThroughASymlinkAtItsPartialFile(t *testing.T) {
	// Found in review: a symlink at FILE.partial had the copy written over
	// the file it named, and FILE left a link to it.
	dir, db := servedBackupSource(t)
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "copy.db")
	if err := os.Symlink(victim, dst+".partial"); err != nil {
		t.Fatal(err)
	}
	if err := backupSQLite(t.Context(), db, dst); err == nil {
		t.Fatal("a backup through a symlink at its partial file succeeded")
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Fatalf("the file the symlink named holds %q", b)
	}
}

func TestAStderrWhoseReaderWentAwayDoesNotKillTheServer(t *testing.T) {
	// Found in review: a log reader that went away (a log shipper
	// restarted, "usersvc | head") killed the server with SIGPIPE on its
	// next log write.
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildTestBinary(t)
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-db", testDB(t), "-rate-limit", "0", "-max-404", "0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // stopped below when all goes well
	line, err := bufio.NewReader(stderr).ReadString('\n')
	m := servingAddr.FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("start line %q: %v", line, err)
	}
	base := "http://" + m[1]
	stderr.Close() // the reader goes away
	client := &http.Client{Timeout: 5 * time.Second}
	for i := range 50 {
		resp, err := client.Get(base + "/api/users/not-an-id") // a 404, and its access line
		if err != nil {
			t.Fatalf("request %d after the log's reader went away: %v", i, err)
		}
		resp.Body.Close()
		time.Sleep(30 * time.Millisecond) // past a flush now and then
	}
	resp, err := client.Post(base+"/api/users", "text/plain", strings.NewReader("x")) // a warning-free 415, flushed with the rest
	if err != nil {
		t.Fatalf("after the log's reader went away: %v", err)
	}
	resp.Body.Close()
	time.Sleep(1100 * time.Millisecond) // a flush of the buffer, at the latest
	if _, err := client.Get(base + "/healthz"); err != nil {
		t.Fatalf("after a flush to a stderr with no reader: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stop after the log's reader went away: %v", err)
	}
}

func TestAccessLineIsWhatSlogWouldWrite(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	routes := []string{"GET /api/users/{id}", "unmatched", "PATCH /api/users/by-username/{username}", "GET /healthz"}
	clients := []string{"127.0.0.1", "2001:db8::1", "198.51.100.7", "::1"}
	for i := 0; i < 2000; i++ {
		a := accessLine{
			time:      time.Unix(1_790_000_000+int64(rng.IntN(1e6)), int64(rng.IntN(1e9))).In([]*time.Location{time.UTC, time.FixedZone("X", 5*3600)}[i%2]),
			method:    []string{"GET", "PATCH", "OTHER-METHOD"}[i%3],
			route:     routes[rng.IntN(len(routes))],
			status:    []int{200, 304, 404, 503}[i%4],
			bytes:     rng.IntN(1 << 22),
			duration:  time.Duration(rng.Int64N(int64(90 * time.Second))),
			client:    clients[rng.IntN(len(clients))],
			requestID: fmt.Sprintf("%032x", rng.Uint64()),
		}
		if !a.plain() {
			t.Fatalf("line %d is not plain: %+v", i, a)
		}
		for _, json := range []bool{false, true} {
			var want bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&want, nil)
			got := a.appendText(nil)
			if json {
				h, got = slog.NewJSONHandler(&want, nil), a.appendJSON(nil)
			}
			r := slog.NewRecord(a.time, slog.LevelInfo, accessLogMessage, 0)
			r.AddAttrs(slog.String("method", a.method), slog.String("route", a.route), slog.Int("status", a.status),
				slog.Int("bytes", a.bytes), slog.Duration("duration", a.duration), slog.String("client", a.client),
				slog.String("request_id", a.requestID))
			if err := h.Handle(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			if string(got) != want.String() {
				t.Fatalf("json=%v:\n got %s\nwant %s", json, got, want.String())
			}
		}
	}
	// A line that is not plain (a request id a client sent, say, or an odd
	// method) goes through slog itself.
	for _, a := range []accessLine{{method: "G=T", route: "unmatched", client: "x", requestID: "y"}, {method: "GET", route: "a  b", client: "x", requestID: "y"}, {method: "GET", route: "unmatched", client: "", requestID: "y"}} {
		if a.plain() {
			t.Fatalf("%+v is not plain", a)
		}
	}
}
