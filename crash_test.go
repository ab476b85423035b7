// crash_test.go: SIGKILL the real binary under concurrent writes and prove
// that every acknowledged write survived, whole.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	testBinaryOnce sync.Once
	testBinaryPath string
	testBinaryErr  error
)

// buildTestBinary builds usersvc once per test run, into a folder removed
// when the process exits.
func buildTestBinary(t testing.TB) string {
	t.Helper()
	testBinaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "usersvc-bin-")
		if err != nil {
			testBinaryErr = err
			return
		}
		testBinaryPath = filepath.Join(dir, "usersvc")
		out, err := exec.Command("go", "build", "-o", testBinaryPath, ".").CombinedOutput()
		if err != nil {
			testBinaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if testBinaryErr != nil {
		t.Fatal(testBinaryErr)
	}
	return testBinaryPath
}

// startProcess runs the binary with args and returns it with its base URL
// once it serves.
func startProcess(t testing.TB, bin string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if m := servingAddr.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, stderr) //nolint:errcheck // keep the pipe drained
			return cmd, "http://" + m[1]
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatal("usersvc did not start")
	return nil, ""
}

// ledger is what clients were told: every acknowledged create and the
// latest acknowledged update of each user.
type ledger struct {
	mu        sync.Mutex
	users     map[string]int // id → highest acknowledged full_name sequence
	goals     map[string]string
	updates   int
	attempted int
}

func (l *ledger) ackUser(id string, seq int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq == 0 {
		l.users[id] = 0
		return
	}
	l.updates++
	l.users[id] = max(l.users[id], seq)
}

func (l *ledger) ackGoal(id, userID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.goals[id] = userID
}

// crashWriter creates users, renames them with rising sequence numbers and
// adds goals until a request fails (the process was killed).
func crashWriter(base string, w int, l *ledger, client *http.Client) {
	post := func(method, path, body string) (int, map[string]any) {
		l.mu.Lock()
		l.attempted++
		l.mu.Unlock()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			return 0, nil // a torn answer is not an acknowledgement
		}
		return resp.StatusCode, m
	}
	for i := 0; ; i++ {
		status, m := post("POST", "/api/users", fmt.Sprintf(`{"username":"c%d_%d_%d","password":"12345678","full_name":"seq-0"}`, w, i, time.Now().UnixNano()%1e9))
		if status != 201 {
			return
		}
		id := m["user"].(map[string]any)["id"].(string)
		l.ackUser(id, 0)
		for seq := 1; seq <= 6; seq++ {
			status, _ := post("PATCH", "/api/users/"+id, fmt.Sprintf(`{"full_name":"seq-%d"}`, seq))
			if status != 200 {
				return
			}
			l.ackUser(id, seq)
		}
		status, m = post("POST", "/api/users/"+id+"/goals", `{"title":"g","target_minutes":5}`)
		if status != 201 {
			return
		}
		l.ackGoal(m["goal"].(map[string]any)["id"].(string), id)
	}
}

func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	bin := buildTestBinary(t)
	db := testDB(t)
	l := &ledger{users: map[string]int{}, goals: map[string]string{}}
	for round, killAfter := range []time.Duration{400 * time.Millisecond, 1200 * time.Millisecond, 2500 * time.Millisecond} {
		cmd, base := startProcess(t, bin, "-addr", "127.0.0.1:0", "-db", db, "-rate-limit", "0", "-max-404", "0")
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) { defer wg.Done(); crashWriter(base, round*8+w, l, client) }(w)
		}
		time.Sleep(killAfter)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait() //nolint:errcheck // killed on purpose
		wg.Wait()
		found := checkAfterCrash(t, db, l)
		l.mu.Lock()
		fmt.Printf("crash round %d (SIGKILL after %v): %d requests sent; acknowledged %d creates, %d updates, %d goals; found %d users, %d goals, all acknowledged writes present\n",
			round+1, killAfter, l.attempted, len(l.users), l.updates, len(l.goals), found.users, found.goals)
		l.mu.Unlock()
	}
	if len(l.users) == 0 {
		t.Fatal("no write was acknowledged: the test proved nothing")
	}
}

// crashFound is what the database held after a crash.
type crashFound struct{ users, goals int }

// checkAfterCrash reopens the database as the service would and checks it
// against the ledger: every acknowledged write present (or a later one),
// nothing half-applied, integrity and foreign keys intact.
func checkAfterCrash(t *testing.T, db string, l *ledger) crashFound {
	t.Helper()
	st, err := openStore(context.Background(), db, storeOptions{})
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer st.Close()
	if testBackend == "sqlite" {
		if err := checkIntegrity(context.Background(), db); err != nil {
			t.Fatal(err)
		}
	}
	var users []User
	if err := rawDB(st).Select(&users, "SELECT "+userColumns+" FROM users"); err != nil {
		t.Fatal(err)
	}
	byID := map[string]User{}
	for _, u := range users {
		byID[u.ID] = u
		seq := -1
		if u.FullName != nil {
			seq, _ = strconv.Atoi(strings.TrimPrefix(*u.FullName, "seq-"))
		}
		// Every write sets full_name and bumps version together: a
		// mismatch would be a half-applied write.
		if u.CreatedAt == "" || u.ModifiedAt == "" || !strings.HasPrefix(u.PasswordHash, "$argon2id$") || seq < 0 || u.Version != int64(seq+1) {
			t.Fatalf("half-applied user after crash: %+v", u)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, seq := range l.users {
		u, ok := byID[id]
		if !ok {
			t.Fatalf("acknowledged user %s is lost", id)
		}
		if got := int(u.Version - 1); got < seq {
			t.Fatalf("user %s: found update %d, but update %d was acknowledged", id, got, seq)
		}
	}
	var goals []Goal
	if err := rawDB(st).Select(&goals, "SELECT "+goalColumns+" FROM goals"); err != nil {
		t.Fatal(err)
	}
	goalIDs := map[string]bool{}
	for _, g := range goals {
		goalIDs[g.ID] = true
		if g.CreatedAt == "" || g.Title != "g" {
			t.Fatalf("half-applied goal after crash: %+v", g)
		}
	}
	for id := range l.goals {
		if !goalIDs[id] {
			t.Fatalf("acknowledged goal %s is lost", id)
		}
	}
	return crashFound{users: len(users), goals: len(goals)}
}
