// observe.go: what an operator sees: Prometheus metrics and one access log
// line per request.
package main

import (
	"bufio"
	"context"
	"io"
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
}

// newMetrics registers the HTTP, database pool and Go runtime collectors.
func newMetrics(st *store) *metrics {
	m := &metrics{
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
			Help: "GETs of one user answered from the read cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "usersvc_user_cache_misses_total",
			Help: "GETs of one user the read cache held no current answer for.",
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

// handler serves GET /metrics in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
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

// accessLogMessage is the message of every access log line.
const accessLogMessage = "request"

// withObservability counts, times and logs every request: one access log
// line with method, route, status, bytes, duration, client address and
// request id. Bodies, passwords and tokens are never logged.
func withObservability(m *metrics, log *slog.Logger, next http.Handler) http.Handler {
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
		route := routeLabel(r)
		method := methodLabel(r.Method)
		m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(method, route).Observe(elapsed.Seconds())
		log.LogAttrs(r.Context(), slog.LevelInfo, accessLogMessage,
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Int("bytes", sw.bytes),
			slog.Duration("duration", elapsed),
			slog.String("client", clientOf(r.Context()).addr),
			slog.String("request_id", requestID(r.Context())),
		)
	})
}

// ---- the log's buffer ----

// logFlushEvery is how often buffered log lines reach their file at the
// latest (as nginx's access_log buffer=… flush=…).
const logFlushEvery = time.Second

// logBufferSize is how much of the log is held before it is written.
const logBufferSize = 64 << 10

// bufferedLog holds log lines and writes them in batches, so a busy
// server makes one write syscall a second (or a full buffer), not one a
// request. Lines that matter at once (anything but an access line, and
// anything at warning level or above) are written at once, in order, by
// flushingHandler.
type bufferedLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// newBufferedLog buffers writes to w and flushes them every
// logFlushEvery until Close.
func newBufferedLog(w io.Writer) *bufferedLog {
	b := &bufferedLog{w: bufio.NewWriterSize(w, logBufferSize), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushEvery(logFlushEvery)
	return b
}

func (b *bufferedLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// Flush writes out what is held.
func (b *bufferedLog) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

func (b *bufferedLog) flushEvery(d time.Duration) {
	defer close(b.done)
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			b.Flush() //nolint:errcheck // nowhere to report a log that cannot be written
		case <-b.stop:
			return
		}
	}
}

// Close stops the flushing and writes out the rest.
func (b *bufferedLog) Close() error {
	close(b.stop)
	<-b.done
	return b.Flush()
}

// flushingHandler writes a record through next into the buffer, and
// flushes the buffer after a record that should not wait: any but an
// access line, or at warning level and above.
type flushingHandler struct {
	slog.Handler
	buf *bufferedLog
}

func (h flushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn || r.Message != accessLogMessage {
		h.buf.Flush() //nolint:errcheck // as in flushEvery
	}
	return err
}

func (h flushingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushingHandler{h.Handler.WithAttrs(attrs), h.buf}
}

func (h flushingHandler) WithGroup(name string) slog.Handler {
	return flushingHandler{h.Handler.WithGroup(name), h.buf}
}
