// admin_test.go: the admin page as served (its headers, the flag that
// turns it off). The page itself is tested in a browser in browser_test.go.
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAdminPageIsServedWithItsOwnPolicy(t *testing.T) {
	ts := newTestServer(t)
	for _, path := range []string{"/admin/", "/admin/app.js", "/admin/app.css"} {
		req := ts.do(t, "GET", path, "")
		if req.status != 200 {
			t.Fatalf("GET %s: %d", path, req.status)
		}
		csp := req.header.Get("Content-Security-Policy")
		for _, want := range []string{"script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Fatalf("%s: CSP %q lacks %s", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || req.header.Get("X-Frame-Options") != "DENY" || req.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: headers %v", path, req.header)
		}
	}
	page := ts.do(t, "GET", "/admin/", "")
	if !strings.Contains(string(page.body), `<script type="module" src="app.js">`) || strings.Contains(string(page.body), "<script>") {
		t.Fatalf("the page loads no script of its own, or an inline one:\n%s", page.body)
	}
	tag := page.header.Get("ETag")
	if r := ts.do(t, "GET", "/admin/", "", "If-None-Match", tag); tag == "" || r.status != 304 {
		t.Fatalf("/admin/ with If-None-Match %q: %d, want 304", tag, r.status)
	}
	expect(t, "a file the page does not have", ts.do(t, "GET", "/admin/nope.js", ""), 404)
	// However the path is escaped, the page is the page.
	if r := ts.do(t, "GET", "/%61dmin/", ""); r.status != 200 || !bytes.Equal(r.body, page.body) {
		t.Fatalf("GET /%%61dmin/: %d %s", r.status, r.header.Get("Content-Type"))
	}
	// A Range gets the whole file, never net/http's plain-text 416.
	css := ts.do(t, "GET", "/admin/app.css", "")
	for _, rng := range []string{"bytes=999999-", "bytes=0-3", "nonsense"} {
		r := ts.do(t, "GET", "/admin/app.css", "", "Range", rng)
		if r.status != 200 || !bytes.Equal(r.body, css.body) || r.header.Get("Accept-Ranges") != "none" {
			t.Fatalf("GET /admin/app.css with Range: %s: %d, %d bytes, Accept-Ranges %q; want 200, the whole %d, none",
				rng, r.status, len(r.body), r.header.Get("Accept-Ranges"), len(css.body))
		}
	}
	cfg := testConfig()
	cfg.admin = false
	off := newTestServerWith(t, cfg)
	expect(t, "GET /admin/ with -admin=false", off.do(t, "GET", "/admin/", ""), 404)
}

var updateAdmin = flag.Bool("update-admin", false, "rewrite adminz/ from admin/")

// TestTheBuiltInAdminPageIsTheAdminFolder: the binary serves admin/ as
// it is, from adminz/ (the same files gzipped).
func TestTheBuiltInAdminPageIsTheAdminFolder(t *testing.T) {
	entries, err := os.ReadDir("admin")
	if err != nil {
		t.Fatal(err)
	}
	if *updateAdmin {
		old, _ := filepath.Glob("adminz/*.gz")
		for _, f := range old {
			os.Remove(f)
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join("admin", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			var gz bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
			zw.Write(b) //nolint:errcheck // into memory
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("adminz", e.Name()+".gz"), gz.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	const fix = "run go test -run TestTheBuiltInAdminPageIsTheAdminFolder -update-admin ."
	if len(adminFiles) != len(entries) {
		t.Fatalf("the binary holds %d files of the admin page, admin/ %d: %s", len(adminFiles), len(entries), fix)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("admin", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := adminFiles[e.Name()]; !ok || !bytes.Equal(f, b) {
			t.Fatalf("the built-in admin/%s is not the file: %s", e.Name(), fix)
		}
	}
}
