// middleware.go: what wraps every request: request ids, security headers,
// the client address (and which proxies may name it), the Host check, the
// refusal of other sites' pages, the query string check, the bearer token
// and the per-client limits.
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
	"net/url"
	"strings"
	"sync/atomic"
)

// ctxKey keys what middleware puts in a request's context.
type ctxKey int

const requestInfoKey ctxKey = iota

// requestInfo is what the middleware learns of a request before it is
// handled: its id and its client. It is one value in the context, so a
// request is copied once to carry it.
type requestInfo struct {
	id     string
	client client
}

// infoOf returns what the middleware learnt of the request ctx belongs to.
func infoOf(ctx context.Context) requestInfo {
	info, _ := ctx.Value(requestInfoKey).(requestInfo)
	return info
}

// requestID returns the id of the request ctx belongs to, or "".
func requestID(ctx context.Context) string { return infoOf(ctx).id }

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

// Request ids are 8 random bytes chosen at start, then a counter, in hex.
// They are unique, which is all an id needs to be (they are not secrets),
// and cost no call to the system's random source.
var (
	requestIDPrefix = func() (p [16]byte) {
		var b [8]byte
		rand.Read(b[:]) //nolint:errcheck // crypto/rand.Read never fails
		hex.Encode(p[:], b[:])
		return p
	}()
	requestIDCount atomic.Uint64
)

// newRequestID returns a new request id: 32 hex digits.
func newRequestID() string {
	var b [32]byte
	copy(b[:16], requestIDPrefix[:])
	putHex16(b[16:], requestIDCount.Add(1))
	return string(b[:])
}

// withRequestInfo works out the request's id (the client's X-Request-ID
// when sane, else a new one, set on the response) and its client (see
// clientAddr), once, for the limits and the log lines.
func withRequestInfo(trusted trustedProxies, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var id string
		if vs := r.Header["X-Request-Id"]; len(vs) > 0 { // the canonical key, read without canonicalizing it again
			id = vs[0]
		}
		if !saneRequestID(id) {
			id = newRequestID()
		}
		w.Header()["X-Request-Id"] = []string{id}
		ip := clientAddr(r, trusted)
		addr := ip.String()
		key := addr // an IPv4 client is its own key
		if ip.Is6() {
			key = limitKey(ip)
		}
		info := requestInfo{id: id, client: client{addr: addr, key: key}}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestInfoKey, info)))
	})
}

// withSecurityHeaders sets headers that keep a browser from doing anything
// clever with API responses, and Cache-Control: no-cache on every response
// so clients and caches revalidate (authenticate overrides it with
// no-store). It closes the connection after a request whose body came
// chunked: one that also had a Content-Length must close it (RFC 9112
// 6.1: a proxy in front may have framed it by the length, and then what
// follows on the connection is another client's, or smuggled), but
// net/http (Go 1.26) keeps it open and drops the Content-Length, so every
// chunked request closes; a client that sends one reconnects.
func withSecurityHeaders(next http.Handler) http.Handler {
	// The value slices are shared by every response; net/http never
	// changes them, and a handler that needs another value replaces it.
	var (
		nosniff = []string{"nosniff"}
		deny    = []string{"DENY"}
		noRef   = []string{"no-referrer"}
		csp     = []string{"default-src 'none'; frame-ancestors 'none'"}
		noCache = []string{"no-cache"}
		close   = []string{"close"}
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"] = nosniff
		h["X-Frame-Options"] = deny
		h["Referrer-Policy"] = noRef
		h["Content-Security-Policy"] = csp
		h["Cache-Control"] = noCache
		if r.TransferEncoding != nil {
			h["Connection"] = close
		}
		next.ServeHTTP(w, r)
	})
}

// ---- the client ----

// client is who sent a request: its address as logged, and the key its
// limits are counted under (an IPv6 client is its /64: one host usually
// holds the whole /64, and would otherwise pick a new address a request).
type client struct {
	addr string
	key  string
}

// clientOf returns the client a request came from (set by
// withRequestInfo).
func clientOf(ctx context.Context) client { return infoOf(ctx).client }

// trustedProxies are the networks of the proxies in front of usersvc
// (-trust-proxy); only a peer in them may name the client in
// X-Forwarded-For.
type trustedProxies []netip.Prefix

// parseTrustedProxies reads -trust-proxy: comma-separated CIDRs or single
// addresses.
func parseTrustedProxies(s string) (trustedProxies, error) {
	var nets trustedProxies
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			ip, err := netip.ParseAddr(part)
			if err != nil || ip.Zone() != "" {
				return nil, usageError{"-trust-proxy: " + part + " is not a CIDR such as 10.0.0.0/8 or an address"}
			}
			nets = append(nets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, usageError{"-trust-proxy: " + part + " is not a CIDR such as 10.0.0.0/8"}
		}
		if p.Addr().Is4In6() {
			// Peers are compared unmapped (contains), so ::ffff:10.0.0.0/104
			// must be 10.0.0.0/8 to match anyone.
			if p.Bits() < 96 {
				return nil, usageError{"-trust-proxy: " + part + " spans more than IPv4-mapped addresses: write the IPv4 network"}
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		nets = append(nets, p.Masked())
	}
	return nets, nil
}

// contains reports whether ip is in one of the networks.
func (t trustedProxies) contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range t {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientAddr is the address a request is counted and logged under: the
// connection's peer; or, when the peer is a trusted proxy, the right-most
// X-Forwarded-For entry that is not a trusted proxy (the left-most when
// all are). An entry that is not a plain IP address (garbage, a zone) is
// not a client address: the peer is used instead.
func clientAddr(r *http.Request, trusted trustedProxies) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := peer.Addr().Unmap()
	if len(trusted) == 0 || !trusted.contains(addr) {
		return addr
	}
	hops := r.Header.Values("X-Forwarded-For")
	var leftmost netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		entries := strings.Split(hops[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			entry := strings.TrimSpace(entries[j])
			if entry == "" {
				continue
			}
			ip, err := netip.ParseAddr(entry)
			if err != nil || ip.Zone() != "" {
				return addr
			}
			if !trusted.contains(ip) {
				return ip.Unmap()
			}
			leftmost = ip.Unmap()
		}
	}
	if leftmost.IsValid() {
		return leftmost
	}
	return addr
}

// limitKey is the key an address's limits count under: the address for
// IPv4, its /64 for IPv6.
func limitKey(ip netip.Addr) string {
	if ip.Is6() && !ip.Is4In6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}

// ---- Host ----

var errHostNotAllowed = &Error{Code: codeForbidden, Message: "this Host is not allowed: without a token usersvc answers only localhost, 127.0.0.1 and [::1] (see -allowed-hosts)"}

// withAllowedHosts answers 403 to a request whose Host is not a loopback
// name or one of extra, on every path. It guards the service when it runs
// without a token: a web page the operator visits could otherwise point
// its own domain at 127.0.0.1 (DNS rebinding) and read or delete users
// from the browser. With a token set, the token guards instead.
func withAllowedHosts(token string, extra []string, log *slog.Logger, next http.Handler) http.Handler {
	if token != "" {
		return next
	}
	allowed := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	for _, h := range extra {
		allowed[strings.ToLower(h)] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed[hostName(r.Host)] {
			writeError(w, r, log, errHostNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

var errCrossSite = &Error{Code: codeForbidden, Message: "a page of another origin may not call usersvc (the browser sent Sec-Fetch-Site: cross-site or same-site)"}

// withoutCrossSite answers 403, on every path and before the limits count
// it, to a request a browser sends for a page of another site: an <img>, a
// script, a frame, a fetch or a form. Such a page cannot read usersvc's
// answers (usersvc sends no CORS headers), but it could spend the
// operator's rate and 404 allowance (a page of 110 <img> tags pointing at
// missing users locked 127.0.0.1 out for ten minutes) or send writes
// blind. Browsers name the site of every request's initiator in
// Sec-Fetch-Site; clients that are not browsers send no such header and
// pass. same-site is refused too: a page on another port of this host (a
// local dev server, http://localhost:3000) is same-site, since ports do not
// count toward a site, and could lock the operator out as well. A link followed from another site to the admin page still opens,
// when the page is on (a wiki may link to it); a navigation to anything
// else is refused too, as a popup the page opens could navigate to missing
// users again and again.
func withoutCrossSite(adminOn bool, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fromAnotherOrigin(r) && !(adminOn && opensAdminPage(r)) {
			writeError(w, r, log, errCrossSite)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fromAnotherOrigin reports whether a browser sent r for a page of another
// origin than usersvc's.
func fromAnotherOrigin(r *http.Request) bool {
	vs := r.Header["Sec-Fetch-Site"] // one look-up: every request pays it
	return len(vs) > 0 && (vs[0] == "cross-site" || vs[0] == "same-site")
}

// opensAdminPage reports whether a browser sent r to open the admin page in
// a tab: a GET (or HEAD) navigation to /admin/ (or /admin, which redirects
// there) whose destination is a document. The path is compared as sent,
// not decoded: /admin%2F and /%61dmin/ decode to /admin/ but are 404s.
func opensAdminPage(r *http.Request) bool {
	path := r.URL.EscapedPath()
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && (path == "/admin/" || path == "/admin") &&
		headerIs(r, "Sec-Fetch-Mode", "navigate") && headerIs(r, "Sec-Fetch-Dest", "document")
}

// headerIs reports whether the first value of the canonical header name
// is value.
func headerIs(r *http.Request, name, value string) bool {
	vs := r.Header[name]
	return len(vs) > 0 && vs[0] == value
}

// hostName is the name in a Host header, lowercased, without its port or
// IPv6 brackets.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
}

// parseHostList reads -allowed-hosts: comma-separated names (a port, if
// given, is ignored).
func parseHostList(s string) []string {
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, hostName(h))
		}
	}
	return hosts
}

// ---- query string ----

// withQueryCheck answers 400 to a query string that does not parse
// (?limit=5%, ?username=a%): net/http's Query() would drop the broken
// pair without a word, and the handler would answer as if it were absent.
func withQueryCheck(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "" {
			if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
				writeError(w, r, log, invalid("the query string does not parse: %s", strings.TrimPrefix(err.Error(), "invalid URL escape ")))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// ---- token ----

var errUnauthorized = &Error{Code: codeUnauthorized, Message: "missing or wrong bearer token"}

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

// bearerMatches compares the header's token, trimmed of surrounding white
// space, with want in constant time (hashing first, so the length does not
// leak either).
func bearerMatches(header string, want [32]byte) bool {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ---- limits ----

// tooManyMessage is the 429's message; each answer adds its own Retry-After.
const tooManyMessage = "too many requests: slow down and retry later"

// withClientLimits refuses a client over its rate limit or 404 cap with 429
// and Retry-After, and counts the 404s it is answered. A probe of /healthz
// (GET or HEAD) is never limited: a load balancer's probe must not take
// the instance out; any other method there is limited like any request.
func withClientLimits(limits *clientLimits, log *slog.Logger, next http.Handler) http.Handler {
	if !limits.enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		key := clientOf(r.Context()).key
		if ok, wait := limits.allow(key); !ok {
			writeError(w, r, log, &Error{Code: codeTooMany, Message: tooManyMessage, RetryAfter: wait})
			return
		}
		// The status is known from withObservability's statusWriter
		// outside; a writer of our own only when there is none.
		sw, ok := w.(*statusWriter)
		if !ok {
			sw = &statusWriter{ResponseWriter: w}
			w = sw
		}
		defer func() { limits.finish(key, sw.status == http.StatusNotFound) }() // a panic too
		next.ServeHTTP(w, r)
	})
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
