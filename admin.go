// admin.go: the admin page, plain HTML, CSS and JavaScript from admin/,
// embedded in the binary and served at /admin/. It is a client of the same
// API (with the same token), so it adds no power the API does not have.
package main

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed admin
var adminFiles embed.FS

// adminCSP lets the page load its own script and style and talk to its
// own origin, and nothing else: no inline script, no eval, no framing.
const adminCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// adminHandler serves the embedded admin/ folder under /admin/ with the
// page's Content-Security-Policy (in place of the API's, which allows
// nothing). The files are revalidated on every load (no-cache), with the
// ETag of their content, so a new binary's page is never mixed with an
// old one's script.
func adminHandler() http.Handler {
	sub, err := fs.Sub(adminFiles, "admin")
	if err != nil {
		panic(err) // the folder is embedded: it is always there
	}
	files := http.StripPrefix("/admin/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", adminCSP)
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
