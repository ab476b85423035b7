// hardening_test.go: the bounds of issue 10: what an attacker or a strict
// client found at the edges. Each test drives the attack (bounded in count
// and time, on loopback) and checks the bound the contract promises.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ---- 1. connections ----

// procStatus reads a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// dialFrom opens a TCP connection to addr from the loopback address src
// (Linux answers on all of 127.0.0.0/8), so one test can be many clients.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", addr)
}

// closedByServer reports whether the server closes c within d (a read
// that returns EOF or a reset, not a timeout).
func closedByServer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d)) //nolint:errcheck // a test
	buf := make([]byte, 1)
	_, err := c.Read(buf)
	return err != nil && !isTimeout(err)
}

// getFrom sends GET path from src on a fresh connection and returns the
// status and how long the answer took.
func getFrom(t *testing.T, src, addr, path string) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a test
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", path, src, err)
	}
	resp.Body.Close()
	return resp.StatusCode, time.Since(start)
}

func TestConnectionsFromOneClientAreBounded(t *testing.T) {
	// Today's attack: 6,000 connections from one address all stayed open;
	// two clients with 10,000 sockets each used up the descriptors and
	// /healthz timed out for everyone.
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildTestBinary(t)
	cmd, base := startProcess(t, bin, "-addr", "127.0.0.1:0", "-db", testDB(t), "-max-conns-per-client", "20", "-max-conns", "100")
	defer func() { cmd.Process.Kill(); cmd.Wait() }() //nolint:errcheck // a test
	addr := strings.TrimPrefix(base, "http://")
	pid := cmd.Process.Pid
	fdsBefore, rssBefore := openFDs(t, pid), procStatus(t, pid, "VmRSS")

	const attempts = 600
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < attempts; i++ {
		c, err := dialFrom("127.0.0.2", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		// Each connection starts a request and trickles its headers: the
		// kind that held 60 KB each.
		fmt.Fprintf(c, "GET /api/users HTTP/1.1\r\nHost: localhost\r\nX-Pad: %s", strings.Repeat("a", 4000))
	}
	time.Sleep(300 * time.Millisecond) // let the server accept and close what it refuses
	refused := 0
	for _, c := range conns {
		if closedByServer(c, 20*time.Millisecond) {
			refused++
		}
	}
	fds, rss := openFDs(t, pid), procStatus(t, pid, "VmRSS")
	status, took := getFrom(t, "127.0.0.3", addr, "/healthz")
	t.Logf("%d connections from one address: %d closed at once, %d kept; server fds %d → %d, RSS %d → %d KiB; /healthz from another address: %d in %v",
		attempts, refused, attempts-refused, fdsBefore, fds, rssBefore, rss, status, took.Round(time.Millisecond))
	if kept := attempts - refused; kept > 20 {
		t.Fatalf("%d connections of one client stayed open, want at most 20", kept)
	}
	if fds > fdsBefore+20+5 {
		t.Fatalf("the server holds %d descriptors (was %d): one client took more than its 20", fds, fdsBefore)
	}
	if status != 200 {
		t.Fatalf("/healthz from another client answered %d during the attack", status)
	}
}

func TestTooManyRequestsClosesTheConnection(t *testing.T) {
	cfg := testConfig()
	cfg.now, cfg.rateLimit, cfg.rateBurst = newFakeClock().Now, 1, 1
	ts := newTestServerWith(t, cfg)
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	var statuses []int
	for i := 0; i < 2; i++ {
		fmt.Fprintf(c, "GET /api/users HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(rd, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // a test
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if statuses[0] != 200 || statuses[1] != 429 {
		t.Fatalf("statuses %v, want 200 then 429", statuses)
	}
	if !closedByServer(c, time.Second) {
		t.Fatal("the connection stayed open after its 429")
	}
}

func TestARequestWithBothTransferEncodingAndContentLengthClosesTheConnection(t *testing.T) {
	ts := newTestServer(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Framed by its Content-Length, the first request's body is "0\r\n\r";
	// by its chunks it is empty and a second request follows.
	fmt.Fprint(c, "POST /api/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
		"GET /api/users HTTP/1.1\r\nHost: localhost\r\n\r\n")
	rd := bufio.NewReader(c)
	resp, err := http.ReadResponse(rd, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck // a test
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("the ambiguous request: %d, Connection: close %v; want 400 and close", resp.StatusCode, resp.Close)
	}
	if !closedByServer(c, time.Second) {
		t.Fatal("the request that followed on the connection was read")
	}
}

func TestIdleConnectionsCloseAfterSixtySeconds(t *testing.T) {
	if productionTimeouts.idle != 60*time.Second {
		t.Fatalf("idle timeout %v, want 60s", productionTimeouts.idle)
	}
	// The mechanism, with a short idle time: a keep-alive connection left
	// idle is closed by the server.
	addr, _, _ := productionServer(t, httpTimeouts{readHeader: time.Second, read: time.Second, write: time.Second, idle: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	if !closedByServer(c, 3*time.Second) {
		t.Fatal("an idle keep-alive connection was not closed")
	}
}

// ---- 3. goals: -max-goals and the 4 MiB page ----

// bulkGoals inserts n goals for userID straight into the database (fast
// fixtures; the API's own limits are what the tests then exercise), each
// with the description desc.
func bulkGoals(t *testing.T, ts *testServer, userID string, n int, desc string) {
	t.Helper()
	tx, err := ts.store.eng.adminDB().BeginTxx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit a no-op
	now := formatTime(time.Now())
	var rows [][]any
	for i := 0; i < n; i++ {
		id, _ := newID()
		rows = append(rows, []any{id, userID, "goal " + strconv.Itoa(i), "day", 30, desc, 1, now, now})
		if len(rows) == copyBatch || i == n-1 {
			if err := insertRows(t.Context(), tx, copyTables[1], rows); err != nil {
				t.Fatal(err)
			}
			rows = rows[:0]
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestMaxGoals(t *testing.T) {
	cfg := testConfig()
	cfg.maxGoals = 5
	ts := newTestServerWith(t, cfg)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	// Concurrent creates cannot pass the limit together.
	var wg sync.WaitGroup
	statuses := make(chan int, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- ts.do(t, "POST", "/api/users/"+uid+"/goals", `{"title":"g","target_minutes":5}`).status
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[201] != 5 || count[409] != 15 {
		t.Fatalf("statuses %v, want exactly 5×201 and 15×409", count)
	}
	r := ts.do(t, "POST", "/api/users/"+uid+"/goals", `{"title":"g","target_minutes":5}`)
	expect(t, "goal beyond -max-goals", r, http.StatusConflict)
	if msg, _ := errorsOf(t, r)["goals"].(string); !strings.Contains(msg, "5") {
		t.Fatalf("409 body %s: want errors.goals naming the limit", r.body)
	}
	// Deleting one makes room again.
	gid := ts.do(t, "GET", "/api/goals?user_id="+uid+"&limit=1", "").list(t)[0]["id"].(string)
	expect(t, "delete a goal", ts.do(t, "DELETE", "/api/goals/"+gid, ""), http.StatusNoContent)
	expect(t, "create after a delete", ts.do(t, "POST", "/api/users/"+uid+"/goals", `{"title":"g","target_minutes":5}`), http.StatusCreated)
	// A user that has more goals than the limit (it was lowered) embeds
	// only as many as the limit.
	bulkGoals(t, ts, uid, 10, strings.Repeat("d", 10))
	user := ts.do(t, "GET", "/api/users/"+uid+"?show=goals", "").json(t)["user"].(map[string]any)
	if n := len(user["goals"].([]any)); n != 5 {
		t.Fatalf("embedded %d goals, want -max-goals (5)", n)
	}
}

// heapPeak samples the Go heap while fn runs and returns the peak growth
// in MiB over the heap before it. The document check of fn's exchanges
// (openapi_test.go), which decodes their bodies, runs after it.
func heapPeak(t *testing.T, fn func()) float64 {
	defer holdSpecChecks(t)()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	if peak.Load() < base {
		return 0
	}
	return float64(peak.Load()-base) / (1 << 20)
}

func TestListPagesStayUnderFourMiB(t *testing.T) {
	// Today's attack: 25,961 goals on one user, then ?show=goals.description
	// answered 349 MB and took 1.08 GiB. Here 20 users with 1,000 goals of
	// 1,500 characters each: 30 MB of descriptions behind one request.
	if testing.Short() {
		t.Skip("inserts 20,000 goals")
	}
	ts := newTestServer(t)
	var ids []string
	for i := 0; i < 20; i++ {
		id := ts.mustCreateUser(t, fmt.Sprintf("user%02d", i), "")["id"].(string)
		bulkGoals(t, ts, id, 1000, strings.Repeat("d", 1500))
		ids = append(ids, id)
	}
	var pages [][]map[string]any
	var sizes []int
	var grew float64
	for next := "/api/users?limit=1000&show=goals.description"; next != ""; {
		var r response
		grew = max(grew, heapPeak(t, func() { r = ts.do(t, "GET", next, "") })) // the page only, not its decoding
		expect(t, next, r, http.StatusOK)
		sizes = append(sizes, len(r.body))
		pages = append(pages, r.list(t))
		next = nextLink(t, r.header.Get("Link"))
	}
	t.Logf("20 users × 1,000 goals × 1,500 characters: %d pages of %v bytes; the heap grew at most %.1f MiB a request", len(pages), sizes, grew)
	var seen []string
	for i, p := range pages {
		if sizes[i] > maxPageBytes {
			t.Fatalf("page %d is %d bytes, over 4 MiB", i, sizes[i])
		}
		if len(p) == 0 {
			t.Fatalf("page %d is empty", i)
		}
		for _, u := range p {
			if n := len(u["goals"].([]any)); n != 1000 {
				t.Fatalf("user %s embeds %d goals, want all 1000", u["username"], n)
			}
			seen = append(seen, u["id"].(string))
		}
	}
	if strings.Join(seen, ",") != strings.Join(ids, ",") {
		t.Fatalf("following Link saw %d users, want each of the 20 once, in order", len(seen))
	}
	if len(pages) < 8 {
		t.Fatalf("%d pages: the 30 MB list was not split at 4 MiB", len(pages))
	}
	if grew > 48 { // the 30 MB at once took over 100 MiB
		t.Fatalf("the heap grew by %.1f MiB serving 4 MiB pages: the embeds are not streamed", grew)
	}
	// A list of goals with descriptions and owners stays under 4 MiB too.
	r := ts.do(t, "GET", "/api/goals?limit=1000&show=description,user.email", "")
	if len(r.body) > maxPageBytes || len(r.list(t)) == 0 {
		t.Fatalf("goals page of %d bytes", len(r.body))
	}
}

// ---- 4 and 5. authenticate and the hashing queue ----

func TestAuthenticateRefusesImpossibleInputsWithoutHashing(t *testing.T) {
	// Today's attack: 1 MiB usernames were hashed and kept in the lockout
	// table for 15 minutes (169 failures held 167 MiB).
	cfg := testConfig()
	cfg.maxLoginFailures = 2
	ts := newTestServerWith(t, cfg)
	ts.mustCreateUser(t, "zoe", "")
	ts.api.hasher.warmUp()
	huge := strings.Repeat("z", 1<<20-100)
	before := ts.hashes()
	for _, body := range []string{
		`{"username":"` + huge + `","password":"wrong horse"}`,
		`{"username":"zoe","password":"` + huge + `"}`,
		`{"username":"zoe","password":"short"}`,
		`{"username":"zo","password":"wrong horse"}`,
		`{"username":"zoe!","password":"wrong horse"}`,
		`{"username":"zoe","password":"` + strings.Repeat("p", 257) + `"}`,
	} {
		r := ts.do(t, "POST", "/api/authenticate", body)
		expect(t, "impossible credentials", r, http.StatusBadRequest)
		if len(r.body) > 400 {
			t.Fatalf("400 answer of %d bytes echoes the input", len(r.body))
		}
	}
	if n := ts.hashes() - before; n != 0 {
		t.Fatalf("%v hashes for inputs no user can have, want 0", n)
	}
	// Not counted: the right password still works after more refusals than
	// the lockout allows.
	expect(t, "right password", ts.do(t, "POST", "/api/authenticate", `{"username":"zoe","password":"correct horse"}`), http.StatusOK)
	// And both fields are reported at once.
	r := ts.do(t, "POST", "/api/authenticate", `{"username":"z","password":"x"}`)
	if errs := errorsOf(t, r); errs["username"] == nil || errs["password"] == nil {
		t.Fatalf("errors %s, want username and password", r.body)
	}
}

func TestHashingIsBoundedPerClientAndInAll(t *testing.T) {
	// Today's attack: one client kept 200 logins pending within its rate
	// limit, and a legitimate login then waited 15 s behind them.
	cfg := testConfig()
	cfg.password = passwordParams{Memory: 4 * 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32} // a few ms a hash
	logs := &syncBuffer{}
	ts := newTestServerLogged(t, cfg, slogTo(logs))
	ts.mustCreateUser(t, "zoe", "")
	ts.api.hasher.warmUp()
	ts.transport().MaxIdleConnsPerHost = 200
	const flood = 200
	var wg sync.WaitGroup
	type answer struct {
		status int
		retry  string
		took   time.Duration
	}
	answers := make(chan answer, flood)
	start := make(chan struct{})
	for i := 0; i < flood; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			r := ts.do(t, "POST", "/api/authenticate", `{"username":"nobody","password":"wrong horse"}`, "X-Forwarded-For", "203.0.113.66")
			answers <- answer{r.status, r.header.Get("Retry-After"), time.Since(t0)}
		}()
	}
	close(start)
	time.Sleep(5 * time.Millisecond)
	legit := ts.do(t, "POST", "/api/authenticate", `{"username":"zoe","password":"correct horse"}`, "X-Forwarded-For", "198.51.100.10")
	wg.Wait()
	close(answers)
	count := map[int]int{}
	for a := range answers {
		count[a.status]++
		if a.status == 503 && a.retry == "" {
			t.Fatal("503 without Retry-After")
		}
	}
	t.Logf("200 concurrent logins from one client: %v; a login from another client: %d", count, legit.status)
	expect(t, "a legitimate login during the flood", legit, http.StatusOK)
	if count[503] < flood/2 || count[401]+count[503] != flood {
		t.Fatalf("flood answers %v: one client may hold two places, the rest must be refused at once", count)
	}
	// The refusals are counted, and said once, not once each.
	if warnings := strings.Count(logs.String(), "password hashing is saturated"); warnings != 1 {
		t.Fatalf("%d refusals logged %d warnings; want one:\n%s", count[503], warnings, logs)
	}
}

func TestAFloodFromManyAddressesDoesNotLockOutLogins(t *testing.T) {
	// Found in review: 17 addresses, each keeping its two places taken,
	// held every place of a first-come queue, and every other login was
	// refused for as long as they went on. Hashes now run in turn by
	// client, with room for many more clients waiting.
	cfg := testConfig()
	cfg.password = passwordParams{Memory: 4 * 1024, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32} // a few ms a hash
	ts := newTestServerWith(t, cfg)
	ts.mustCreateUser(t, "zoe", "")
	ts.api.hasher.warmUp()
	const addresses, each = 24, 2
	ts.transport().MaxIdleConnsPerHost = addresses * each
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answers, busy atomic.Int64
	for i := 0; i < addresses*each; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := ts.do(t, "POST", "/api/authenticate", `{"username":"nobody","password":"wrong horse"}`, "X-Forwarded-For", clientIP(i/each))
				if answers.Add(1); r.status == http.StatusServiceUnavailable {
					busy.Add(1)
				}
			}
		}()
	}
	// Let the flood fill its places before the login arrives.
	deadline := time.Now().Add(10 * time.Second)
	for ts.api.hasher.admission.waiting() < addresses && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	var legit []int
	for range 20 {
		legit = append(legit, ts.do(t, "POST", "/api/authenticate", `{"username":"zoe","password":"correct horse"}`, "X-Forwarded-For", "198.51.100.10").status)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d addresses × %d logins at a time: %d answers, %d of them 503; 20 logins from another address: %v", addresses, each, answers.Load(), busy.Load(), legit)
	for i, status := range legit {
		if status != http.StatusOK {
			t.Fatalf("login %d from another address during the flood: %d, want 200 (all: %v)", i, status, legit)
		}
	}
	if busy.Load() != 0 {
		t.Fatalf("%d of the flood's logins were refused: two places for each of %d addresses fit", busy.Load(), addresses)
	}
}

// waiting counts the hashes waiting for a slot.
func (a *hashAdmission) waiting() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending - a.running
}

func TestHashesRunInTurnByClient(t *testing.T) {
	// With every slot taken, the waiting hashes run one per client in
	// turn: a newcomer's runs before the second of a client that came
	// first.
	a := newHashAdmission(1, 8, prometheus.NewCounter(prometheus.CounterOpts{Name: "r"}))
	hold, err := a.acquire(t.Context(), "holder")
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 5)
	queue := func(client string) {
		waiting := a.waiting()
		go func() {
			release, err := a.acquire(t.Context(), client)
			if err != nil {
				t.Errorf("%s: %v", client, err)
				order <- "error"
				return
			}
			order <- client
			release()
		}()
		for a.waiting() == waiting {
			time.Sleep(time.Millisecond)
		}
	}
	queue("first")
	queue("first")
	queue("second")
	queue("second")
	queue("newcomer")
	hold()
	var got []string
	for range 5 {
		got = append(got, <-order)
	}
	if want := []string{"first", "second", "newcomer", "first", "second"}; !slices.Equal(got, want) {
		t.Fatalf("hashes ran in the order %v, want %v", got, want)
	}
}

func TestAHashThatStopsWaitingGivesItsTurnOn(t *testing.T) {
	a := newHashAdmission(1, 8, prometheus.NewCounter(prometheus.CounterOpts{Name: "r"}))
	hold, err := a.acquire(t.Context(), "holder")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error, 1)
	go func() {
		_, err := a.acquire(ctx, "impatient")
		gaveUp <- err
	}()
	for a.waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("a wait that was cancelled: %v", err)
	}
	hold()
	next, err := a.acquire(t.Context(), "next")
	if err != nil {
		t.Fatalf("after the only waiter gave up: %v", err)
	}
	next()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running != 0 || a.pending != 0 || len(a.clients) != 0 || len(a.turns) != 0 {
		t.Fatalf("after every place was given back: running %d, pending %d, %d clients, %d turns", a.running, a.pending, len(a.clients), len(a.turns))
	}
}

func TestHashingQueueIsBounded(t *testing.T) {
	// Past the slots and the queue, a hash is refused at once, whoever
	// asks; one client holds at most two places.
	h := newPasswordHasher(testPasswordParams, prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "r"}))
	places := h.admission.places
	releases := make(chan func(), places)
	for i := 0; i < places; i++ {
		go func(i int) {
			release, err := h.admission.acquire(t.Context(), clientIP(i))
			if err != nil {
				t.Errorf("place %d: %v", i, err)
				return
			}
			releases <- release
		}(i)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.admission.mu.Lock()
		pending := h.admission.pending
		h.admission.mu.Unlock()
		if pending == places {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d places taken", pending, places)
		}
		time.Sleep(time.Millisecond)
	}
	t0 := time.Now()
	if _, err := h.admission.acquire(t.Context(), "a newcomer"); err != errHashBusy {
		t.Fatalf("with every place taken: %v, want errHashBusy", err)
	}
	if took := time.Since(t0); took > 100*time.Millisecond {
		t.Fatalf("the refusal took %v: it must not wait", took)
	}
	// Free the places the slots hold; the queued ones then run in turn.
	for i := 0; i < places; i++ {
		(<-releases)()
	}
	first, err1 := h.admission.acquire(t.Context(), "one client")
	second, err2 := h.admission.acquire(t.Context(), "one client")
	_, err3 := h.admission.acquire(t.Context(), "one client")
	if err1 != nil || err2 != nil || err3 != errHashBusy {
		t.Fatalf("one client's three places: %v, %v, %v; want two, then errHashBusy", err1, err2, err3)
	}
	first()
	second()
}

func TestTakenUsernameIsRefusedBeforeHashing(t *testing.T) {
	ts := newTestServer(t)
	ts.mustCreateUser(t, "zoe", `,"email":"zoe@example.com"`)
	other := ts.mustCreateUser(t, "max", "")["id"].(string)
	ts.api.hasher.warmUp()
	before := ts.hashes()
	for _, c := range []struct{ method, path, body, field string }{
		{"POST", "/api/users", `{"username":"ZOE","password":"correct horse"}`, "username"},
		{"POST", "/api/users", `{"username":"new","password":"correct horse","email":"ZOE@example.com"}`, "email"},
		{"PATCH", "/api/users/" + other, `{"username":"zoe","password":"correct horse"}`, "username"},
		{"PUT", "/api/users/by-username/max", `{"email":"zoe@EXAMPLE.com","password":"correct horse"}`, "email"},
	} {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.method+" "+c.body, r, http.StatusConflict)
		if errorsOf(t, r)[c.field] != "is already taken" {
			t.Fatalf("%s: body %s, want %s taken", c.body, r.body, c.field)
		}
	}
	if n := ts.hashes() - before; n != 0 {
		t.Fatalf("%v hashes before the 409s, want 0", n)
	}
}

// A password change of a user who is not there, or with an If-Match that
// no longer matches (or an If-None-Match: * that meets a user), is answered
// before the password is hashed: by id and by username.
func TestMissingUserAndStaleIfMatchAreRefusedBeforeHashing(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	stale := ts.do(t, "GET", "/api/users/"+id, "").header.Get("Etag")
	expect(t, "rename", ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"Zoe"}`), http.StatusOK)
	ts.api.hasher.warmUp()
	before := ts.hashes()
	missing := "01939f5e-0000-7000-8000-000000000001"
	for _, c := range []struct {
		what, method, path string
		headers            []string
		want               int
	}{
		{"PATCH a missing user", "PATCH", "/api/users/" + missing, nil, http.StatusNotFound},
		{"PUT a missing user", "PUT", "/api/users/" + missing, nil, http.StatusNotFound},
		{"PATCH with a stale If-Match", "PATCH", "/api/users/" + id, []string{"If-Match", stale}, http.StatusPreconditionFailed},
		{"PUT by username with a stale If-Match", "PUT", "/api/users/by-username/zoe", []string{"If-Match", stale}, http.StatusPreconditionFailed},
		{"PUT by username, create-only, of a user who exists", "PUT", "/api/users/by-username/ZOE", []string{"If-None-Match", "*"}, http.StatusPreconditionFailed},
		{"PUT by username with If-Match of a user who is not there", "PUT", "/api/users/by-username/nobody", []string{"If-Match", "*"}, http.StatusPreconditionFailed},
	} {
		expect(t, c.what, ts.do(t, c.method, c.path, `{"password":"a new correct horse"}`, c.headers...), c.want)
	}
	if n := ts.hashes() - before; n != 0 {
		t.Fatalf("%v hashes before the 404s and the 412s, want 0", n)
	}
	// The check in front changes nothing for a password change that goes
	// through.
	fresh := ts.do(t, "GET", "/api/users/"+id, "").header.Get("Etag")
	expect(t, "PATCH with the current If-Match", ts.do(t, "PATCH", "/api/users/"+id, `{"password":"a new correct horse"}`, "If-Match", fresh), http.StatusOK)
	if n := ts.hashes() - before; n != 1 {
		t.Fatalf("%v hashes for one password change, want 1", n)
	}
	fresh = ts.do(t, "GET", "/api/users/"+id, "").header.Get("Etag")
	expect(t, "PUT by username with the current If-Match", ts.do(t, "PUT", "/api/users/by-username/zoe", `{"password":"another horse"}`, "If-Match", fresh), http.StatusOK)
	expect(t, "PUT by username, create-only, of a user who is not there", ts.do(t, "PUT", "/api/users/by-username/max", `{"password":"another horse"}`, "If-None-Match", "*"), http.StatusCreated)
	if n := ts.hashes() - before; n != 3 {
		t.Fatalf("%v hashes for three password changes, want 3", n)
	}
}

// A password in the body changes nothing of which error wins: a missing
// user (404) and a failed precondition (412) come before a taken username
// or email (409), as the write itself checks them, with the password or
// without.
func TestAPasswordDoesNotChangeWhichErrorWins(t *testing.T) {
	ts := newTestServer(t)
	ts.mustCreateUser(t, "zoe", `,"email":"zoe@example.com"`)
	id := ts.mustCreateUser(t, "max", "")["id"].(string)
	stale := ts.do(t, "GET", "/api/users/"+id, "").header.Get("Etag")
	expect(t, "an update", ts.do(t, "PATCH", "/api/users/"+id, `{"full_name":"Max"}`), http.StatusOK)
	missing := "01939f5e-0000-7000-8000-000000000001"
	for _, c := range []struct {
		what, method, path, body string
		headers                  []string
		want                     int
	}{
		{"PATCH of a missing user to a taken username", "PATCH", "/api/users/" + missing, `"username":"zoe"`, nil, http.StatusNotFound},
		{"PUT of a missing user to a taken email", "PUT", "/api/users/" + missing, `"email":"zoe@example.com"`, nil, http.StatusNotFound},
		{"PATCH with a stale If-Match to a taken username", "PATCH", "/api/users/" + id, `"username":"zoe"`, []string{"If-Match", stale}, http.StatusPreconditionFailed},
		{"PUT by username with a stale If-Match to a taken email", "PUT", "/api/users/by-username/max", `"email":"zoe@example.com"`, []string{"If-Match", stale}, http.StatusPreconditionFailed},
		{"PUT by username, create-only, of a user who exists, to a taken email", "PUT", "/api/users/by-username/max", `"email":"zoe@example.com"`, []string{"If-None-Match", "*"}, http.StatusPreconditionFailed},
	} {
		for _, password := range []string{"", `,"password":"a new correct horse"`} {
			r := ts.do(t, c.method, c.path, "{"+c.body+password+"}", c.headers...)
			expect(t, c.what+" (with the body {"+c.body+password+"})", r, c.want)
		}
	}
}

// A body is taken as sent or refused, never rewritten: bytes that are not
// UTF-8 and \u escapes of half a surrogate pair (which encoding/json turns
// into U+FFFD, so that two different passwords would match) are a 400; a
// name given twice is a 400 on that name (not the last value silently); a
// charset other than UTF-8 and any Content-Encoding are a 415.
func TestBodiesAreTakenAsSentOrRefused(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	bodyError := func(what string, r response, want int, mentions string) {
		t.Helper()
		expect(t, what, r, want)
		if msg, _ := r.json(t)["error"].(string); !strings.Contains(msg, mentions) {
			t.Fatalf("%s: error %q, want it to mention %q", what, msg, mentions)
		}
	}
	for _, c := range []struct{ what, body, mentions string }{
		{"a password with a byte that is not UTF-8", "{\"username\":\"nu1\",\"password\":\"correct\xff horse\"}", "UTF-8 (at byte 37)"},
		{"a full name with bytes that are not UTF-8", "{\"username\":\"nu2\",\"password\":\"correct horse\",\"full_name\":\"a\xfe\xffb\"}", "UTF-8"},
		{"a high surrogate alone", `{"username":"nu3","password":"correct horse","full_name":"\ud800"}`, `\ud800 at byte 58`},
		{"a low surrogate alone", `{"username":"nu4","password":"correct horse","full_name":"a\uDC00"}`, `\uDC00`},
		{"a high surrogate before another escape", `{"username":"nu5","password":"correct \ud800\u0041horse"}`, `\ud800`},
		{"two high surrogates", `{"username":"nu6","password":"correct \ud83d\ud83d horse"}`, `\ud83d`},
	} {
		bodyError(c.what, ts.do(t, "POST", "/api/users", c.body), http.StatusBadRequest, c.mentions)
	}
	expect(t, "a user with U+FFFD in the password (a character like any other)", ts.do(t, "POST", "/api/users", `{"username":"nu7","password":"correct \ufffd horse"}`), http.StatusCreated)
	bodyError("a login with another byte where the U+FFFD was", ts.do(t, "POST", "/api/authenticate", "{\"username\":\"nu7\",\"password\":\"correct \xfe horse\"}"), http.StatusBadRequest, "UTF-8")
	expect(t, "the login with the password as set", ts.do(t, "POST", "/api/authenticate", "{\"username\":\"nu7\",\"password\":\"correct \xef\xbf\xbd horse\"}"), http.StatusOK)
	for escaped, want := range map[string]string{`\ud83d\ude00`: "😀", `\\ud800`: `\ud800`, `\u00e9\\`: `é\`} {
		r := ts.do(t, "PATCH", "/api/users/"+id+"?show=full_name", `{"full_name":"`+escaped+`"}`)
		expect(t, "full_name "+escaped, r, http.StatusOK)
		if got := r.json(t)["user"].(map[string]any)["full_name"]; got != want {
			t.Fatalf("full_name %s is stored as %q, want %q", escaped, got, want)
		}
	}

	r := ts.do(t, "POST", "/api/users", `{"username":"abc","username":"dupe2","password":"correct horse","nickname":1}`)
	expect(t, "a username given twice", r, http.StatusBadRequest)
	if errs := errorsOf(t, r); errs["username"] != "given more than once" || errs["nickname"] != "unknown field" {
		t.Fatalf("a username given twice: errors %v", errs)
	}
	expect(t, "GET of the user the last value names", ts.do(t, "GET", "/api/users/by-username/dupe2", ""), http.StatusNotFound)
	for _, c := range []struct{ what, method, path, body, field string }{
		{"a goal's title given twice", "POST", "/api/users/" + id + "/goals", `{"title":"a","target_minutes":30,"title":"b"}`, "title"},
		{"a password given twice at login", "POST", "/api/authenticate", `{"username":"zoe","password":"wrong horse","password":"correct horse"}`, "password"},
		{"a read-only name given twice", "PATCH", "/api/users/" + id, `{"id":"x","id":"y"}`, "id"},
	} {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.what, r, http.StatusBadRequest)
		if got := errorsOf(t, r)[c.field]; got != "given more than once" {
			t.Fatalf("%s: errors %s", c.what, r.body)
		}
	}

	create := `{"username":"abc","password":"correct horse"}`
	bodyError("charset latin1", ts.do(t, "POST", "/api/users", create, "Content-Type", "application/json; charset=latin1"), http.StatusUnsupportedMediaType, `charset "latin1"`)
	r = ts.do(t, "POST", "/api/users", create, "Content-Encoding", "gzip")
	bodyError("Content-Encoding gzip", r, http.StatusUnsupportedMediaType, `Content-Encoding "gzip"`)
	if got := r.header.Get("Accept-Encoding"); got != "identity" {
		t.Fatalf("415 for a Content-Encoding: Accept-Encoding %q, want identity", got)
	}
	expect(t, "charset UTF-8 and Content-Encoding identity", ts.do(t, "POST", "/api/users", create, "Content-Type", "application/json; charset=UTF-8", "Content-Encoding", "identity"), http.StatusCreated)
	for i, c := range [][2]string{{"utf8", "identity, identity"}, {"US-ASCII", ""}} {
		body := fmt.Sprintf(`{"username":"label%d","password":"correct horse"}`, i)
		expect(t, "charset "+c[0]+", Content-Encoding "+c[1], ts.do(t, "POST", "/api/users", body, "Content-Type", "application/json; charset="+c[0], "Content-Encoding", c[1]), http.StatusCreated)
	}
}

// countNames, which decides whether a body is searched for a repeated
// name, counts the object's own names only, whatever its strings and
// nested values hold.
func TestCountNamesCountsTheObjectsOwnNames(t *testing.T) {
	for body, want := range map[string]int{
		`{}`:                                    0,
		`{"a":1}`:                               1,
		` { "a" : "x" , "a" : "y" } `:           2,
		`{"a":{"b":1,"c":2},"d":[{"e":1},"f"]}`: 2,
		`{"a":"{\"b\":1,\"c\":2}","d":"x,\"y"}`: 2,
		`{"a\"b":"\\","c":"\\\"","d":[]}`:       3,
		`{"a":[1,"x",{"y":{"z":3}}],"b":null}`:  2,
	} {
		if got := countNames([]byte(body)); got != want {
			t.Errorf("countNames(%s) = %d, want %d", body, got, want)
		}
	}
}

// OPTIONS * is answered by the service, through its middleware (the Host
// check, a request id, the security headers, a JSON body), not by
// net/http's bare 200.
func TestOptionsStarIsAnsweredLikeAnyRequest(t *testing.T) {
	addr, _, _ := productionServer(t, productionTimeouts)
	for host, want := range map[string]int{"localhost": http.StatusBadRequest, "evil.example": http.StatusForbidden} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "OPTIONS * HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("OPTIONS * (Host %s): %v", host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		var e struct{ Error string }
		if resp.StatusCode != want || json.Unmarshal(body, &e) != nil || e.Error == "" ||
			resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("OPTIONS * (Host %s): %d %v %s, want %d with a JSON error, a request id and the security headers", host, resp.StatusCode, resp.Header, body, want)
		}
	}
}

// U+0000 in a stored string is a 400 on both engines (PostgreSQL's text
// cannot hold it: a description was a 500 there), and a lookup of a
// username holding it finds no one (on PostgreSQL it was a 500; the
// PostgreSQL pass is where those assertions bite).
func TestNULIsRefusedAndFindsNoOne(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	gid := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5,"description":"tabs\tand\nlines are fine"}`)["id"].(string)
	for _, c := range []struct{ what, method, path, body, field string }{
		{"a goal's description", "POST", "/api/users/" + uid + "/goals", `{"title":"a","target_minutes":5,"description":"a\u0000b"}`, "description"},
		{"a description changed", "PATCH", "/api/goals/" + gid, `{"description":"x\u0000"}`, "description"},
		{"a title", "PUT", "/api/goals/" + gid, `{"title":"\u0000"}`, "title"},
		{"a full name", "PATCH", "/api/users/" + uid, `{"full_name":"Zo\u0000e"}`, "full_name"},
		{"an email", "PATCH", "/api/users/" + uid, `{"email":"zoe\u0000@example.com"}`, "email"},
		{"a username", "POST", "/api/users", `{"username":"max\u0000","password":"correct horse"}`, "username"},
	} {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.what+" with U+0000", r, http.StatusBadRequest)
		if _, ok := errorsOf(t, r)[c.field]; !ok {
			t.Fatalf("%s with U+0000: errors %s, want one for %s", c.what, r.body, c.field)
		}
	}
	for _, path := range []string{"/api/users?username=%00", "/api/users?username=zoe%00", "/api/users?username=z%00oe&limit=5"} {
		r := ts.do(t, "GET", path, "")
		expect(t, path, r, http.StatusOK)
		if users := r.list(t); len(users) != 0 {
			t.Fatalf("GET %s: %d users, want none", path, len(users))
		}
	}
	expect(t, "by username, with U+0000", ts.do(t, "GET", "/api/users/by-username/zo%00e", ""), http.StatusNotFound)
	expect(t, "authenticate, with U+0000", ts.do(t, "POST", "/api/authenticate", `{"username":"zoe\u0000","password":"correct horse"}`), http.StatusBadRequest)
}

// ---- 6. DNS rebinding ----

func TestHostMustBeLocalWithoutAToken(t *testing.T) {
	cfg := testConfig()
	cfg.allowedHosts = parseHostList("Svc.Internal.Example, tools.example:9000")
	ts := newTestServerWith(t, cfg)
	id := ts.mustCreateUser(t, "zoe", `,"email":"zoe@example.com"`)["id"].(string)
	for _, c := range []struct {
		host string
		want int
	}{
		{"rebind.attacker.example:8080", 403},
		{"rebind.attacker.example", 403},
		{"127.0.0.1.attacker.example", 403},
		{"localhost.", 403},
		{"localhost:8080", 200},
		{"LOCALHOST", 200},
		{"127.0.0.1:8080", 200},
		{"[::1]:8080", 200},
		{"svc.internal.example:1234", 200},
		{"tools.example", 200},
	} {
		for _, req := range []struct{ method, path string }{{"GET", "/api/users?show=email"}, {"GET", "/healthz"}} {
			r := ts.do(t, req.method, req.path, "", "Host", c.host)
			expect(t, req.path+" with Host "+c.host, r, c.want)
			if c.want == 403 && (strings.Contains(string(r.body), "zoe") || r.json(t)["error"] == nil) {
				t.Fatalf("403 body %s", r.body)
			}
		}
	}
	expect(t, "DELETE through a rebound name", ts.do(t, "DELETE", "/api/users/"+id, "", "Host", "rebind.attacker.example:8080"), 403)
	expect(t, "the user is still there", ts.do(t, "GET", "/api/users/"+id, ""), 200)

	// With a token the token guards, whatever the Host.
	cfg = testConfig()
	cfg.token = "a-token-of-sixteen-plus"
	tok := newTestServerWith(t, cfg)
	expect(t, "any Host with the token", tok.do(t, "GET", "/api/users", "", "Host", "usersvc.example.com", "Authorization", "Bearer a-token-of-sixteen-plus"), 200)
}

// ---- 7. file modes ----

func TestDatabaseFilesAreOwnerOnly(t *testing.T) {
	onlySQLite(t, "file modes")
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "private.db")
	ts := newTestServerAt(t, testConfig(), path, quietLogger(), storeOptions{})
	ts.mustCreateUser(t, "zoe", "")
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v under umask 022, want 0600", filepath.Base(f), st.Mode().Perm())
		}
	}
	backup := filepath.Join(dir, "backup.db")
	if err := backupDatabase(t.Context(), path, backup); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(backup); st.Mode().Perm() != 0o600 {
		t.Fatalf("backup has mode %v, want 0600", st.Mode().Perm())
	}
}

// ---- 9. malformed query strings ----

func TestMalformedQueryStringsAreRefused(t *testing.T) {
	ts := newTestServer(t)
	ts.mustCreateUser(t, "alice", "")
	ts.mustCreateUser(t, "bob", "")
	for _, path := range []string{
		"/api/users?username=alice%", "/api/users?limit=5%", "/api/users?limit=%zz", "/api/goals?user_id=%",
		"/api/users?limit=5&limit=6", "/api/users?username=a&username=b", "/api/goals?user_id=x&user_id=y",
	} {
		r := ts.do(t, "GET", path, "")
		expect(t, path, r, http.StatusBadRequest)
	}
}

// ---- 10. Unicode case folding ----

func TestEmailUniquenessFoldsUnicodeCase(t *testing.T) {
	ts := newTestServer(t)
	ts.mustCreateUser(t, "first", `,"email":"ü@example.com"`)
	r := ts.do(t, "POST", "/api/users", `{"username":"second","password":"correct horse","email":"Ü@example.com"}`)
	expect(t, "Ü@example.com after ü@example.com", r, http.StatusConflict)
	if errorsOf(t, r)["email"] != "is already taken" {
		t.Fatalf("409 body %s", r.body)
	}
	ts.mustCreateUser(t, "kelvin", `,"email":"k@example.com"`)
	r = ts.do(t, "POST", "/api/users", `{"username":"kelvin2","password":"correct horse","email":"\u212a@example.com"}`)
	expect(t, "the Kelvin sign folds to k", r, http.StatusConflict)
	ts.mustCreateUser(t, "sigma", `,"email":"σ@example.com"`)
	for _, email := range []string{"Σ@example.com", "ς@example.com"} {
		expect(t, email, ts.do(t, "POST", "/api/users", `{"username":"sigma2","password":"correct horse","email":"`+email+`"}`), http.StatusConflict)
	}
	// Simple folding, not full: ß is not ss, and İ is not i.
	ts.mustCreateUser(t, "strasse", `,"email":"straße@example.com"`)
	ts.mustCreateUser(t, "strasse2", `,"email":"strasse@example.com"`)
	ts.mustCreateUser(t, "idot", `,"email":"İ@example.com"`)
	ts.mustCreateUser(t, "plaini", `,"email":"i@example.com"`)
	// A domain may end in a dot, and names the same mailbox: it is the
	// same key, and the address stays as sent.
	dotted := ts.mustCreateUser(t, "dotted", `,"email":"dot@example.com."`)
	if dotted["email"] != "dot@example.com." {
		t.Fatalf("the address is stored as %v", dotted["email"])
	}
	for _, email := range []string{"DOT@example.com", "dot@example.com", "dot@example.com."} {
		expect(t, email+" after dot@example.com.", ts.do(t, "POST", "/api/users", `{"username":"dotted2","password":"correct horse","email":"`+email+`"}`), http.StatusConflict)
	}
	expect(t, "PATCH to the same mailbox without the dot", ts.do(t, "PATCH", "/api/users/"+ts.mustCreateUser(t, "other", "")["id"].(string), `{"email":"dot@EXAMPLE.com","password":"another horse"}`), http.StatusConflict)
}

func TestFoldKeyAgreesWithEqualFold(t *testing.T) {
	pairs := []string{"a", "A", "ü", "Ü", "K", "k", "\u212a", "σ", "Σ", "ς", "ß", "ẞ", "İ", "i", "ı", "I", "ǅ", "ǆ", "Ǆ", "ſ", "s", "Ω", "\u2126", "µ", "μ", "日"}
	for _, a := range pairs {
		for _, b := range pairs {
			if got, want := foldKey(a) == foldKey(b), strings.EqualFold(a, b); got != want {
				t.Errorf("foldKey(%q) == foldKey(%q) is %v; strings.EqualFold says %v", a, b, got, want)
			}
		}
	}
	if foldKey("Zoe@Example.COM") != "zoe@example.com" {
		t.Fatalf("foldKey of ASCII = %q, want lowercase", foldKey("Zoe@Example.COM"))
	}
}

// ---- 11. every failing field at once ----

// The problems of every part of a request, its path, its query and its
// body, come back in one answer: a client fixes them all in one go.
func TestProblemsOfPathQueryAndBodyComeBackTogether(t *testing.T) {
	ts := newTestServer(t)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	r := ts.do(t, "POST", "/api/users/"+id+"/goals", `{"title":"Read","target_minutes":30}`)
	expect(t, "POST a goal", r, http.StatusCreated)
	goal := r.json(t)["goal"].(map[string]any)["id"].(string)
	for _, c := range []struct {
		method, path, body string
		fields             []string
	}{
		{"PUT", "/api/users/by-username/a", `{"password":"x","nickname":1}`, []string{"username", "password", "nickname"}},
		{"POST", "/api/users?show=bogus", `{"username":"a","nickname":1}`, []string{"show", "username", "password", "nickname"}},
		{"PATCH", "/api/users/" + id + "?show=bogus", `{"email":"not an address"}`, []string{"show", "email"}},
		{"POST", "/api/authenticate?show=bogus", `{"username":"ab"}`, []string{"show", "username", "password"}},
		{"GET", "/api/users?limit=0&show=bogus&username=a&username=b", "", []string{"limit", "show", "username"}},
		{"GET", "/api/goals?user_id=x&limit=0&show=bogus", "", []string{"user_id", "limit", "show"}},
		{"GET", "/api/users/" + id + "/goals?after=x&show=bogus", "", []string{"after", "show"}},
		{"POST", "/api/users/" + id + "/goals?show=bogus", `{"target_minutes":0}`, []string{"show", "title", "target_minutes"}},
		{"PATCH", "/api/goals/" + goal + "?show=bogus", `{"title":""}`, []string{"show", "title"}},
	} {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.method+" "+c.path, r, http.StatusBadRequest)
		errs := errorsOf(t, r)
		for _, f := range c.fields {
			if errs[f] == nil {
				t.Errorf("%s %s %s: errors %s lack %s", c.method, c.path, c.body, r.body, f)
			}
		}
	}
}

// A query parameter the route does not take is a 400 naming it: a
// misspelled filter must not widen a list to every row (?userid= listed
// every user's goals), nor a parameter on a DELETE be ignored.
func TestUnknownQueryParametersAreRefused(t *testing.T) {
	ts := newTestServer(t)
	zoe := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	max := ts.mustCreateUser(t, "max", "")["id"].(string)
	for _, id := range []string{zoe, max} {
		expect(t, "POST a goal", ts.do(t, "POST", "/api/users/"+id+"/goals", `{"title":"Read","target_minutes":30}`), http.StatusCreated)
	}
	goals := ts.do(t, "GET", "/api/goals?user_id="+zoe, "").list(t)
	if len(goals) != 1 {
		t.Fatalf("?user_id= lists %d goals, want 1", len(goals))
	}
	goal := goals[0]["id"].(string)
	for _, c := range []struct{ method, path, body, name string }{
		{"GET", "/api/goals?userid=" + zoe, "", "userid"},
		{"GET", "/api/users?limt=5", "", "limt"},
		{"GET", "/api/users/" + zoe + "?shwo=email", "", "shwo"},
		{"GET", "/api/users/by-username/zoe?username=max", "", "username"},
		{"GET", "/api/users/" + zoe + "/goals?user_id=" + max, "", "user_id"},
		{"GET", "/api/goals/" + goal + "?user=1", "", "user"},
		{"POST", "/api/users?limit=1", `{"username":"ann","password":"correct horse"}`, "limit"},
		{"PATCH", "/api/users/" + zoe + "?dry_run=1", `{"full_name":"Zoe"}`, "dry_run"},
		{"PUT", "/api/users/by-username/zoe?force", `{"full_name":"Zoe"}`, "force"},
		{"POST", "/api/authenticate?remember=1", `{"username":"zoe","password":"correct horse"}`, "remember"},
		{"POST", "/api/users/" + zoe + "/goals?x=1", `{"title":"Run","target_minutes":30}`, "x"},
		{"PATCH", "/api/goals/" + goal + "?x=1", `{"title":"Run"}`, "x"},
		{"DELETE", "/api/goals/" + goal + "?show=user", "", "show"},
		{"DELETE", "/api/users/" + max + "?show=password&limit=0", "", "show"},
	} {
		r := ts.do(t, c.method, c.path, c.body)
		expect(t, c.method+" "+c.path, r, http.StatusBadRequest)
		if got := errorsOf(t, r)[c.name]; got != "unknown query parameter" {
			t.Fatalf("%s %s: errors %s, want %s an unknown query parameter", c.method, c.path, r.body, c.name)
		}
	}
	expect(t, "the goal is still there", ts.do(t, "GET", "/api/goals/"+goal, ""), http.StatusOK)
	expect(t, "the user is still there", ts.do(t, "GET", "/api/users/"+max, ""), http.StatusOK)
	expect(t, "every parameter a list takes", ts.do(t, "GET", "/api/goals?user_id="+zoe+"&limit=5&after="+goal+"&show=user", ""), http.StatusOK)
	expect(t, "every parameter the user list takes", ts.do(t, "GET", "/api/users?username=zoe&limit=5&after="+zoe+"&show=email", ""), http.StatusOK)
}

func TestEveryFailingFieldIsReportedAtOnce(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "POST", "/api/users", `{"username":"z","password":"short","nickname":"x","email":5}`)
	expect(t, "mixed problems", r, http.StatusBadRequest)
	errs := errorsOf(t, r)
	for _, f := range []string{"username", "password", "nickname", "email"} {
		if errs[f] == nil {
			t.Fatalf("errors %s lack %s", r.body, f)
		}
	}
	if errs["email"] != "must be a string" {
		t.Fatalf("email: %v, want its type problem", errs["email"])
	}
	var b strings.Builder
	b.WriteString(`{"username":"z"`)
	for i := 1; i < maxBodyNames; i++ {
		fmt.Fprintf(&b, `,"f%d":1`, i)
	}
	b.WriteString("}")
	r = ts.do(t, "POST", "/api/users", b.String())
	expect(t, "999 unknown fields", r, http.StatusBadRequest)
	if n := len(errorsOf(t, r)); n != maxFieldErrors {
		t.Fatalf("%d entries, want the cap %d", n, maxFieldErrors)
	}
	if errs := errorsOf(t, r); errs["username"] == nil || errs["password"] == nil {
		t.Fatalf("the capped answer keeps unknown names over the real fields' problems: username %v, password %v", errs["username"], errs["password"])
	}
	// Nor do junk names given twice, or junk query parameters, push them
	// out; and an unknown query parameter does not hide the problem of the
	// body's field of the same name.
	var twice, params strings.Builder
	twice.WriteString(`{"username":"z"`)
	for i := 0; i < 150; i++ {
		fmt.Fprintf(&twice, `,"a%03d":1,"a%03d":1`, i, i)
		fmt.Fprintf(&params, "a%03d=1&", i)
	}
	twice.WriteString("}")
	for what, r := range map[string]response{
		"junk names given twice":   ts.do(t, "POST", "/api/users", twice.String()),
		"junk query parameters":    ts.do(t, "POST", "/api/users?"+params.String(), `{"username":"z"}`),
		"?username= and a bad one": ts.do(t, "POST", "/api/users?username=zoe", `{"username":"z"}`),
	} {
		expect(t, what, r, http.StatusBadRequest)
		errs := errorsOf(t, r)
		if errs["username"] != "the length must be between 3 and 32" || errs["password"] != "cannot be blank" {
			t.Fatalf("%s: username %v, password %v, want their own problems", what, errs["username"], errs["password"])
		}
	}
	if len(r.body) > 8<<10 {
		t.Fatalf("the answer is %d bytes", len(r.body))
	}
}

// Requests in flight at once cannot take a client past the 404 cap: each
// counts against it from the moment it is let through (they were counted
// once answered, and 60 at once on PostgreSQL got 33 404s under a cap of 5).
func TestConcurrent404sStayWithinTheCap(t *testing.T) {
	cfg := testConfig()
	cfg.max404 = 5
	ts := newTestServerWith(t, cfg)
	statuses := make([]int, 60)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Go(func() {
			statuses[i] = ts.do(t, "GET", fmt.Sprintf("/api/users/01939f5e-0000-7000-8000-%012d", i), "").status
		})
	}
	wg.Wait()
	count := map[int]int{}
	for _, s := range statuses {
		count[s]++
	}
	if count[http.StatusNotFound] > cfg.max404 || count[http.StatusNotFound]+count[http.StatusTooManyRequests] != len(statuses) {
		t.Fatalf("60 requests for missing users at once: %v, want at most %d 404s and the rest 429", count, cfg.max404)
	}
}

// A page of another site cannot reach usersvc through the operator's
// browser: whatever it loads (images, scripts, frames, fetches, forms) is
// a 403 that the 404 cap and the rate limit do not count, so it cannot
// lock the operator out; a link followed from another site still opens.
func TestOtherSitesPagesAreRefusedAndNotCounted(t *testing.T) {
	cfg := testConfig()
	cfg.max404, cfg.rateLimit, cfg.rateBurst = 5, 20, 20
	ts := newTestServerWith(t, cfg)
	id := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	missing := "/api/users/01939f5e-0000-7000-8000-000000000001"
	// A page on another port of this host is same-site, not cross-site.
	for i := range 100 {
		site := []string{"cross-site", "same-site"}[i%2]
		image := []string{"Sec-Fetch-Site", site, "Sec-Fetch-Mode", "no-cors", "Sec-Fetch-Dest", "image"}
		r := ts.do(t, "GET", fmt.Sprintf("/api/users/01939f5e-0000-7000-8000-%012d", 1000+i), "", image...)
		expect(t, "an <img> of a "+site+" page", r, http.StatusForbidden)
		if r.json(t)["error"] == nil {
			t.Fatalf("403 body %s", r.body)
		}
	}
	for _, c := range []struct {
		what, method, path string
		headers            []string
	}{
		{"a frame", "GET", "/admin/", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "iframe"}},
		{"a fetch", "GET", "/api/users", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty"}},
		{"a form", "POST", "/api/users/" + id, []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}},
		{"a DELETE", "DELETE", "/api/users/" + id, []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty"}},
		// A popup the page opens could navigate to missing users again and
		// again: only the admin page opens from another site.
		{"a popup's navigation to a missing user", "GET", "/api/users/01939f5e-0000-7000-8000-000000000002", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}},
		{"a popup's navigation to a missing admin file", "GET", "/admin/nope.js", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}},
		{"a popup's navigation to /admin%2F", "GET", "/admin%2F", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}},
		{"a popup's navigation to /%61dmin/", "GET", "/%61dmin/", []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}},
	} {
		expect(t, c.what+" of another site's page", ts.do(t, c.method, c.path, "", c.headers...), http.StatusForbidden)
	}
	// None of that counted: the operator's own 404s, up to the cap, and
	// reads go on.
	for i := range cfg.max404 - 1 {
		expect(t, fmt.Sprintf("the operator's 404 number %d", i+1), ts.do(t, "GET", missing, ""), http.StatusNotFound)
	}
	for _, site := range []string{"cross-site", "same-site"} {
		link := ts.do(t, "GET", "/admin/", "", "Sec-Fetch-Site", site, "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document")
		if link.status != http.StatusOK || !strings.HasPrefix(link.header.Get("Content-Type"), "text/html") {
			t.Fatalf("a link followed from a %s page to the admin page: %d %s", site, link.status, link.header.Get("Content-Type"))
		}
	}
	for _, c := range []struct {
		what, path string
		headers    []string
	}{
		{"the admin page's own fetch", "/api/users/" + id, []string{"Sec-Fetch-Site", "same-origin", "Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty"}},
		{"an address typed in", "/api/users/" + id, []string{"Sec-Fetch-Site", "none", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}},
		{"a client that is not a browser", "/api/users/" + id, nil},
	} {
		expect(t, c.what, ts.do(t, "GET", c.path, "", c.headers...), http.StatusOK)
	}
	// Without the admin page there is nothing to open from another site.
	cfg.admin = false
	off := newTestServerWith(t, cfg)
	nav := []string{"Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}
	expect(t, "a link from another site to /admin/ with -admin=false", off.do(t, "GET", "/admin/", "", nav...), http.StatusForbidden)
}

// ---- 12, 13, 14: ETags and bodies sent back ----

func TestIfMatchNeedsAnETagOfThatResource(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	other := ts.mustCreateUser(t, "max", "")["id"].(string)
	gid := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5}`)["id"].(string)
	goalTag := ts.do(t, "GET", "/api/goals/"+gid, "").header.Get("ETag")
	otherTag := ts.do(t, "GET", "/api/users/"+other, "").header.Get("ETag")
	// Made up from the user's current tag: its first half (which names the
	// version) with a second half the server never sends.
	ownTag := ts.do(t, "GET", "/api/users/"+uid, "").header.Get("ETag")
	resource := ownTag[:len(`"`)+16+len("-")]
	madeUp := []string{resource + `made-up"`, resource + strings.Repeat("g", 16) + `"`, resource + ownTag[18:34] + `0"`, resource + `"`}
	for _, tag := range append([]string{goalTag, otherTag, `"1"`, `"2"`, `"1.x"`, `"3.x"`, `"` + strings.Repeat("0", 16) + `-x"`}, madeUp...) {
		expect(t, "If-Match "+tag, ts.do(t, "PATCH", "/api/users/"+uid, `{"full_name":"x"}`, "If-Match", tag), http.StatusPreconditionFailed)
	}
	for _, show := range []string{"", "?show=email", "?show=goals.description", "?show=full_name,goals"} {
		tag := ts.do(t, "GET", "/api/users/"+uid+show, "").header.Get("ETag")
		r := ts.do(t, "PATCH", "/api/users/"+uid, `{"full_name":"`+show+`"}`, "If-Match", tag)
		expect(t, "If-Match read with show="+show, r, http.StatusOK)
	}
}

func TestBodiesReadWithShowCanBeSentBack(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	gid := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5}`)["id"].(string)
	user := mustRaw(t, ts.do(t, "GET", "/api/users/"+uid+"?show=email,full_name,goals.description", "").body, "user")
	expect(t, "PUT the user as read with goals", ts.do(t, "PUT", "/api/users/"+uid, string(user)), http.StatusOK)
	goal := mustRaw(t, ts.do(t, "GET", "/api/goals/"+gid+"?show=description,user.email", "").body, "goal")
	expect(t, "PUT the goal as read with its user", ts.do(t, "PUT", "/api/goals/"+gid, string(goal)), http.StatusOK)
}

func TestIfNoneMatchStarIsCreateOnly(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "PUT", "/api/users/by-username/zoe", `{"password":"correct horse","full_name":"First"}`, "If-None-Match", "*")
	expect(t, "create-only when free", r, http.StatusCreated)
	r = ts.do(t, "PUT", "/api/users/by-username/ZOE", `{"password":"other horse","full_name":"Second"}`, "If-None-Match", "*")
	expect(t, "create-only when the user exists", r, http.StatusPreconditionFailed)
	u := ts.do(t, "GET", "/api/users/by-username/zoe?show=full_name", "").json(t)["user"].(map[string]any)
	if u["full_name"] != "First" {
		t.Fatalf("If-None-Match: * overwrote the user: %v", u)
	}
	expect(t, "the old password still works", ts.do(t, "POST", "/api/authenticate", `{"username":"zoe","password":"correct horse"}`), http.StatusOK)
}

func TestACreateRefusedByIfMatchSaysThereIsNothingToMatch(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(t, "PUT", "/api/users/by-username/nobody1", `{"password":"correct horse"}`, "If-Match", "*")
	expect(t, "PUT by username of no one, with If-Match: *", r, http.StatusPreconditionFailed)
	if msg := r.json(t)["error"].(string); !strings.Contains(msg, "does not exist") {
		t.Fatalf("a create refused by If-Match says %q", msg)
	}
}

func TestAWriteRefusedByIfNoneMatchSaysWhichHeaderRefusedIt(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	gid := ts.mustCreateGoal(t, uid, `{"title":"a","target_minutes":5}`)["id"].(string)
	for _, path := range []string{"/api/users/" + uid, "/api/goals/" + gid} {
		tag := ts.do(t, "GET", path, "").header.Get("ETag")
		r := ts.do(t, "PATCH", path, `{}`, "If-None-Match", tag)
		expect(t, "PATCH with If-None-Match of the current ETag", r, http.StatusPreconditionFailed)
		if msg := r.json(t)["error"].(string); !strings.Contains(msg, "If-None-Match") || strings.Contains(msg, "If-Match") {
			t.Fatalf("%s: a write refused by If-None-Match says %q", path, msg)
		}
	}
}

func TestABodyOfTooManyNamesIsRefusedBeforeItIsDecoded(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	var b strings.Builder
	b.WriteString(`{"username":"z"`)
	for i := 0; i < 80000; i++ {
		fmt.Fprintf(&b, `,"f%d":1`, i)
	}
	b.WriteString("}")
	for _, c := range []struct{ method, path string }{{"POST", "/api/users"}, {"PATCH", "/api/users/" + uid}, {"POST", "/api/authenticate"}, {"POST", "/api/users/" + uid + "/goals"}} {
		r := ts.do(t, c.method, c.path, b.String())
		expect(t, c.method+" "+c.path+" with 80,001 names", r, http.StatusBadRequest)
		if msg, _ := r.json(t)["error"].(string); !strings.Contains(msg, "80001 names") {
			t.Fatalf("%s %s with 80,001 names: %s", c.method, c.path, r.body)
		}
	}
	// An array of as many strings is no object, and is told so.
	r := ts.do(t, "POST", "/api/users", "["+strings.Repeat(`"x",`, 2000)+`"x"]`)
	if msg, _ := r.json(t)["error"].(string); r.status != http.StatusBadRequest || !strings.Contains(msg, "JSON object") {
		t.Fatalf("an array of 2,001 strings: %d %s", r.status, r.body)
	}
	// Malformed past the bound, it is told what is malformed.
	r = ts.do(t, "POST", "/api/users", strings.TrimSuffix(b.String(), "}")+",}")
	if msg, _ := r.json(t)["error"].(string); r.status != http.StatusBadRequest || !strings.Contains(msg, "malformed JSON") {
		t.Fatalf("a malformed body of 80,001 names: %d %s", r.status, r.body)
	}
}

// ---- 15. /healthz is never limited ----

func TestHealthzIsNeverLimited(t *testing.T) {
	cfg := testConfig()
	cfg.now, cfg.rateLimit, cfg.rateBurst, cfg.max404 = newFakeClock().Now, 1, 1, 2
	ts := newTestServerWith(t, cfg)
	for i := 0; i < 3; i++ {
		ts.do(t, "GET", "/nope", "")
	}
	expect(t, "the API after the 404 cap", ts.do(t, "GET", "/api/users", ""), 429)
	for i := 0; i < 20; i++ {
		expect(t, "healthz", ts.do(t, "GET", "/healthz", ""), 200)
	}
}

// ---- 16. a list's ETag covers its Link ----

func TestListETagCoversLink(t *testing.T) {
	ts := newTestServer(t)
	ts.mustCreateUser(t, "a-user", "")
	ts.mustCreateUser(t, "b-user", "")
	r := ts.do(t, "GET", "/api/users?limit=2", "")
	tag := r.header.Get("ETag")
	if r.header.Get("Link") != "" {
		t.Fatalf("a full last page has Link %q", r.header.Get("Link"))
	}
	ts.mustCreateUser(t, "c-user", "") // past the page: the body is the same, the Link is new
	r2 := ts.do(t, "GET", "/api/users?limit=2", "", "If-None-Match", tag)
	if r2.status != 200 || r2.header.Get("Link") == "" {
		t.Fatalf("after a row was added past the page: %d, Link %q; want 200 with a Link", r2.status, r2.header.Get("Link"))
	}
	if string(r2.body) != string(r.body) {
		t.Fatal("the page itself changed; the test meant only its Link to")
	}
}

// ---- 17. show on authenticate ----

func TestAuthenticateHonoursShow(t *testing.T) {
	ts := newTestServer(t)
	ts.mustCreateUser(t, "zoe", `,"email":"zoe@example.com"`)
	login := `{"username":"zoe","password":"correct horse"}`
	for _, show := range []string{"password", "nickname", "goals.password"} {
		expect(t, "authenticate?show="+show, ts.do(t, "POST", "/api/authenticate?show="+show, login), http.StatusBadRequest)
	}
	r := ts.do(t, "POST", "/api/authenticate?show=email,goals", login)
	expect(t, "authenticate?show=email,goals", r, http.StatusOK)
	u := r.json(t)["user"].(map[string]any)
	if u["email"] != "zoe@example.com" || u["goals"] == nil || strings.Contains(string(r.body), "argon2") {
		t.Fatalf("authenticate with show: %s", r.body)
	}
}

// ---- 18. command line and bodies ----

func TestStartupErrorsFollowTheLogFormat(t *testing.T) {
	var out, errOut strings.Builder
	missing := filepath.Join(t.TempDir(), "no", "x.db")
	// The format is followed whatever fails: a later flag, a flag before
	// it that does not parse, another variable that does not.
	for _, c := range []struct {
		what string
		args []string
		env  func(string) string
	}{
		{"a missing folder", []string{"-log-format", "json", "-db", missing}, envOf()},
		{"an unknown flag before -log-format", []string{"-bogus", "-log-format=json"}, envOf()},
		{"a bad flag value before -log-format", []string{"-max-goals", "many", "--log-format", "json"}, envOf()},
		{"a bad variable, the format in its own", nil, envOf("USERSVC_CACHE_SIZE", "lots", "USERSVC_LOG_FORMAT", "json")},
	} {
		errOut.Reset()
		err := run(context.Background(), append([]string{"usersvc"}, c.args...), c.env, &out, &errOut)
		if err == nil {
			t.Fatalf("%s: started", c.what)
		}
		lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		var line map[string]any
		if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &line) != nil || line["level"] != "ERROR" || line["msg"] == nil || line["time"] == nil {
			t.Fatalf("%s with -log-format json: %q, want one JSON line with time, level, msg", c.what, errOut.String())
		}
	}
	errOut.Reset()
	err := run(context.Background(), []string{"usersvc", "-nope"}, envOf(), &out, &errOut)
	if err == nil || exitCode(err) != 2 || strings.Count(errOut.String(), "-nope") != 1 {
		t.Fatalf("unknown flag: exit %d, stderr %q; want exit 2 and the error printed once", exitCode(err), errOut.String())
	}
}

func TestJSONBodiesEndWithANewline(t *testing.T) {
	ts := newTestServer(t)
	uid := ts.mustCreateUser(t, "zoe", "")["id"].(string)
	for _, r := range []response{
		ts.do(t, "GET", "/api/users", ""),
		ts.do(t, "GET", "/api/users/"+uid, ""),
		ts.do(t, "GET", "/api/users/nope", ""),
		ts.do(t, "POST", "/api/users", `{}`),
		ts.do(t, "GET", "/healthz", ""),
		ts.do(t, "DELETE", "/api/users", ""),
		ts.do(t, "GET", "/nope", ""),
	} {
		if !strings.HasSuffix(string(r.body), "}\n") && !strings.HasSuffix(string(r.body), "]\n") {
			t.Fatalf("body %q does not end with a newline", r.body)
		}
		if cl, _ := strconv.Atoi(r.header.Get("Content-Length")); cl != len(r.body) {
			t.Fatalf("Content-Length %d for a body of %d bytes", cl, len(r.body))
		}
	}
}

func TestBusyStartDoesNotBreakUnknownUsers(t *testing.T) {
	// The hash unknown usernames are checked against is made at start,
	// maybe while a flood holds every place: that must not leave logins by
	// unknown names refused for good once the flood has passed.
	h := newTestHasher()
	h.admission.mu.Lock()
	h.admission.pending = h.admission.places // every place taken
	h.admission.mu.Unlock()
	h.warmUp()
	if _, err := h.admission.acquire(t.Context(), "a newcomer"); err != errHashBusy {
		t.Fatalf("with every place taken: %v, want errHashBusy", err)
	}
	h.admission.mu.Lock()
	h.admission.pending = 0 // the flood has passed
	h.admission.mu.Unlock()
	if err := h.VerifyNobody(t.Context(), "a client", "some password"); err != nil {
		t.Fatalf("unknown user after a busy start: %v, want a wrong-password check", err)
	}
}

// Small answers leave Content-Length to net/http (writeJSON), large ones
// set it: either way every answer carries its length, HEAD the length of
// what GET would send, and none is chunked.
func TestEveryAnswerHasItsContentLength(t *testing.T) {
	ts := newTestServer(t)
	var uid string
	for i := 0; i < 40; i++ {
		uid = ts.mustCreateUser(t, fmt.Sprintf("length%02d", i), "")["id"].(string)
	}
	get := ts.do(t, "GET", "/api/users/"+uid, "")
	list := ts.do(t, "GET", "/api/users?limit=40", "")
	if len(get.body) > smallBody || len(list.body) <= smallBody {
		t.Fatalf("a user of %d bytes and a list of %d do not fall on both sides of %d", len(get.body), len(list.body), smallBody)
	}
	head := ts.do(t, "HEAD", "/api/users/"+uid, "")
	for _, c := range []struct {
		what string
		r    response
		want int
	}{{"GET one", get, len(get.body)}, {"GET list", list, len(list.body)}, {"HEAD one", head, len(get.body)}} {
		if cl, err := strconv.Atoi(c.r.header.Get("Content-Length")); err != nil || cl != c.want {
			t.Fatalf("%s: Content-Length %q; want %d", c.what, c.r.header.Get("Content-Length"), c.want)
		}
		if te := c.r.header.Get("Transfer-Encoding"); te != "" {
			t.Fatalf("%s: Transfer-Encoding %q", c.what, te)
		}
	}
}

// stallOn sends GET path from src on a connection it never reads (closed
// when the test ends), with a receive buffer as small as the system
// allows, so a large answer stays in the server.
func stallOn(t *testing.T, ts *testServer, src, path string) net.Conn {
	t.Helper()
	c, err := dialFrom(src, strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(4096) //nolint:errcheck // a test
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path)
	return c
}

// placesTaken is how many places for large answers the server holds.
func placesTaken(ts *testServer) int {
	ts.api.large.mu.Lock()
	defer ts.api.large.mu.Unlock()
	return ts.api.large.taken
}

// waitForPlaces waits until the server holds n places for large answers.
func waitForPlaces(t *testing.T, ts *testServer, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); placesTaken(ts) != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server holds %d places for large answers, want %d", placesTaken(ts), n)
		}
	}
}

func TestLargeAnswersToClientsThatDoNotReadAreBounded(t *testing.T) {
	ts := newTestServer(t)
	small := ts.mustCreateUser(t, "small", "")["id"].(string)
	ts.mustCreateGoal(t, small, `{"title":"a","target_minutes":5}`)
	fat := ts.mustCreateUser(t, "fat", "")["id"].(string)
	// 1,000 goals whose descriptions are control characters, six bytes
	// each escaped: 13 MB, more than the sockets between here and the
	// server hold, so a client that does not read keeps it in the server.
	bulkGoals(t, ts, fat, 1000, strings.Repeat("\x01", 2000))
	path := "/api/users/" + fat + "?show=goals.description"
	first := stallOn(t, ts, "127.0.0.1", path)
	waitForPlaces(t, ts, 1)
	second := stallOn(t, ts, "127.0.0.1", path)
	waitForPlaces(t, ts, 2)
	// The client's two places are taken: its third large answer is a 503
	// at once, and a page ends before the large user.
	r := ts.do(t, "GET", path, "")
	expect(t, "a third large answer to one client", r, http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("the 503 has no Retry-After")
	}
	r = ts.do(t, "GET", "/api/users?show=goals.description", "")
	expect(t, "a page that would hold the large user", r, http.StatusOK)
	if items := r.list(t); len(items) != 1 || items[0]["id"] != small || r.header.Get("Link") == "" {
		t.Fatalf("the page holds %d users (Link %q), want the small one and a Link to the next", len(items), r.header.Get("Link"))
	}
	// A write whose answer would be large is a 503 before it commits:
	// it changes nothing. Without the goals' descriptions the answer is
	// small, and needs no place.
	expect(t, "a write showing the large user's goals", ts.do(t, "PATCH", path, `{"full_name":"Fat"}`), http.StatusServiceUnavailable)
	if u := ts.do(t, "GET", "/api/users/"+fat+"?show=full_name,goals", "").json(t)["user"].(map[string]any); u["full_name"] != nil {
		t.Fatalf("the refused write changed the user: full_name %v", u["full_name"])
	}
	// A place comes back when its client goes.
	first.Close()
	waitForPlaces(t, ts, 1)
	r = ts.do(t, "PATCH", path, `{"full_name":"Fat"}`)
	expect(t, "a write showing the large user's goals once a place is free", r, http.StatusOK)
	if len(r.body) < 12_000_000 {
		t.Fatalf("the large answer is %d bytes, want the 13 MB it is", len(r.body))
	}
	// A page of goals takes a place once it passes half the bound.
	goalsPath := "/api/goals?user_id=" + fat + "&show=description&limit=1000"
	whole := len(ts.do(t, "GET", goalsPath, "").list(t))
	// Places are bounded in all, whoever holds them.
	for i := 0; placesTaken(ts) < largeAnswerPlaces; i++ {
		ts.api.large.take(fmt.Sprintf("198.51.100.%d", i))
	}
	second.Close()
	waitForPlaces(t, ts, largeAnswerPlaces-1)
	ts.api.large.take("198.51.100.250")
	expect(t, "a large answer when every place is taken", ts.do(t, "GET", path, ""), http.StatusServiceUnavailable)
	r = ts.do(t, "GET", goalsPath, "")
	expect(t, "a page of goals when every place is taken", r, http.StatusOK)
	if short := len(r.list(t)); short >= whole || r.header.Get("Link") == "" || len(r.body) > largeAnswerBytes {
		t.Fatalf("a page of goals when every place is taken: %d goals, %d bytes (Link %q); with a place %d goals", short, len(r.body), r.header.Get("Link"), whole)
	}
	expect(t, "a small answer when every place is taken", ts.do(t, "GET", "/api/users/"+fat+"?show=goals", ""), http.StatusOK)
}

func TestTheWeightOfAnAnswerBoundsItsSize(t *testing.T) {
	texts := []string{"plain", strings.Repeat("\x01", 300), `"\` + "\u2028\u2029\u00e9<>&\x7f\n\r\t\U0001F600", "\xff\xfe broken", ""}
	for _, text := range texts {
		if n, want := stringBytes(text), len(appendString(nil, text)); n != want {
			t.Fatalf("stringBytes(%q) = %d, appendString writes %d", text, n, want)
		}
		email, name, desc := text+"@example.com", text, text
		u := User{ID: "01939f5e-0000-7000-8000-000000000001", Username: "zoe", Email: &email, FullName: &name, CreatedAt: "2026-01-02T03:04:05.000Z", ModifiedAt: "2026-01-02T03:04:05.000Z"}
		g := Goal{ID: u.ID, UserID: u.ID, Title: text, Period: "week", TargetMinutes: -math.MaxInt32, Description: &desc, CreatedAt: u.CreatedAt, ModifiedAt: u.CreatedAt}
		goals := []Goal{g, g, g}
		for _, show := range []userShow{{}, {Email: true, FullName: true, Goals: true, GoalDescription: true}, {Goals: true}} {
			n, max := len(appendUser(nil, &u, show, goals)), maxUserBytes(&u, show, goals)
			if n > max || max > n+200+4*200 {
				t.Fatalf("a user of %q with %+v renders to %d bytes, its weight is %d", text, show, n, max)
			}
		}
		for _, show := range []goalShow{{}, {Description: true, User: true, UserEmail: true, UserFullName: true}} {
			n, max := len(appendGoal(nil, &g, show, &u)), maxGoalBytes(&g, show, &u)
			if n > max || max > n+2*200 {
				t.Fatalf("a goal of %q with %+v renders to %d bytes, its weight is %d", text, show, n, max)
			}
		}
	}
}

func TestAnswersBeingSentHoldNoReadTransaction(t *testing.T) {
	ts := newTestServer(t)
	fat := ts.mustCreateUser(t, "fat", "")["id"].(string)
	bulkGoals(t, ts, fat, 1000, strings.Repeat("\x01", 2000))
	// Every place taken by clients that do not read answers read in a
	// transaction: more of them than SQLite has read connections.
	for i := range largeAnswerPlaces {
		stallOn(t, ts, fmt.Sprintf("127.0.0.%d", 2+i/largeAnswersPerClient), "/api/users/"+fat+"?show=goals.description")
	}
	waitForPlaces(t, ts, largeAnswerPlaces)
	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/api/users?limit=1", "/api/users/" + fat + "?show=goals", "/healthz"} {
		resp, err := client.Get(ts.URL + path)
		if err != nil {
			t.Fatalf("GET %s while answers are being sent: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s while answers are being sent: %d", path, resp.StatusCode)
		}
	}
	if testBackend == "postgres" {
		var n int
		ts.sqlGet(t, &n, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'")
		if n != 0 {
			t.Fatalf("%d connections sit idle in a transaction while their answers are sent", n)
		}
	}
}

func TestPlainWordIsTheTableEightBytesAtATime(t *testing.T) {
	plain := func(s string) bool {
		for i := range len(s) {
			if !plainJSON[s[i]] {
				return false
			}
		}
		return true
	}
	word := []byte("abcdefgh")
	for pos := range 8 {
		for c := range 256 {
			w := slices.Clone(word)
			w[pos] = byte(c)
			if got, want := plainWord(string(w)), plain(string(w)); got != want {
				t.Fatalf("plainWord(%q) = %v, want %v", w, got, want)
			}
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200_000 {
		w := make([]byte, 8)
		for i := range w {
			w[i] = byte(rng.IntN(256))
			if rng.IntN(4) > 0 {
				w[i] = byte(0x20 + rng.IntN(0x60)) // mostly plain, so whole words are
			}
		}
		if got, want := plainWord(string(w)), plain(string(w)); got != want {
			t.Fatalf("plainWord(%q) = %v, want %v", w, got, want)
		}
		// And appendString writes what escaping a byte at a time writes.
		s := string(w) + string(w[:rng.IntN(8)]) + "0123456789abcdef"[:rng.IntN(17)]
		if got, want := appendString(nil, s), appendEscaped([]byte{'"'}, s, 0); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %q, want %q", s, got, want)
		}
	}
}
