// fuzz_test.go: fuzz targets for body decoding and validation, the show
// parser, list query parsing, and the whole handler. Seeds live in
// testdata/fuzz/; CI runs each target for a bounded time.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// decodeBody runs a body through decodeJSONObject as a request would.
func decodeBody(body []byte) (jsonObject, error) {
	req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return decodeJSONObject(httptest.NewRecorder(), req)
}

// checkClientError fails unless err is one of the errors answered as a
// 4xx in the contract's shape.
func checkClientError(t *testing.T, err error) {
	t.Helper()
	var fe fieldErrors
	var de *Error
	switch {
	case errors.As(err, &fe):
		if len(fe) == 0 {
			t.Fatal("empty fieldErrors")
		}
	case errors.As(err, &de):
		if status := statusOf[de.Code]; status < 400 || status > 499 {
			t.Fatalf("status %d for a body", status)
		}
	default:
		t.Fatalf("unexpected error type %T: %v", err, err)
	}
}

func FuzzUserBody(f *testing.F) {
	for _, s := range []string{
		`{"username":"zoe","password":"correct horse","email":"z@example.com","full_name":"Zoe"}`,
		`{"username":null,"email":null}`, `{"full_name":"\u2028\u0000é"}`, `{"id":"x","created_at":1}`,
		`{"username":5}`, `[]`, `null`, `{"a":1} {}`, `{"username":"a\"b"}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, err := decodeBody(body)
		if err != nil {
			checkClientError(t, err)
			return
		}
		for _, creating := range []bool{true, false} {
			in, err := decodeUserInput(obj, creating)
			if err != nil {
				checkClientError(t, err)
				continue
			}
			u := User{ID: "01939f5e-0000-7000-8000-000000000000"}
			in.apply(&u)
			out := appendUser(nil, &u, userShow{Email: true, FullName: true}, nil)
			var back map[string]any
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatalf("appendUser wrote invalid JSON %q: %v", out, err)
			}
			if u.FullName != nil && utf8.ValidString(*u.FullName) && back["full_name"] != *u.FullName {
				t.Fatalf("full_name %q came back as %q", *u.FullName, back["full_name"])
			}
			if back["username"] != u.Username {
				t.Fatalf("username %q came back as %v", u.Username, back["username"])
			}
		}
	})
}

func FuzzGoalBody(f *testing.F) {
	for _, s := range []string{
		`{"title":"Read","target_minutes":30,"period":"week","description":"x"}`,
		`{"target_minutes":1.5}`, `{"target_minutes":1e400}`, `{"period":null}`, `{"user_id":"x","title":""}`,
		`{"target_minutes":-9223372036854775809}`, `{"title":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		obj, err := decodeBody(body)
		if err != nil {
			checkClientError(t, err)
			return
		}
		in, err := decodeGoalInput(obj, true)
		if err != nil {
			checkClientError(t, err)
			return
		}
		g := Goal{ID: "01939f5e-0000-7000-8000-000000000000", Period: "day"}
		in.apply(&g)
		if g.TargetMinutes < 1 || g.TargetMinutes > 10080 || (g.Period != "day" && g.Period != "week") || utf8.RuneCountInString(g.Title) > 200 {
			t.Fatalf("validation let through %+v", g)
		}
		if out := appendGoal(nil, &g, goalShow{Description: true}, nil); !json.Valid(out) {
			t.Fatalf("appendGoal wrote invalid JSON %q", out)
		}
	})
}

func FuzzShow(f *testing.F) {
	for _, s := range []string{"email,full_name", "goals.description", "user.email", "password", ",,", "goals.", ".", "a.b.c", strings.Repeat("x,", 50)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, show string) {
		for _, err := range []error{second(parseUserShow([]string{show})), second(parseGoalShow([]string{show}))} {
			if err == nil {
				continue
			}
			var fe fieldErrors
			if !errors.As(err, &fe) || fe["show"] == "" || len(fe) != 1 {
				t.Fatalf("show %q: error %v, want {\"show\": …}", show, err)
			}
			if len(fe["show"]) > 40+10*len(show) {
				t.Fatalf("show error longer than its input: %q", fe["show"])
			}
		}
		if s, err := parseUserShow([]string{show}); err == nil && s.GoalDescription && !s.Goals {
			t.Fatalf("goals.description without goals for %q", show)
		}
	})
}

// second returns the error of a (value, error) pair.
func second[T any](_ T, err error) error { return err }

func FuzzListQuery(f *testing.F) {
	for _, s := range []string{"limit=10", "limit=0", "limit=1e2", "after=01939f5e-0000-7000-8000-000000000000", "limit=1000&after=x", "limit=%31%30", "limit=٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		p, err := parsePage(q)
		if err != nil {
			var fe fieldErrors
			if !errors.As(err, &fe) {
				t.Fatalf("%q: error %T", raw, err)
			}
			return
		}
		if p.Limit < 1 || p.Limit > maxLimit {
			t.Fatalf("%q: limit %d accepted", raw, p.Limit)
		}
		if p.After != "" {
			if _, ok := parseID(p.After); !ok {
				t.Fatalf("%q: after %q accepted", raw, p.After)
			}
		}
	})
}

func FuzzHandler(f *testing.F) {
	st, err := openStore(f.Context(), testDB(f), storeOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	cfg := testConfig()
	cfg.maxLoginFailures = 3
	h := newServer(cfg, quietLogger(), st)
	seed := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/users", strings.NewReader(`{"username":"zoe","password":"correct horse"}`))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(seed, req)
	for _, c := range []struct {
		method byte
		path   string
		body   string
	}{
		{0, "/api/users?show=goals", ""}, {1, "/api/users", `{"username":"max","password":"12345678"}`},
		{2, "/api/users/by-username/zoe", `{"full_name":"z"}`}, {3, "/api/users/x", `{}`},
		{4, "/api/goals/01939f5e-0000-7000-8000-000000000000", ""}, {1, "/api/authenticate", `{"username":"zoe","password":"x"}`},
		{0, "/api/../../etc/passwd", ""}, {5, "/healthz", ""}, {6, "/api/users?limit=1&after=", ""},
	} {
		f.Add(c.method, c.path, []byte(c.body), true)
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "BREW"}
	f.Fuzz(func(t *testing.T, m byte, target string, body []byte, asJSON bool) {
		method := methods[int(m)%len(methods)]
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := &http.Request{Method: method, URL: u, RequestURI: target, Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Host: "localhost", RemoteAddr: "192.0.2.1:1234"}
		req = req.WithContext(t.Context())
		if asJSON {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code < 200 {
			t.Fatalf("%s %q: status %d, body %s", method, target, rec.Code, rec.Body)
		}
		if u.Path == "/metrics" || rec.Code == 204 || rec.Code == 304 || method == "HEAD" {
			return
		}
		if !json.Valid(rec.Body.Bytes()) || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s %q: %d answer is not JSON: %q", method, target, rec.Code, rec.Body)
		}
	})
}

// namesByTokens counts each name of the object in body with encoding/json's
// tokenizer, the reference countNames and repeatedNames are held to.
func namesByTokens(body []byte) (map[string]int, int, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, 0, false
	}
	counts, n := map[string]int{}, 0
	for dec.More() {
		name, err := dec.Token()
		if err != nil {
			return nil, 0, false
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return nil, 0, false
		}
		counts[name.(string)]++
		n++
	}
	return counts, n, true
}

// countNames, which decides whether a body is searched for repeated names,
// and repeatedNames agree with the tokenizer on every object.
func FuzzRepeatedNames(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"a":2}`, `{"a":{"b":[1,{"c":2}]},"d":"x,\"y"}`, `{"\u0061":1,"a":2}`, ` { "a" : [ "{" , "}" ] , "b":"\\"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if _, err := parseObject(body); err != nil {
			return
		}
		counts, n, ok := namesByTokens(body)
		if !ok {
			return
		}
		if got := countNames(body); got != n {
			t.Fatalf("countNames(%q) = %d, want %d", body, got, n)
		}
		repeated := repeatedNames(body)
		for name, c := range counts {
			if (c > 1) != repeated[name] {
				t.Fatalf("%q: %q given %d times, repeatedNames says %v", body, name, c, repeated[name])
			}
		}
	})
}

// integerLiteral reads a number literal exactly: math/big's reading of
// the same literal says whether it is an integer, and which.
func FuzzIntegerLiteral(f *testing.F) {
	for _, s := range []string{"30", "30.0", "3e1", "1e20", "10080.0000000000001", "-0.0", "0e7", "1E99999999999999999", "1e-400", "2147483647", "2147483648", "-2147483648", "0.00000000000000000000000030e27"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, lit string) {
		if !json.Valid([]byte(lit)) || lit == "" || lit[0] != '-' && (lit[0] < '0' || lit[0] > '9') || strings.TrimSpace(lit) != lit {
			return // not a number literal as integer hands it over (trimmed)
		}
		n, ok := integerLiteral(lit)
		if i := strings.IndexAny(lit, "eE"); i >= 0 && len(lit)-i > 6 {
			return // an exponent big.Rat would take long over; integerLiteral must only not hang
		}
		r, valid := new(big.Rat).SetString(lit)
		switch {
		case !valid:
			t.Fatalf("big.Rat cannot read %q", lit)
		case !r.IsInt():
			if ok {
				t.Fatalf("integerLiteral(%q) = %d; it has a fraction", lit, n)
			}
		case !ok:
			t.Fatalf("integerLiteral(%q) says it has a fraction; it is %s", lit, r.Num())
		case r.Num().CmpAbs(big.NewInt(math.MaxInt32)) > 0:
			if n != math.MaxInt32 && n != -math.MaxInt32 || (n < 0) != (r.Sign() < 0) {
				t.Fatalf("integerLiteral(%q) = %d, want it clamped to ±%d", lit, n, math.MaxInt32)
			}
		case int64(n) != r.Num().Int64():
			t.Fatalf("integerLiteral(%q) = %d, want %s", lit, n, r.Num())
		}
	})
}
