// middleware.go: what wraps every request: request ids, security headers,
// the bearer token, per-client limits, and the client address they use.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ctxKey keys the values middleware puts in a request's context.
type ctxKey int

const requestIDKey ctxKey = iota

// requestID returns the id of the request ctx belongs to, or "".
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// saneRequestID reports whether a client's X-Request-ID may be reused: 1 to
// 128 characters of A-Z a-z 0-9 - _ . (nothing that could forge a log line).
func saneRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// newRequestID returns 16 random bytes in hex.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// withRequestID sets X-Request-ID on the response (the client's when sane)
// and puts it in the request's context for log lines.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if !saneRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-ID", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

// withSecurityHeaders sets headers that keep a browser from doing anything
// clever with API responses, and Cache-Control: no-cache on the API so
// clients revalidate (authenticate overrides it with no-store).
func withSecurityHeaders(next http.Handler) http.Handler {
	// The value slices are shared by every response; net/http never
	// changes them, and a handler that needs another value replaces it.
	var (
		nosniff = []string{"nosniff"}
		deny    = []string{"DENY"}
		noRef   = []string{"no-referrer"}
		csp     = []string{"default-src 'none'; frame-ancestors 'none'"}
		noCache = []string{"no-cache"}
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"] = nosniff
		h["X-Frame-Options"] = deny
		h["Referrer-Policy"] = noRef
		h["Content-Security-Policy"] = csp
		if strings.HasPrefix(r.URL.Path, "/api/") {
			h["Cache-Control"] = noCache
		}
		next.ServeHTTP(w, r)
	})
}

var errUnauthorized = &statusError{status: 401, msg: "missing or wrong bearer token"}

// withBearerToken requires Authorization: Bearer <token> on /api/ (and on
// /metrics unless metricsPublic). An empty token turns the check off.
func withBearerToken(token string, metricsPublic bool, log *slog.Logger, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		guarded := strings.HasPrefix(r.URL.Path, "/api/") || (r.URL.Path == "/metrics" && !metricsPublic)
		if guarded && !bearerMatches(r.Header.Get("Authorization"), want) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="usersvc"`)
			writeError(w, r, log, errUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerMatches compares the header's token with want in constant time
// (hashing first, so the length does not leak either).
func bearerMatches(header string, want [32]byte) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

var errTooMany = &statusError{status: 429, msg: "too many requests: slow down and retry later"}

// withClientLimits refuses a client over its rate limit or 404 cap with 429
// and Retry-After, and counts the 404s it is answered.
func withClientLimits(limits *clientLimits, trustProxy bool, log *slog.Logger, next http.Handler) http.Handler {
	if !limits.enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddr(r, trustProxy)
		if ok, wait := limits.allow(addr); !ok {
			tooManyRequests(w, r, log, wait, errTooMany)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status == http.StatusNotFound {
			limits.record404(addr)
		}
	})
}

// tooManyRequests answers 429 with Retry-After.
func tooManyRequests(w http.ResponseWriter, r *http.Request, log *slog.Logger, wait time.Duration, err error) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(wait)))
	writeError(w, r, log, err)
}

// clientAddr is the address limits are counted against: the connection's
// peer, or with trustProxy the right-most X-Forwarded-For entry that is not
// a loopback or private address (those are taken to be our own proxies).
func clientAddr(r *http.Request, trustProxy bool) string {
	peer := r.RemoteAddr
	if host, _, err := net.SplitHostPort(peer); err == nil {
		peer = host
	}
	if !trustProxy {
		return peer
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		for _, part := range strings.Split(h, ",") {
			if part = strings.TrimSpace(part); part != "" {
				hops = append(hops, part)
			}
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		ip, err := netip.ParseAddr(hops[i])
		if err != nil {
			return peer // a malformed entry: do not trust anything left of it
		}
		if !ip.IsLoopback() && !ip.IsPrivate() {
			return ip.Unmap().String()
		}
		if i == 0 {
			return ip.Unmap().String()
		}
	}
	return peer
}

// statusWriter records the status a handler wrote and the bytes of its body.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
