// conditional.go: ETags and conditional requests (RFC 9110): If-None-Match
// answers 304, If-Match (and If-None-Match on writes) guards writes against
// lost updates.
package main

import (
	"iter"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// An ETag is a fixed hash (xxhash64), never a per-process seed, so every
// instance and every restart gives the same tag for the same answer, and
// If-None-Match and If-Match work whichever instance a client reaches.
// Validators must change with the content, not resist an attacker; a page
// of 100 users is hashed on every request, so the hash must be fast.

// resourceTag names one version of one resource: a hash of its kind, id
// and row version. It starts every ETag of that resource, whatever ?show=
// asked for, and is what If-Match compares.
func resourceTag(kind, id string, version int64) string {
	return hex16(resourceHash(kind, id, version))
}

// resourceHash is the hash resourceTag shows.
func resourceHash(kind, id string, version int64) uint64 {
	var b [64]byte
	buf := append(b[:0], kind...)
	buf = append(buf, 0)
	buf = append(buf, id...)
	buf = append(buf, 0)
	buf = strconv.AppendInt(buf, version, 10)
	return xxhash.Sum64(buf)
}

// resourceETag is the strong ETag of one representation of a resource:
// its resourceTag, then a hash of the body (which covers the fields shown
// and embedded relations). It is made in one allocation: every GET makes
// one, cache hits and 304s included.
func resourceETag(kind, id string, version int64, body []byte) string {
	return resourceETagOf(kind, id, version, xxhash.Sum64(body))
}

// resourceETagOf is resourceETag of a body whose hash is known.
func resourceETagOf(kind, id string, version int64, bodyHash uint64) string {
	var tag [1 + 16 + 1 + 16 + 1]byte // "resourceTag-bodyhash"
	tag[0], tag[17], tag[34] = '"', '-', '"'
	putHex16(tag[1:], resourceHash(kind, id, version))
	putHex16(tag[18:], bodyHash)
	return string(tag[:])
}

// listETag is the strong ETag of a list page: a hash of the page as sent
// and of its Link header, so it changes when any row on the page, anything
// embedded, or whether and where a next page starts changes.
func listETag(body []byte, link string) string {
	d := xxhash.New()
	d.Write(body)       //nolint:errcheck // a hash never fails
	d.Write([]byte{0})  //nolint:errcheck
	d.WriteString(link) //nolint:errcheck
	return `"` + hex16(d.Sum64()) + `"`
}

// hex16 is v as 16 lowercase hex digits.
func hex16(v uint64) string {
	var b [16]byte
	putHex16(b[:], v)
	return string(b[:])
}

// putHex16 writes v into dst[:16] as 16 lowercase hex digits.
func putHex16(dst []byte, v uint64) {
	for i := 15; i >= 0; i-- {
		dst[i] = hexDigits[v&0xf]
		v >>= 4
	}
}

// entityTags yields the tags of an If-Match or If-None-Match header, in
// order. It allocates nothing: every GET with If-None-Match reads them.
func entityTags(r *http.Request, header string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range r.Header[header] { // header is canonical: If-Match or If-None-Match
			for t := range strings.SplitSeq(v, ",") {
				if t = strings.TrimSpace(t); t != "" && !yield(t) {
					return
				}
			}
		}
	}
}

// noneMatch reports whether If-None-Match names etag (weak comparison, as
// RFC 9110 asks for this header) or is "*".
func noneMatch(r *http.Request, etag string) bool {
	for t := range entityTags(r, "If-None-Match") {
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// precondition is what a write's If-Match and If-None-Match ask of the
// resource; the store checks it on the current row inside the write
// transaction, so checking and writing are one step. A nil precondition
// asks nothing.
type precondition struct {
	kind        string
	ifMatch     []string // tags sent in If-Match; nil when none
	ifNoneMatch []string // tags sent in If-None-Match; nil when none
}

// writePrecondition reads a write's conditional headers for a resource of
// kind ("user" or "goal"); nil when it sent none. An If-Match sent with no
// tag in it (`If-Match: ,`) names nothing, so nothing matches it: a 412, as
// on a read, not a write with no condition.
func writePrecondition(r *http.Request, kind string) *precondition {
	p := &precondition{kind: kind, ifMatch: slices.Collect(entityTags(r, "If-Match")), ifNoneMatch: slices.Collect(entityTags(r, "If-None-Match"))}
	if p.ifMatch == nil && len(r.Header["If-Match"]) > 0 {
		p.ifMatch = []string{}
	}
	if p.ifMatch == nil && p.ifNoneMatch == nil {
		return nil
	}
	return p
}

// check accepts the resource id at version when If-Match names one of its
// ETags (with any ?show=) or is "*", and If-None-Match names none of them
// and is not "*"; otherwise the answer is 412.
func (p *precondition) check(id string, version int64) error {
	if p == nil {
		return nil
	}
	prefix := `"` + resourceTag(p.kind, id, version) + "-"
	if p.ifMatch != nil && !anyTagMatches(p.ifMatch, prefix, false) {
		return errPreconditionFailed
	}
	if anyTagMatches(p.ifNoneMatch, prefix, true) {
		if slices.Contains(p.ifNoneMatch, "*") {
			return errAlreadyExists
		}
		return errNoneMatched
	}
	return nil
}

// allowsCreate is nil when the resource may be created: If-Match (even
// "*") names a current representation, which a resource about to be
// created does not have.
func (p *precondition) allowsCreate() error {
	if p != nil && p.ifMatch != nil {
		return errNothingToMatch
	}
	return nil
}

// anyTagMatches reports whether a tag is "*" or an ETag the server could
// have sent for the resource version prefix names (isETagOf). weak allows
// W/ tags (If-None-Match compares weakly; If-Match strongly, so a weak tag
// never matches there).
func anyTagMatches(tags []string, prefix string, weak bool) bool {
	for _, t := range tags {
		if weak {
			t = strings.TrimPrefix(t, "W/")
		}
		if t == "*" || isETagOf(t, prefix) {
			return true
		}
	}
	return false
}

// isETagOf reports whether tag is prefix, then a body hash of 16 lowercase
// hex digits and the closing quote: an ETag resourceETag could have made.
func isETagOf(tag, prefix string) bool {
	rest, ok := strings.CutPrefix(tag, prefix)
	return ok && len(rest) == 16+len(`"`) && rest[16] == '"' && isLowerHex(rest[:16])
}

// isLowerHex reports whether s is all lowercase hex digits.
func isLowerHex(s string) bool {
	for i := range len(s) {
		if lowerHex[s[i]] == 0xff {
			return false
		}
	}
	return true
}

// writeCacheable writes body with its ETag. A GET or HEAD whose If-Match
// names neither it nor "*" gets 412 (RFC 9110 13.1.1: the method must not
// be performed), and then one whose If-None-Match names it gets 304 with
// the ETag and no body.
func writeCacheable(w http.ResponseWriter, r *http.Request, status int, body []byte, etag string) {
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if read && !ifMatchHolds(r, etag) {
		writeError(w, r, nil, errReadChanged) // a 412: never logged, so no logger
		return
	}
	w.Header()["Etag"] = []string{etag} // the canonical form of ETag, set without canonicalizing
	if read && noneMatch(r, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, status, body)
}

// ifMatchHolds reports whether a read's If-Match, if it sent one, names
// etag (compared strongly: a weak tag never matches) or is "*".
func ifMatchHolds(r *http.Request, etag string) bool {
	if len(r.Header["If-Match"]) == 0 {
		return true
	}
	for t := range entityTags(r, "If-Match") {
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
