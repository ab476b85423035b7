// accesslog.go: the access log: one line per request, written through a
// buffer flushed once a second and at shutdown, and formatted without
// slog's general machinery when the line is plain (it is the one log line
// of every request).
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// accessLogMessage is the message of every access log line.
const accessLogMessage = "request"

// accessLine is what an access log line says.
type accessLine struct {
	time      time.Time
	method    string
	route     string
	status    int
	bytes     int
	duration  time.Duration
	client    string
	requestID string
}

// logAccess writes the access line a to log. When log is the process's
// own (newLogger) and every string of the line is plain, the line is
// formatted here, byte for byte as slog's handler would (a test holds
// them equal), and goes straight into the buffer; otherwise through slog.
func logAccess(ctx context.Context, log *slog.Logger, a accessLine) {
	if !log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	if h, ok := log.Handler().(flushingHandler); ok && h.direct && a.plain() {
		bp := lineBuffers.Get().(*[]byte)
		b := (*bp)[:0]
		if h.json {
			b = a.appendJSON(b)
		} else {
			b = a.appendText(b)
		}
		h.buf.writeAccess(b)
		*bp = b
		lineBuffers.Put(bp)
		return
	}
	log.LogAttrs(ctx, slog.LevelInfo, accessLogMessage,
		slog.String("method", a.method),
		slog.String("route", a.route),
		slog.Int("status", a.status),
		slog.Int("bytes", a.bytes),
		slog.Duration("duration", a.duration),
		slog.String("client", a.client),
		slog.String("request_id", a.requestID),
	)
}

var lineBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// plainLog marks the bytes a logged string may hold and still be written
// as it is in both formats: letters, digits and a few marks, no space,
// quote, backslash, '=' or control character.
var plainLog = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "-_.:/{}[]%+*,;!#$&'()@^`|~<>?" {
		t[c] = true
	}
	return t
}()

// isPlain reports whether s is non-empty and all plain.
func isPlain(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !plainLog[s[i]] {
			return false
		}
	}
	return true
}

// plain reports whether the line's strings are all plain, but for the
// route, which is a pattern such as "GET /api/users/{id}": plain apart
// from the space after the method (text quotes it, as slog does).
func (a accessLine) plain() bool {
	_, ok := routeText(a.route)
	return ok && isPlain(a.method) && isPlain(a.client) && isPlain(a.requestID)
}

// routeTexts holds each route as the text format writes it (quoted when
// it has a space) and whether it is plain. Routes are the mux's patterns
// and "unmatched": a few, computed once each.
var routeTexts sync.Map // string → routeTextEntry

type routeTextEntry struct {
	text  string
	plain bool
}

// routeText is route as the text format writes it, and whether it is
// plain (see plainRoute).
func routeText(route string) (string, bool) {
	if e, ok := routeTexts.Load(route); ok {
		e := e.(routeTextEntry)
		return e.text, e.plain
	}
	e := routeTextEntry{text: route, plain: plainRoute(route)}
	if len(splitSpaces(route)) > 1 {
		e.text = strconv.Quote(route)
	}
	if e.plain { // only plain routes are kept: the mux's, not made-up ones
		routeTexts.Store(route, e)
	}
	return e.text, e.plain
}

// plainRoute reports whether a route is plain words separated by single
// spaces.
func plainRoute(route string) bool {
	for _, w := range splitSpaces(route) {
		if !isPlain(w) {
			return false
		}
	}
	return route != ""
}

// splitSpaces splits s at each space; an empty part (two spaces, or one at
// an end) makes the result hold "".
func splitSpaces(s string) []string {
	var parts []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ' ' {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return parts
}

// appendText writes the line as slog's TextHandler does: time with
// milliseconds, level, msg, then each attribute; a string with a space is
// quoted.
func (a accessLine) appendText(b []byte) []byte {
	b = append(b, "time="...)
	b = appendRFC3339Millis(b, a.time)
	b = append(b, " level=INFO msg="...)
	b = append(b, accessLogMessage...)
	b = append(b, " method="...)
	b = append(b, a.method...)
	b = append(b, " route="...)
	text, _ := routeText(a.route)
	b = append(b, text...)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, int64(a.bytes), 10)
	b = append(b, " duration="...)
	b = append(b, a.duration.String()...)
	b = append(b, " client="...)
	b = append(b, a.client...)
	b = append(b, " request_id="...)
	b = append(b, a.requestID...)
	return append(b, '\n')
}

// appendJSON writes the line as slog's JSONHandler does: time with
// nanoseconds, the duration in nanoseconds.
func (a accessLine) appendJSON(b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = a.time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"`...)
	b = append(b, accessLogMessage...)
	b = append(b, `","method":"`...)
	b = append(b, a.method...)
	b = append(b, `","route":"`...)
	b = append(b, a.route...)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, int64(a.bytes), 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(a.duration), 10)
	b = append(b, `,"client":"`...)
	b = append(b, a.client...)
	b = append(b, `","request_id":"`...)
	b = append(b, a.requestID...)
	return append(b, "\"}\n"...)
}

// appendRFC3339Millis formats t as slog's TextHandler does: RFC 3339 with
// exactly three digits of milliseconds.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...) // drop the 4th digit
}

// ---- the log's buffer ----

// logFlushEvery is how often buffered log lines reach their file at the
// latest (as nginx's access_log buffer=… flush=…).
const logFlushEvery = time.Second

// logBufferSize is how much of the log is held before it is written.
const logBufferSize = 64 << 10

// logMaxPending is how much of the log may wait for a sink that does not
// take it (a pipe whose reader stopped reading) before access lines are
// dropped: a quarter of a second of them at 50,000 requests a second.
// Other lines (start, stop, warnings, errors) are dropped only past four
// times as much: memory stays bounded whatever the sink does.
const logMaxPending = 2 << 20

// logCloseWait bounds how long a stop waits for the sink to take the rest.
const logCloseWait = 5 * time.Second

// bufferedLog holds log lines and writes them in batches, so a busy
// server makes one write syscall a second (or a full buffer), not one a
// request. One goroutine writes to the sink, outside the lock the lines
// are added under: a sink that blocks (a log reader that stopped reading
// held every request, /healthz and the stop included) delays only that
// goroutine, and past logMaxPending lines are dropped and counted
// (onDropped says so once the sink takes lines again). Lines that matter
// at once (anything but an access line, and anything at warning level or
// above) are handed to the writer at once, in order, by flushingHandler.
type bufferedLog struct {
	w         io.Writer
	onDropped func(lines int) // told how many lines were dropped; nil for nobody

	mu      sync.Mutex
	pending []byte // lines not yet taken by the writer
	dropped int    // lines dropped since the writer last took any

	kick chan struct{} // (1) write what is pending now
	stop chan struct{}
	done chan struct{}
}

// newBufferedLog buffers writes to w and writes them out every
// logFlushEvery, when a buffer fills, or when asked, until Close. It tells
// onDropped (nil for nobody) how many lines it dropped.
func newBufferedLog(w io.Writer, onDropped func(lines int)) *bufferedLog {
	b := &bufferedLog{w: w, onDropped: onDropped, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.writeEvery(logFlushEvery)
	return b
}

// Write adds p, one line (any but a plain access line: see writeAccess),
// to what is pending; it never waits for the sink.
func (b *bufferedLog) Write(p []byte) (int, error) {
	b.add(p, 4*logMaxPending)
	return len(p), nil
}

// writeAccess adds an access line, which is the first to go when the sink
// does not take the log.
func (b *bufferedLog) writeAccess(p []byte) {
	b.add(p, logMaxPending)
}

// add adds p to what is pending unless that would pass limit.
func (b *bufferedLog) add(p []byte, limit int) {
	b.mu.Lock()
	if len(b.pending)+len(p) > limit {
		b.dropped++
		b.mu.Unlock()
		return
	}
	b.pending = append(b.pending, p...)
	full := len(b.pending) >= logBufferSize
	b.mu.Unlock()
	if full {
		b.Flush()
	}
}

// Flush asks the writer to write out what is pending, without waiting.
func (b *bufferedLog) Flush() {
	select {
	case b.kick <- struct{}{}:
	default: // asked already
	}
}

func (b *bufferedLog) writeEvery(d time.Duration) {
	defer close(b.done)
	tick := time.NewTicker(d)
	defer tick.Stop()
	var spare []byte
	for {
		select {
		case <-tick.C:
		case <-b.kick:
		case <-b.stop:
			spare = b.writeOut(spare)
			b.writeOut(spare) // the warning of lines dropped in the last round, if any
			return
		}
		spare = b.writeOut(spare)
	}
}

// writeOut writes what is pending, giving the writers spare to fill
// meanwhile, and returns the buffer written, emptied, as the next spare.
func (b *bufferedLog) writeOut(spare []byte) []byte {
	b.mu.Lock()
	out, dropped := b.pending, b.dropped
	b.pending, b.dropped = spare[:0], 0
	b.mu.Unlock()
	if len(out) > 0 {
		b.w.Write(out) //nolint:errcheck // nowhere to report a log that cannot be written
	}
	if dropped > 0 && b.onDropped != nil {
		b.onDropped(dropped) // a line of its own, written on the next round
	}
	if cap(out) > logBufferSize*4 {
		return nil // a burst's buffer: let it go
	}
	return out[:0]
}

// Close stops the writer once it has written out the rest, or after
// logCloseWait if the sink does not take it.
func (b *bufferedLog) Close() error {
	close(b.stop)
	select {
	case <-b.done:
		return nil
	case <-time.After(logCloseWait):
		return errors.New("the log's sink did not take its last lines")
	}
}

// flushingHandler writes a record through next into the buffer, and
// flushes the buffer after a record that should not wait: any but an
// access line, or at warning level and above.
type flushingHandler struct {
	slog.Handler
	buf *bufferedLog
	// direct says access lines may be formatted here and written to buf
	// (the handler is a plain TextHandler, or a JSONHandler when json).
	direct, json bool
}

func (h flushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn || r.Message != accessLogMessage {
		h.buf.Flush()
	}
	return err
}

func (h flushingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushingHandler{Handler: h.Handler.WithAttrs(attrs), buf: h.buf} // attributes: slog formats
}

func (h flushingHandler) WithGroup(name string) slog.Handler {
	return flushingHandler{Handler: h.Handler.WithGroup(name), buf: h.buf}
}
