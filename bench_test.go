// bench_test.go: the benchmarks a Go client in the test process measures
// well: the cost of a page deep in a million rows against the first, the
// memory of a burst of logins, the RSS of a server holding a million
// users, start-up, all of the real binary where it matters. Throughput
// against a ceiling is measured from outside, by bench/run.
//
//	go test -run '^$' -bench . -benchtime 3s
package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
)

// benchClients is how many clients drive each benchmark at once.
const benchClients = 16

// fixtureDir caches the large databases for the whole run; TestMain
// removes it.
var (
	fixtureOnce sync.Once
	fixtureRoot string
	fixtureMu   sync.Mutex
	fixtures    = map[int]string{}
)

// cleanupFixtures removes the fixtures and the test binary a run built.
func cleanupFixtures() {
	if fixtureRoot != "" {
		os.RemoveAll(fixtureRoot)
	}
	if testBinaryPath != "" {
		os.RemoveAll(filepath.Dir(testBinaryPath))
	}
}

// usersFixture returns the path of a database holding n users, built once
// per run with a direct bulk insert.
func usersFixture(b *testing.B, n int) string {
	b.Helper()
	fixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "usersvc-bench-")
		if err != nil {
			b.Fatal(err)
		}
		fixtureRoot = dir
	})
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if path, ok := fixtures[n]; ok {
		return path
	}
	path := filepath.Join(fixtureRoot, fmt.Sprintf("users-%d.db", n))
	start := time.Now()
	if err := buildUsersDB(path, n); err != nil {
		b.Fatalf("build fixture of %d users: %v", n, err)
	}
	b.Logf("built a fixture of %d users in %v", n, time.Since(start).Round(time.Millisecond))
	fixtures[n] = path
	return path
}

// buildUsersDB creates the schema at path and bulk-inserts n users with
// time-ordered ids, in large transactions without fsync (a fixture, not
// data anyone acknowledged).
func buildUsersDB(path string, n int) error {
	st, err := openStore(context.Background(), path, storeOptions{})
	if err != nil {
		return err
	}
	if err := st.Close(); err != nil {
		return err
	}
	db, err := sqlx.Open("sqlite", uriPath(path)+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
	if err != nil {
		return err
	}
	defer db.Close()
	hash := "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
	ts := formatTime(time.Now())
	const chunk = 50000
	for start := 0; start < n; start += chunk {
		tx, err := db.Begin()
		if err != nil {
			return err
		}
		stmt, err := tx.Prepare(`INSERT INTO users (id, username, username_key, email, email_key, full_name,
			password_hash, version, created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`)
		if err != nil {
			return err
		}
		for i := start; i < min(n, start+chunk); i++ {
			id := uuid.Must(uuid.NewV7()).String()
			name := fmt.Sprintf("user%07d", i)
			email := name + "@example.com"
			if _, err := stmt.Exec(id, name, name, email, email, "User Number "+strconv.Itoa(i), hash, ts, ts); err != nil {
				return err
			}
		}
		stmt.Close()
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	_, err = db.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return err
}

// fixtureIDs returns every user id of the fixture at path, in id order.
func fixtureIDs(b *testing.B, path string) []string {
	b.Helper()
	db, err := sqlx.Open("sqlite", uriPath(path)+"?mode=ro")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var ids []string
	if err := db.Select(&ids, "SELECT id FROM users ORDER BY id"); err != nil {
		b.Fatal(err)
	}
	return ids
}

// loopbackServer serves h on a real loopback listener, as production does.
func loopbackServer(b *testing.B, h http.Handler) string {
	b.Helper()
	// As main does in production, less the memory limit: this process also
	// holds the clients and the fixtures' ids, which a server does not.
	debug.SetGCPercent(gcPercent)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// benchClient is a keep-alive client with room for every benchmark client.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: 2 * benchClients, MaxIdleConnsPerHost: 2 * benchClients, DisableCompression: true,
	}}
}

// benchAPI starts the real API (rate limits off, logs discarded) on the
// database at path.
func benchAPI(b *testing.B, path string) string {
	b.Helper()
	st, err := openStore(context.Background(), path, storeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	cfg := testConfig()
	cfg.password = defaultPasswordParams
	logger := quietLogger()
	return loopbackServer(b, newServer(cfg, logger, st))
}

// request is one benchmark request: method, URL and body.
type request struct {
	method, url, body string
}

// send performs req and checks its status, reading the whole body.
func send(client *http.Client, req request, want int) error {
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	r, err := http.NewRequest(req.method, req.url, body)
	if err != nil {
		return err
	}
	if req.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(r)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d", req.method, req.url, resp.StatusCode, want)
	}
	return err
}

// runParallel drives next's requests with benchClients clients for b.N
// requests in all and returns the requests per second.
func runParallel(b *testing.B, next func(rng *rand.Rand) request, want int) float64 {
	b.Helper()
	client := benchClient()
	b.SetParallelism((benchClients + 1) / max(1, runtimeProcs()))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		for pb.Next() {
			if err := send(client, next(rng), want); err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(rate, "req/s")
	return rate
}

// measureRate drives next's requests with benchClients clients for d and
// returns the requests per second: the reference side of a ratio.
func measureRate(b *testing.B, d time.Duration, next func(rng *rand.Rand) request, want int) float64 {
	b.Helper()
	client := benchClient()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	deadline := time.Now().Add(d)
	start := time.Now()
	for c := 0; c < benchClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			n := 0
			for time.Now().Before(deadline) {
				if err := send(client, next(rng), want); err != nil {
					b.Error(err)
					return
				}
				n++
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds()
}

// ---- the API ----

// fixtureAPI serves the API on the fixture of n users and returns its ids.
func fixtureAPI(b *testing.B, n int) (base string, ids []string) {
	b.Helper()
	path := usersFixture(b, n)
	return benchAPI(b, path), fixtureIDs(b, path)
}

// BenchmarkListUsersDeep times the page after row 900,000 of 1,000,000. Its
// ratio compares that page with the first one, both measured the same way
// and interleaved, so drift on a shared machine falls on both alike.
func BenchmarkListUsersDeep(b *testing.B) {
	base, ids := fixtureAPI(b, 1_000_000)
	deep := func(*rand.Rand) request {
		return request{"GET", base + "/api/users?limit=100&after=" + ids[900_000-1], ""}
	}
	first := func(*rand.Rand) request { return request{"GET", base + "/api/users?limit=100", ""} }
	runParallel(b, deep, http.StatusOK)
	var deepRate, firstRate float64
	for i := 0; i < 2; i++ {
		firstRate += measureRate(b, time.Second, first, http.StatusOK)
		deepRate += measureRate(b, time.Second, deep, http.StatusOK)
	}
	b.ReportMetric(deepRate/firstRate, "ratio")
}

// ---- the real binary: memory, start-up ----

// process is a running usersvc.
type process struct {
	cmd  *exec.Cmd
	base string
}

// startBinary runs usersvc on db with limits off (and extra flags) and
// returns once it serves.
func startBinary(b *testing.B, db string, extra ...string) *process {
	b.Helper()
	args := append([]string{"-addr", "127.0.0.1:0", "-db", db, "-rate-limit", "0", "-max-404", "0", "-max-login-failures", "0"}, extra...)
	cmd, base := startProcess(b, buildTestBinary(b), args...)
	p := &process{cmd: cmd, base: base}
	b.Cleanup(p.stop)
	return p
}

// stop ends the process gracefully.
func (p *process) stop() {
	p.cmd.Process.Signal(os.Interrupt) //nolint:errcheck // it may be gone
	p.cmd.Wait()                       //nolint:errcheck // exit status is not the point
}

// peakRSS is the process's high-water resident set (VmHWM), in MiB.
func (p *process) peakRSS(b *testing.B) float64 {
	b.Helper()
	return p.status(b, "VmHWM")
}

// status reads one memory figure of /proc/PID/status, in MiB.
func (p *process) status(b *testing.B, field string) float64 {
	b.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	b.Fatalf("no %s in /proc status", field)
	return 0
}

// BenchmarkAuthenticate sends bursts of 200 concurrent authenticates, from
// 200 clients, with the production argon2id parameters to the real binary;
// one op is one burst. Hashing admits a bounded number at once and answers
// the rest 503 with Retry-After at once. It reports the server's peak RSS
// and peak Go heap, and how many of a burst were checked.
func BenchmarkAuthenticate(b *testing.B) {
	const burst = 200
	db := filepath.Join(b.TempDir(), "auth.db")
	p := startBinary(b, db, "-trust-proxy", "127.0.0.1/32")
	client := benchClient()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = burst
	if err := send(client, request{"POST", p.base + "/api/users", `{"username":"zoe","password":"correct horse"}`}, 201); err != nil {
		b.Fatal(err)
	}
	stopSampling := make(chan struct{})
	peakHeap := make(chan float64)
	go func() { peakHeap <- samplePeakHeap(p.base, stopSampling) }()
	var checked, refused atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		for c := 0; c < burst; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("POST", p.base+"/api/authenticate", strings.NewReader(`{"username":"zoe","password":"correct horse"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Forwarded-For", clientIP(c))
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // a benchmark
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200:
					checked.Add(1)
				case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
					refused.Add(1)
				default:
					b.Errorf("authenticate: %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	close(stopSampling)
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(max(1, checked.Load())), "ns/checked-auth")
	b.ReportMetric(float64(checked.Load())/float64(b.N), "checked/burst")
	b.ReportMetric(float64(refused.Load())/float64(b.N), "refused/burst")
	b.ReportMetric(p.peakRSS(b), "peak-rss-MiB")
	b.ReportMetric(<-peakHeap, "peak-heap-MiB")
}

var heapLine = regexp.MustCompile(`(?m)^go_memstats_heap_inuse_bytes (\S+)$`)

// samplePeakHeap reads the server's heap in use from /metrics every few
// milliseconds until stop closes, and returns the largest seen, in MiB.
func samplePeakHeap(base string, stop <-chan struct{}) float64 {
	client := &http.Client{Timeout: time.Second}
	peak := 0.0
	for {
		select {
		case <-stop:
			return peak / (1 << 20)
		case <-time.After(5 * time.Millisecond):
		}
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := heapLine.FindSubmatch(body); m != nil {
			if v, err := strconv.ParseFloat(string(m[1]), 64); err == nil {
				peak = max(peak, v)
			}
		}
	}
}

// BenchmarkServerRSS1M reports the peak RSS of the binary serving
// 1,000,000 users under reads: GETs of one user, a quarter lists of 100.
func BenchmarkServerRSS1M(b *testing.B) {
	path := usersFixture(b, 1_000_000)
	ids := fixtureIDs(b, path)
	p := startBinary(b, path)
	runParallel(b, func(rng *rand.Rand) request {
		if rng.IntN(4) == 0 {
			return request{"GET", p.base + "/api/users?limit=100&after=" + ids[rng.IntN(len(ids)-101)], ""}
		}
		return request{"GET", p.base + "/api/users/" + ids[rng.IntN(len(ids))], ""}
	}, http.StatusOK)
	b.ReportMetric(p.peakRSS(b), "peak-rss-MiB")
	b.ReportMetric(p.status(b, "RssAnon"), "rss-anon-MiB")
	b.ReportMetric(p.status(b, "RssFile"), "rss-file-MiB")
}

// BenchmarkStartup1M times the binary from exec to its first 200 from
// /healthz on a database of 1,000,000 users; ns/op is the mean.
func BenchmarkStartup1M(b *testing.B) {
	path := usersFixture(b, 1_000_000)
	buildTestBinary(b)
	client := benchClient()
	var worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		p := startBinary(b, path)
		for send(client, request{"GET", p.base + "/healthz", ""}, 200) != nil {
			time.Sleep(200 * time.Microsecond)
		}
		elapsed := time.Since(start)
		worst = max(worst, elapsed)
		b.StopTimer()
		p.stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms-to-healthz")
}

// BenchmarkBinarySize builds the binary as `go build` does with CGO_ENABLED=0
// and as the README's release build does (also stripped, with -trimpath),
// and reports both sizes; ns/op is the time of the two builds (cached after
// the first). .ci/run fails when the release binary passes 20 MiB.
func BenchmarkBinarySize(b *testing.B) {
	dir := b.TempDir()
	builds := []struct {
		metric string
		args   []string
	}{
		{"static-MiB", nil},
		{"release-MiB", []string{"-trimpath", "-ldflags=-s -w"}},
	}
	sizes := make([]float64, len(builds))
	for b.Loop() {
		for i, build := range builds {
			out := filepath.Join(dir, strconv.Itoa(i))
			cmd := exec.Command("go", append(append([]string{"build"}, build.args...), "-o", out, ".")...)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if msg, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("go build %v: %v\n%s", build.args, err, msg)
			}
			st, err := os.Stat(out)
			if err != nil {
				b.Fatal(err)
			}
			sizes[i] = float64(st.Size()) / (1 << 20)
		}
	}
	for i, build := range builds {
		b.ReportMetric(sizes[i], build.metric)
	}
}

// runtimeProcs is GOMAXPROCS, which RunParallel multiplies its parallelism
// by.
func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
