// conditional.go: ETags and conditional requests (RFC 9110): If-None-Match
// answers 304, If-Match guards writes against lost updates.
package main

import (
	"hash/maphash"
	"net/http"
	"strconv"
	"strings"
)

var errPreconditionFailed = &statusError{status: 412, msg: "the resource changed since you read it (If-Match does not match its ETag): read it again"}

// resourceETag is the strong ETag of one user or goal: its row version, then
// a hash of this representation (which also covers embedded relations and
// the fields shown). If-Match compares only the version part, so an ETag
// read with any ?show= guards a write of that resource.
func resourceETag(version int64, body []byte) string {
	return `"` + strconv.FormatInt(version, 10) + "." + bodyHash(body) + `"`
}

// listETag is the strong ETag of a list page: a hash of the page as sent,
// so it changes when any row on the page, or anything embedded, changes.
func listETag(body []byte) string {
	return `"` + bodyHash(body) + `"`
}

// etagSeed keys bodyHash. It is chosen at start, so ETags change across
// restarts: a client then revalidates once more, and nothing is stale.
var etagSeed = maphash.MakeSeed()

// bodyHash is a fast 64-bit hash of a body in hex: validators need to
// change with the content, not to resist an attacker, and a page of 100
// users is hashed on every request.
func bodyHash(body []byte) string {
	return strconv.FormatUint(maphash.Bytes(etagSeed, body), 16)
}

// entityTags splits an If-Match or If-None-Match value into its tags.
func entityTags(r *http.Request, header string) []string {
	var tags []string
	for _, v := range r.Header.Values(header) {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	return tags
}

// noneMatch reports whether If-None-Match names etag (weak comparison, as
// RFC 9110 asks for this header) or is "*".
func noneMatch(r *http.Request, etag string) bool {
	for _, t := range entityTags(r, "If-None-Match") {
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// ifMatchCheck turns If-Match into a check the store runs on the current
// row version inside the write transaction, so checking and writing are one
// step. It is nil when the request has no If-Match (or "*": the store
// already answers 404 for a missing resource).
func ifMatchCheck(r *http.Request) precondition {
	tags := entityTags(r, "If-Match")
	if len(tags) == 0 {
		return nil
	}
	for _, t := range tags {
		if t == "*" {
			return nil
		}
	}
	return func(version int64) error {
		want := strconv.FormatInt(version, 10)
		for _, t := range tags {
			// Weak tags never match If-Match (strong comparison).
			if !strings.HasPrefix(t, `"`) || !strings.HasSuffix(t, `"`) || len(t) < 2 {
				continue
			}
			v, _, _ := strings.Cut(t[1:len(t)-1], ".")
			if v == want {
				return nil
			}
		}
		return errPreconditionFailed
	}
}

// writeCacheable writes body with its ETag; a GET or HEAD whose
// If-None-Match names it gets 304 with the ETag and no body.
func writeCacheable(w http.ResponseWriter, r *http.Request, status int, body []byte, etag string) {
	w.Header().Set("ETag", etag)
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && noneMatch(r, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, status, body)
}
