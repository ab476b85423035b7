// jsonio.go: the one place that decodes request bodies and the one that
// writes responses and errors, in the contract's JSON shapes.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// maxBodyBytes caps request bodies; a larger one is answered 413.
const maxBodyBytes = 1 << 20

// Body decoding errors.
var (
	errUnsupportedMedia = &Error{Code: codeUnsupported, Message: "Content-Type must be application/json"}
	errBodyTooLarge     = &Error{Code: codeTooLarge, Message: "body is larger than 1 MiB"}
	errEmptyBody        = &Error{Code: codeInvalid, Message: "body is empty: send a JSON object"}
	errNotObject        = &Error{Code: codeInvalid, Message: "body must be a JSON object"}
	errTrailingData     = &Error{Code: codeInvalid, Message: "body must hold a single JSON object, with nothing after it"}
)

// invalid is a 400 with message.
func invalid(format string, args ...any) error {
	return &Error{Code: codeInvalid, Message: fmt.Sprintf(format, args...)}
}

// maxBodyNames bounds the names of one body's object. A body here has a
// dozen at most, but every name costs a map entry and, unknown, an error:
// 100,000 names in 1 MiB cost 11 MiB and 0.3 s of CPU to tell apart, so
// 64 such bodies at once took 750 MB (review 18). Below the bound, a body
// of unknown names still gets its errors, capped at maxFieldErrors.
const maxBodyNames = 1000

// jsonObject is a request body's object: each name's value, and the
// names it gives more than once (encoding/json keeps the last value, where
// a proxy in front may act on the first: decodeFields refuses them).
type jsonObject struct {
	fields   map[string]json.RawMessage
	repeated map[string]bool
}

// decodeJSONObject reads the request body as exactly one JSON object of at
// most maxBodyBytes, in UTF-8, mapping every failure to a clear client
// error.
func decodeJSONObject(w http.ResponseWriter, r *http.Request) (jsonObject, error) {
	if err := checkBodyHeaders(w, r.Header); err != nil {
		return jsonObject{}, err
	}
	buf := getBuffer()
	defer putBuffer(buf)
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	body, err := readAllBody(r.Body, buf)
	if err != nil {
		return jsonObject{}, err
	}
	if !utf8.Valid(body) {
		return jsonObject{}, invalid("body is not valid UTF-8 (at byte %d): JSON is sent in UTF-8", invalidUTF8At(body))
	}
	names := countNames(body)
	if names > maxBodyNames && json.Valid(body) { // a malformed one is told where instead
		return jsonObject{}, invalid("body gives %d names: a body here has a handful, and one of more than %d is refused before it is decoded", names, maxBodyNames)
	}
	fields, err := parseObject(body)
	if err != nil {
		return jsonObject{}, err
	}
	if at := loneSurrogateAt(body); at >= 0 {
		return jsonObject{}, invalid("body holds %s at byte %d, half of a UTF-16 surrogate pair without the other: it is no character", body[at:at+6], at)
	}
	obj := jsonObject{fields: fields}
	if names != len(fields) { // a name given twice is one key of fields
		obj.repeated = repeatedNames(body)
	}
	return obj, nil
}

// checkBodyHeaders refuses (415) a body that is not JSON in UTF-8 as it
// stands: another media type, another charset, or any Content-Encoding
// (gzip would reach the parser as bytes, not be decompressed).
func checkBodyHeaders(w http.ResponseWriter, h http.Header) error {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return errUnsupportedMedia
	}
	if cs, ok := params["charset"]; ok && !isUTF8Charset(cs) {
		return &Error{Code: codeUnsupported, Message: fmt.Sprintf("charset %q is not supported: send the body in UTF-8", cs)}
	}
	for _, values := range h.Values("Content-Encoding") {
		for _, ce := range strings.Split(values, ",") {
			if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
				w.Header().Set("Accept-Encoding", "identity")
				return &Error{Code: codeUnsupported, Message: fmt.Sprintf("Content-Encoding %q is not supported: send the body without one", ce)}
			}
		}
	}
	return nil
}

// isUTF8Charset reports whether a body in charset cs is UTF-8 as it
// stands: UTF-8 (also as the common "utf8"), or US-ASCII, which is part
// of it.
func isUTF8Charset(cs string) bool {
	return strings.EqualFold(cs, "utf-8") || strings.EqualFold(cs, "utf8") || strings.EqualFold(cs, "us-ascii")
}

// readAllBody reads all of body into buf (which it may grow).
func readAllBody(body io.Reader, buf *[]byte) ([]byte, error) {
	in := bytes.NewBuffer((*buf)[:0])
	_, err := in.ReadFrom(body)
	*buf = in.Bytes()
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, errBodyTooLarge
	case err != nil:
		return nil, invalid("cannot read the body")
	}
	return *buf, nil
}

// parseObject decodes body, which must be one JSON object and nothing
// after it.
func parseObject(body []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return nil, bodyError(err)
	}
	if obj == nil {
		return nil, errNotObject
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return nil, errTrailingData
	}
	return obj, nil
}

// invalidUTF8At is the offset of the first byte of b that is not UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// loneSurrogateAt is the offset of the first \u escape in the JSON text b
// that names half of a UTF-16 surrogate pair without the other half (which
// encoding/json would decode as U+FFFD, so that two different passwords
// could match), or -1. b has been parsed: a backslash only appears in a
// string, and starts an escape.
func loneSurrogateAt(b []byte) int {
	for i := bytes.IndexByte(b, '\\'); i >= 0 && i+1 < len(b); {
		if b[i+1] != 'u' {
			i = nextBackslash(b, i+2)
			continue
		}
		unit := escapedUnit(b, i)
		switch {
		case unit >= 0xDC00 && unit <= 0xDFFF: // a low half first
			return i
		case unit >= 0xD800 && unit <= 0xDBFF:
			if low := escapedUnit(b, i+6); low < 0xDC00 || low > 0xDFFF {
				return i
			}
			i = nextBackslash(b, i+12)
		default:
			i = nextBackslash(b, i+6)
		}
	}
	return -1
}

// nextBackslash is the offset of the first backslash in b from from on,
// or -1.
func nextBackslash(b []byte, from int) int {
	if from >= len(b) {
		return -1
	}
	if j := bytes.IndexByte(b[from:], '\\'); j >= 0 {
		return from + j
	}
	return -1
}

// escapedUnit is the UTF-16 code unit of the \uXXXX escape at b[at:], or
// -1 when none is there.
func escapedUnit(b []byte, at int) int {
	if at+6 > len(b) || b[at] != '\\' || b[at+1] != 'u' {
		return -1
	}
	unit, err := strconv.ParseUint(string(b[at+2:at+6]), 16, 16)
	if err != nil {
		return -1
	}
	return int(unit)
}

// countNames counts the names the object in body gives, repeats included;
// on a malformed body (it may run before parsing) it only miscounts.
func countNames(body []byte) int {
	n := 0
	forEachName(body, func([]byte) { n++ })
	return n
}

// forEachName calls fn with each name the object in body gives, as written
// between its quotes. body has been parsed as one JSON object: a name is
// the string after its opening brace or after a comma between its members.
func forEachName(body []byte, fn func(quoted []byte)) {
	depth, nameNext, inObject := 0, false, false // inObject: the outermost value is an object
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '{':
			depth++
			nameNext = depth == 1
			inObject = inObject || depth == 1
		case '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			nameNext = depth == 1 && inObject
		case '"':
			end := stringEnd(body, i)
			if nameNext {
				fn(body[i+1 : end])
				nameNext = false
			}
			i = end
		}
	}
}

// stringEnd is the offset of the quote that closes the JSON string
// opening at body[open].
func stringEnd(body []byte, open int) int {
	for i := open + 1; i < len(body); i++ {
		switch body[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(body)
}

// repeatedNames are the names the object in body (parsed) gives more than
// once, escapes read ("\u0061" is "a").
func repeatedNames(body []byte) map[string]bool {
	seen, repeated := map[string]bool{}, map[string]bool{}
	forEachName(body, func(quoted []byte) {
		name := string(quoted)
		if bytes.IndexByte(quoted, '\\') >= 0 {
			json.Unmarshal(append(append([]byte{'"'}, quoted...), '"'), &name) //nolint:errcheck // parsed already
		}
		if seen[name] {
			repeated[name] = true
		}
		seen[name] = true
	})
	return repeated
}

// bodyError describes why a body did not decode.
func bodyError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("malformed JSON: the body ends too early")
	case errors.As(err, &syntax):
		return invalid("malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &typ):
		return errNotObject
	}
	return invalid("cannot read the body")
}

// jsonContentType is shared by every response: net/http never changes a
// header's value slice, and assigning it saves an allocation a request.
var jsonContentType = []string{"application/json"}

// resourceKey names one version of one resource, for its ETag.
type resourceKey struct {
	kind    string
	id      string
	version int64
}

// renderObject writes into buf prefix (`{"user":`), the object appendObj
// writes, "}" and the newline every body ends with, and returns the
// resource's ETag.
func renderObject(buf *[]byte, prefix string, key resourceKey, appendObj func([]byte) []byte) string {
	*buf = appendObjectBody((*buf)[:0], prefix, appendObj)
	return resourceETag(key.kind, key.id, key.version, *buf)
}

// appendObjectBody appends prefix, the object appendObj writes, "}" and
// the newline every body ends with.
func appendObjectBody(b []byte, prefix string, appendObj func([]byte) []byte) []byte {
	b = appendObj(append(b, prefix...))
	return append(b, '}', '\n')
}

// smallBody is the size up to which writeJSON leaves Content-Length to
// net/http: it holds a body that small whole until the handler returns
// (2,048 bytes before it would start chunking), then counts it and sends
// Content-Length itself, HEAD included. Not setting it spares two
// allocations and the ninth header of the response's map (a Go map of
// more than eight entries grows to a table), on every GET of one user.
const smallBody = 2000

// writeJSON writes body, already marshalled, with status. Every JSON body
// ends with a newline (a shell prompt then starts on its own line); the
// builders leave it to this one place.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	n := len(body)
	newline := n == 0 || body[n-1] != '\n'
	if newline {
		n++
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	if n > smallBody {
		h["Content-Length"] = []string{strconv.Itoa(n)}
	}
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client is gone; nothing to do
	if newline {
		w.Write(newlineBytes) //nolint:errcheck // as above
	}
}

var newlineBytes = []byte{'\n'}

// statusOf is the HTTP status of each domain error code: the one place
// where the domain's errors meet HTTP.
var statusOf = map[errorCode]int{
	codeInternal:     http.StatusInternalServerError,
	codeInvalid:      http.StatusBadRequest,
	codeUnauthorized: http.StatusUnauthorized,
	codeForbidden:    http.StatusForbidden,
	codeNotFound:     http.StatusNotFound,
	codeNotAllowed:   http.StatusMethodNotAllowed,
	codeConflict:     http.StatusConflict,
	codePrecondition: http.StatusPreconditionFailed,
	codeTooLarge:     http.StatusRequestEntityTooLarge,
	codeUnsupported:  http.StatusUnsupportedMediaType,
	codeTooMany:      http.StatusTooManyRequests,
	codeUnavailable:  http.StatusServiceUnavailable,
}

// errorBody is the status and JSON body that answer err: {"errors": …}
// for field problems (at most maxFieldErrors of them), {"error": …}
// otherwise, and "internal error" for anything that is not a domain error.
func errorBody(err error) (int, any) {
	var (
		de *Error
		fe fieldErrors
	)
	switch {
	case errors.As(err, &de) && len(de.Fields) > 0:
		return statusOf[de.Code], map[string]any{"errors": de.Fields.capped()}
	case errors.As(err, &de) && de.Code != codeInternal:
		return statusOf[de.Code], map[string]any{"error": de.Message}
	case errors.As(err, &fe):
		return http.StatusBadRequest, map[string]any{"errors": fe.capped()}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, map[string]any{"error": "request cancelled or timed out"}
	}
	return http.StatusInternalServerError, map[string]any{"error": "internal error"}
}

// writeError answers err in the contract's shape, with Retry-After when
// the error carries one. 5xx are logged with the cause (at error level;
// deliberate load shedding only at debug level, see server.fail); their
// body never carries it.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, body := errorBody(err)
	var de *Error
	if errors.As(err, &de) && de.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(de.RetryAfter)))
	}
	if status == http.StatusTooManyRequests {
		// A client over its limits gets no more of this connection.
		w.Header().Set("Connection", "close")
	}
	switch {
	case status >= 500 && de != nil && de.RetryAfter > 0:
		// Load shed on purpose (hashing saturated): not an error, and one
		// line each would flood the log in a flood of logins.
		log.DebugContext(r.Context(), "request refused", "method", r.Method, "route", routeLabel(r),
			"status", status, "request_id", requestID(r.Context()), "err", err)
	case status >= 500:
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "route", routeLabel(r),
			"status", status, "request_id", requestID(r.Context()), "err", err)
	}
	b, mErr := json.Marshal(body)
	if mErr != nil {
		b, status = []byte(`{"error":"internal error"}`), http.StatusInternalServerError
	}
	writeJSON(w, status, b)
}

// jsonRouteErrors answers the mux's own 404, 405 (keeping Allow) and
// path-cleaning redirects as JSON. It recognises them by the request having
// no pattern when the status is written, so routing happens once.
func jsonRouteErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(&routeErrorWriter{ResponseWriter: w, r: r}, r)
	})
}

// routeErrorWriter replaces the plain-text body of the mux's own answers.
type routeErrorWriter struct {
	http.ResponseWriter
	r        *http.Request
	replaced bool
}

func (w *routeErrorWriter) WriteHeader(status int) {
	var body []byte
	switch {
	case status == http.StatusMovedPermanently || status == http.StatusFound ||
		status == http.StatusTemporaryRedirect || status == http.StatusPermanentRedirect:
		// Only the mux redirects (to a cleaned path); no handler does.
		body, _ = json.Marshal(map[string]string{"error": "moved to " + w.Header().Get("Location")})
	case w.r.Pattern != "":
		w.ResponseWriter.WriteHeader(status)
		return
	case status == http.StatusMethodNotAllowed:
		body = []byte(`{"error":"method not allowed"}`)
	case status == http.StatusNotFound:
		body = []byte(`{"error":"not found"}`)
	case status == http.StatusBadRequest: // the mux's answer to a request for "*" (OPTIONS *)
		body = []byte(`{"error":"a request for * is not served: name a path"}`)
	default:
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.replaced = true
	writeJSON(w.ResponseWriter, status, body)
}

func (w *routeErrorWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *routeErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bufferPool recycles response buffers so a hot list page does not allocate
// its body every time.
var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// getBuffer takes an empty buffer from the pool.
func getBuffer() *[]byte { b := bufferPool.Get().(*[]byte); *b = (*b)[:0]; return b }

// putBuffer gives b back, unless a huge page grew it past 1 MiB: the pool
// would keep that memory alive for small answers.
func putBuffer(b *[]byte) {
	if cap(*b) <= 1<<20 {
		bufferPool.Put(b)
	}
}

// appendNullString writes s as a JSON string, or null when s is nil.
func appendNullString(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendString(b, *s)
}

const hexDigits = "0123456789abcdef"

// plainJSON marks the bytes a JSON string holds as they are: printable
// ASCII but for '"' and '\\'. Anything else takes appendString's slow path.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// stringBytes is how many bytes appendString writes for s, counted the
// way it escapes.
func stringBytes(s string) int {
	n := 2 + len(s)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case plainJSON[c]:
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n++ // a backslash before it, or before its letter
			default:
				n += 5 // \u0001
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 5 // one byte as \ufffd
		case r == '\u2028' || r == '\u2029':
			n += 3 // three bytes as \u2028
		}
		i += size
	}
	return n
}

// nullStringBytes is stringBytes for a string that may be null.
func nullStringBytes(s *string) int {
	if s == nil {
		return len("null")
	}
	return stringBytes(*s)
}

// appendString writes s as a JSON string, escaping what RFC 8259 requires
// plus U+2028 and U+2029 (so the output is also safe inside JavaScript).
// Invalid UTF-8 becomes U+FFFD, as encoding/json does. Most strings (ids,
// timestamps, usernames) are plain ASCII: they are checked eight bytes at
// a time (plainWord), the rest against a table, and copied whole.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i+8 <= len(s) && plainWord(s[i:i+8]) {
		i += 8
	}
	for i < len(s) && plainJSON[s[i]] {
		i++
	}
	if i == len(s) {
		b = append(b, s...)
		return append(b, '"')
	}
	return appendEscaped(b, s, i)
}

// plainWord reports whether every byte of the 8 in s is plainJSON, eight
// at a time (the classic bit tricks: a byte below 0x20, a byte with its
// high bit set, a byte equal to '"' or '\\'). A byte at a time against the
// table was most of appendString's cost, and moved by 50% with where the
// linker put the loop.
func plainWord(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	w := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(s), 8))
	q, bs := w^('"'*ones), w^('\\'*ones)
	below20 := (w - 0x20*ones) &^ w
	return (below20|w|(q-ones)&^q|(bs-ones)&^bs)&highs == 0
}

// appendEscaped writes s from the first byte that is not plain (at i) on,
// escaping as appendString says, and the closing quote.
func appendEscaped(b []byte, s string, i int) []byte {
	start := 0
	for i < len(s) {
		c := s[i]
		if plainJSON[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			start = i + size
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
