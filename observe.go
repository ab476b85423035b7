// observe.go: what an operator sees: Prometheus metrics, and the
// middleware that counts, times and logs every request (accesslog.go
// writes its line).
package main

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus collectors, on a registry of its own
// (no global state, so tests can build many servers).
type metrics struct {
	registry       *prometheus.Registry
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	inFlight       prometheus.Gauge
	passwordHashes prometheus.Counter
	hashesRefused  prometheus.Counter
	cacheHits      prometheus.Counter
	cacheMisses    prometheus.Counter

	mu      sync.RWMutex
	byRoute map[routeKey]routeMetrics
}

// newMetrics registers the HTTP, database pool and Go runtime collectors.
func newMetrics(st *store) *metrics {
	m := &metrics{
		byRoute:  map[routeKey]routeMetrics{},
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method and route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "http_requests_in_flight",
			Help: "HTTP requests being answered now.",
		}),
		passwordHashes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersvc_password_hashes_total",
			Help: "argon2id computations (hashes and verifications).",
		}),
		hashesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersvc_password_hashes_refused_total",
			Help: "Requests answered 503 because password hashing was saturated.",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersvc_user_cache_hits_total",
			Help: "Reads of one user answered from the read cache: GETs, and the check before a password change.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersvc_user_cache_misses_total",
			Help: "Reads of one user the read cache held no current answer for: GETs, and the check before a password change.",
		}),
	}
	m.registry.MustRegister(m.requests, m.duration, m.inFlight, m.passwordHashes, m.hashesRefused, m.cacheHits, m.cacheMisses,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for name, db := range st.eng.pools() {
		m.registry.MustRegister(collectors.NewDBStatsCollector(db, name))
	}
	return m
}

// routeMetrics are the counters of one method, route and status, looked
// up once: finding a labelled child hashes its labels every time.
type routeMetrics struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// routeKey names a routeMetrics.
type routeKey struct {
	method, route string
	status        int
}

// count records one answer of method on route with status, that took d.
func (m *metrics) count(method, route string, status int, d time.Duration) {
	k := routeKey{method, route, status}
	m.mu.RLock()
	rm, ok := m.byRoute[k]
	m.mu.RUnlock()
	if !ok {
		rm = routeMetrics{
			requests: m.requests.WithLabelValues(method, route, strconv.Itoa(status)),
			duration: m.duration.WithLabelValues(method, route),
		}
		m.mu.Lock()
		m.byRoute[k] = rm // bounded: routes and methods are labels already bounded
		m.mu.Unlock()
	}
	rm.requests.Inc()
	rm.duration.Observe(d.Seconds())
}

// handler serves GET /metrics in the Prometheus text format, the one the
// README and the OpenAPI document name, whatever the Accept header asks
// for (promhttp would answer protobuf or OpenMetrics to a client asking).
func (m *metrics) handler() http.Handler {
	h := promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		text := *r
		text.Header = r.Header.Clone()
		text.Header.Del("Accept")
		h.ServeHTTP(w, &text)
	})
}

// routeLabel is the Go 1.22 pattern that served r, never the raw path, so
// ids cannot explode the label set.
func routeLabel(r *http.Request) string {
	if r.Pattern == "" {
		return "unmatched"
	}
	return r.Pattern
}

// methodLabel is the request method for metrics, with anything outside the
// standard methods as "OTHER", so made-up methods cannot grow the label set.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "OTHER"
}

// maxLoggedMethod is as much of a method as the access line keeps: a
// method may be as long as the 64 KiB of headers, and one 405 a request
// wrote 190 MB of log a second (review 18).
const maxLoggedMethod = 24

// logMethod is the method as the access line writes it: as sent, cut to
// maxLoggedMethod bytes (a method is a token: ASCII, one byte a character).
func logMethod(method string) string {
	if len(method) <= maxLoggedMethod {
		return method
	}
	return method[:maxLoggedMethod] + "..."
}

// routeOf is routeLabel, or for a request refused before routing (by the
// token, the Host check, the limits) the pattern routes would have served
// it with: an operator sees which endpoint is being refused. Only requests
// that no pattern served pay for the second look-up.
func routeOf(r *http.Request, routes *http.ServeMux) string {
	if r.Pattern == "" {
		if _, pattern := routes.Handler(r); pattern != "" {
			return pattern
		}
	}
	return routeLabel(r)
}

// withObservability counts, times and logs every request: one access log
// line with method, route (see routeOf), status, bytes, duration, client
// address and request id. Bodies, passwords and tokens are never logged.
func withObservability(m *metrics, log *slog.Logger, routes *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Inc()
		defer m.inFlight.Dec()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		elapsed := time.Since(start)
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		route := routeOf(r, routes)
		method := methodLabel(r.Method)
		m.count(method, route, status, elapsed)
		logAccess(r.Context(), log, accessLine{
			time: start.Add(elapsed), method: logMethod(r.Method), route: route, status: status, bytes: sw.bytes,
			duration: elapsed, client: clientOf(r.Context()).addr, requestID: requestID(r.Context()),
		})
	})
}
