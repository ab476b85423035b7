// admin.go: the admin page, plain HTML, CSS and JavaScript from admin/,
// embedded in the binary and served at /admin/. It is a client of the same
// API (with the same token), so it adds no power the API does not have.
package main

import (
	"bytes"
	"embed"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// adminZipped is the page as built in: admin/ is the source, adminz/ the
// same files gzipped (a test, TestTheBuiltInAdminPageIsTheAdminFolder,
// keeps them equal; go test -run TestTheBuiltInAdminPageIsTheAdminFolder
// -update-admin . rewrites them). Gzipped, the page takes 39 KB less of
// the binary, which .ci/run holds under 20 MiB.
//
//go:embed adminz
var adminZipped embed.FS

// adminFiles is the page's files by name, unzipped once at start.
var adminFiles = unzipFolder(adminZipped, "adminz")

// unzipFolder is the files of the embedded folder dir, each X.gz
// unzipped as X.
func unzipFolder(files embed.FS, dir string) map[string][]byte {
	tree := map[string][]byte{}
	entries, err := files.ReadDir(dir)
	if err != nil {
		panic(err) // the folder is embedded: it is always there
	}
	for _, e := range entries {
		b, err := files.ReadFile(dir + "/" + e.Name())
		if err != nil {
			panic(err)
		}
		tree[strings.TrimSuffix(e.Name(), ".gz")] = gunzip(b, "the built-in admin page")
	}
	return tree
}

// adminCSP lets the page load its own script and style and talk to its
// own origin, and nothing else: no inline script, no eval, no framing.
const adminCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// adminHandler serves the admin page's files under /admin/ (/admin/ is
// index.html) with the page's Content-Security-Policy (in place of the
// API's, which allows nothing). The files are revalidated on every load
// (no-cache) against an ETag of their content, so a new binary's page is
// never mixed with an old one's script, and an unchanged page costs a 304.
// A path that names no file is the API's JSON 404, whatever its escaping
// (the name is the unescaped path).
func adminHandler(log *slog.Logger) http.Handler {
	etags := map[string]string{}
	for name, b := range adminFiles {
		etags[name] = `"` + hex16(xxhash.Sum64(b)) + `"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/admin/")
		if name == "" {
			name = "index.html"
		}
		etag, ok := etags[name]
		if !ok {
			writeError(w, r, log, errRouteNotFound)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", adminCSP)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		// ServeContent answers conditional requests and HEAD, and sets the
		// type by the name's extension.
		http.ServeContent(noRanges{w}, withoutRange(r), name, time.Time{}, bytes.NewReader(adminFiles[name]))
	})
}

// withoutRange is r without its Range header: the files are small, and a
// range that cannot be served would be a plain-text 416, where every body
// usersvc writes is JSON.
func withoutRange(r *http.Request) *http.Request {
	if _, ok := r.Header["Range"]; !ok {
		return r
	}
	f := *r
	f.Header = r.Header.Clone()
	f.Header.Del("Range")
	return &f
}

// noRanges answers "Accept-Ranges: none" where ServeContent would say
// "bytes": the Range header is dropped (withoutRange).
type noRanges struct{ http.ResponseWriter }

func (w noRanges) WriteHeader(code int) {
	w.Header().Set("Accept-Ranges", "none")
	w.ResponseWriter.WriteHeader(code)
}
