package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCaptureThenServe captures a fake usersvc's answers and checks the
// ceiling answers each case with the same status, headers and body, routes
// by method, path and If-None-Match, and answers 404 to the rest.
func TestCaptureThenServe(t *testing.T) {
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Request-ID", "abc")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", "application/json")
		switch {
		case r.Method == "GET" && r.URL.Path == "/api/users":
			h.Set("Link", `</api/users?after=b&limit=2>; rel="next"`)
			io.WriteString(w, `{"users":[1,2]}`)
		case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/api/users/"):
			h.Set("ETag", `"1.x"`)
			if r.Header.Get("If-None-Match") == `"1.x"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			io.WriteString(w, `{"user":{"id":"a"}}`)
		case r.Method == "PATCH":
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, `{"patched":`+string(b)+`}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer fake.Close()

	dir := t.TempDir()
	cases := []caseSpec{
		{Name: "get_one", Method: "GET", Route: "/api/users/{id}", Target: "/api/users/a"},
		{Name: "list", Method: "GET", Route: "/api/users", Target: "/api/users?limit=2"},
		{Name: "not_modified", Method: "GET", Route: "/api/users/{id}", Target: "/api/users/a", Conditional: true},
		{Name: "patch", Method: "PATCH", Route: "/api/users/{id}", Target: "/api/users/a", Body: `{"n":1}`, Headers: map[string]string{"Content-Type": "application/json"}},
	}
	raw, _ := json.Marshal(cases)
	casesFile, capFile := filepath.Join(dir, "cases.json"), filepath.Join(dir, "capture.json")
	if err := os.WriteFile(casesFile, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runCapture(fake.URL, casesFile, capFile); err != nil {
		t.Fatal(err)
	}
	routes, err := loadRoutes(capFile)
	if err != nil {
		t.Fatal(err)
	}
	ceiling := httptest.NewServer(&handler{routes: routes})
	defer ceiling.Close()
	if resp, body := fetch(t, ceiling.URL, "GET", "/healthz", "", ""); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("GET /healthz: %d %q", resp.StatusCode, body)
	}

	for _, tc := range []struct {
		method, path, inm, body string
		notACase                bool // the ceiling answers 404
	}{
		{"GET", "/api/users/zzz", "", "", false},
		{"GET", "/api/users?limit=2&after=q", "", "", false},
		{"GET", "/api/users/a", `"1.x"`, "", false},
		{"PATCH", "/api/users/q", "", `{"n":1}`, false},
		{"GET", "/api/users/a/b", "", "", true},
		{"DELETE", "/api/users/a", "", "", true},
	} {
		got, gotBody := fetch(t, ceiling.URL, tc.method, tc.path, tc.inm, tc.body)
		if tc.notACase {
			if got.StatusCode != 404 {
				t.Errorf("%s %s: ceiling answered %d, want 404", tc.method, tc.path, got.StatusCode)
			}
			continue
		}
		want, wantBody := fetch(t, fake.URL, tc.method, tc.path, tc.inm, tc.body)
		if got.StatusCode != want.StatusCode || gotBody != wantBody {
			t.Errorf("%s %s: ceiling answered %d %q, usersvc %d %q", tc.method, tc.path, got.StatusCode, gotBody, want.StatusCode, wantBody)
		}
		want.Header.Del("Date")
		got.Header.Del("Date")
		if g, w := headerString(got.Header), headerString(want.Header); g != w {
			t.Errorf("%s %s: ceiling headers\n%s\nusersvc's\n%s", tc.method, tc.path, g, w)
		}
	}
}

func fetch(t *testing.T, base, method, path, inm, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func headerString(h http.Header) string {
	var b strings.Builder
	h.Write(&b) //nolint:errcheck // a Builder does not fail
	return b.String()
}
