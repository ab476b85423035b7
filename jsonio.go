// jsonio.go: the one place that decodes request bodies and the one that
// writes responses and errors, in the contract's JSON shapes.
package main

import (
	"context"
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
)

// maxBodyBytes caps request bodies; a larger one is answered 413.
const maxBodyBytes = 1 << 20

// Body decoding errors, each with the status it is answered with.
var (
	errRouteNotFound    = &statusError{status: 404, msg: "not found"}
	errUnsupportedMedia = &statusError{status: 415, msg: "Content-Type must be application/json"}
	errBodyTooLarge     = &statusError{status: 413, msg: "body is larger than 1 MiB"}
	errEmptyBody        = &statusError{status: 400, msg: "body is empty: send a JSON object"}
	errNotObject        = &statusError{status: 400, msg: "body must be a JSON object"}
	errTrailingData     = &statusError{status: 400, msg: "body must hold a single JSON object, with nothing after it"}
)

// decodeJSONObject reads the request body as exactly one JSON object of at
// most maxBodyBytes, mapping every failure to a clear client error.
func decodeJSONObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, errUnsupportedMedia
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(r.Body)
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return nil, bodyError(err)
	}
	if obj == nil {
		return nil, errNotObject
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, errBodyTooLarge
		}
		return nil, errTrailingData
	}
	return obj, nil
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
		return &statusError{status: 400, msg: "malformed JSON: the body ends too early"}
	case errors.As(err, &syntax):
		return &statusError{status: 400, msg: fmt.Sprintf("malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))}
	case errors.As(err, &typ):
		return errNotObject
	}
	return &statusError{status: 400, msg: "cannot read the body"}
}

// jsonContentType is shared by every response: net/http never changes a
// header's value slice, and assigning it saves an allocation a request.
var jsonContentType = []string{"application/json"}

// writeObject writes prefix (`{"user":`), the object appendObj writes, and
// "}", with status and the resource's ETag.
func writeObject(w http.ResponseWriter, r *http.Request, status int, prefix string, version int64, appendObj func([]byte) []byte) {
	buf := getBuffer()
	defer putBuffer(buf)
	b := appendObj(append(*buf, prefix...))
	b = append(b, '}')
	*buf = b
	writeCacheable(w, r, status, b, resourceETag(version, b))
}

// writeArray writes a bare JSON array of n items, each written by
// appendItem, with the page's ETag.
func writeArray(w http.ResponseWriter, r *http.Request, n int, appendItem func(b []byte, i int) []byte) {
	buf := getBuffer()
	defer putBuffer(buf)
	b := append(*buf, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendItem(b, i)
	}
	b = append(b, ']')
	*buf = b
	writeCacheable(w, r, http.StatusOK, b, listETag(b))
}

// writeJSON writes body, already marshalled, with status.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client is gone; nothing to do
}

// writeError answers err in the contract's shape. Only 5xx are logged at
// error level, with the cause; their body never carries it.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var (
		fe fieldErrors
		ce *conflictError
		se *statusError
	)
	status, body := http.StatusInternalServerError, map[string]any{"error": "internal error"}
	switch {
	case errors.As(err, &fe):
		status, body = http.StatusBadRequest, map[string]any{"errors": fe}
	case errors.As(err, &ce):
		taken := fieldErrors{}
		for _, f := range ce.fields {
			taken[f] = "is already taken"
		}
		status, body = http.StatusConflict, map[string]any{"errors": taken}
	case errors.As(err, &se):
		status, body = se.status, map[string]any{"error": se.msg}
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		status, body = http.StatusServiceUnavailable, map[string]any{"error": "request cancelled or timed out"}
	}
	if status >= 500 {
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

func getBuffer() *[]byte { b := bufferPool.Get().(*[]byte); *b = (*b)[:0]; return b }

func putBuffer(b *[]byte) {
	if cap(*b) <= 1<<20 {
		bufferPool.Put(b)
	}
}
