// admin.go: the admin page, plain HTML, CSS and JavaScript from admin/,
// embedded in the binary and served at /admin/. It is a client of the same
// API (with the same token), so it adds no power the API does not have.
package main

import (
	"embed"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/cespare/xxhash/v2"
)

//go:embed admin
var adminFiles embed.FS

// adminCSP lets the page load its own script and style and talk to its
// own origin, and nothing else: no inline script, no eval, no framing.
const adminCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// adminHandler serves the embedded admin/ folder under /admin/ with the
// page's Content-Security-Policy (in place of the API's, which allows
// nothing). The files are revalidated on every load (no-cache) against an
// ETag of their content, so a new binary's page is never mixed with an old
// one's script, and an unchanged page costs a 304. A path that names no
// file is the API's JSON 404.
func adminHandler(log *slog.Logger) http.Handler {
	sub, err := fs.Sub(adminFiles, "admin")
	if err != nil {
		panic(err) // the folder is embedded: it is always there
	}
	etags := adminETags(sub)
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel := strings.TrimPrefix(r.URL.Path, "/admin/")
		name := rel
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
		files.ServeHTTP(noRanges{w}, fileRequest(r, rel))
	})
}

// fileRequest is r as the file server is to see it: the path of the file
// within the page's folder, rel, however the client escaped it
// (http.StripPrefix compares the escaped path, and answered /%61dmin/ with
// a plain-text 404), and no Range header (the files are small, and the
// file server would answer a range it cannot serve with a plain-text 416,
// where every body usersvc writes is JSON).
func fileRequest(r *http.Request, rel string) *http.Request {
	f := *r
	u := *r.URL
	u.Path, u.RawPath = "/"+rel, ""
	f.URL = &u
	if _, ok := r.Header["Range"]; ok {
		f.Header = r.Header.Clone()
		f.Header.Del("Range")
	}
	return &f
}

// noRanges answers "Accept-Ranges: none" where the file server would say
// "bytes": the Range header is dropped (wholeFile).
type noRanges struct{ http.ResponseWriter }

func (w noRanges) WriteHeader(code int) {
	w.Header().Set("Accept-Ranges", "none")
	w.ResponseWriter.WriteHeader(code)
}

// adminETags is the ETag of each file of the page: a hash of its bytes.
func adminETags(files fs.FS) map[string]string {
	etags := map[string]string{}
	fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error { //nolint:errcheck // an embedded tree
		if err == nil && !d.IsDir() {
			if b, err := fs.ReadFile(files, path); err == nil {
				etags[path] = `"` + hex16(xxhash.Sum64(b)) + `"`
			}
		}
		return nil
	})
	return etags
}
