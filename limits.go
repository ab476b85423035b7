// limits.go: the per-client rate limit, 404 cap and open connections, the
// per-username authenticate lockout, and the places of large answers. Every
// table is bounded in entries and swept of idle ones as time passes.
package main

import (
	"context"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

const (
	window404      = 10 * time.Minute
	windowLogin    = 15 * time.Minute
	sweepEvery     = time.Minute
	clientIdleTime = window404
)

// maxClients bounds the per-client table: an attacker with many addresses
// (an IPv6 /48 holds 65,536 /64s) evicts the oldest entries instead of
// growing the table. An entry is a few hundred bytes.
const maxClients = 50_000

// clientLimits holds each client's token bucket and 404 count, in a table
// bounded in entries: when it is full, the least recently seen client goes
// first.
type clientLimits struct {
	now    func() time.Time
	rate   rate.Limit // 0: no rate limit
	burst  int
	max404 int // 0: no 404 cap

	mu        sync.Mutex
	clients   *simplelru.LRU[string, *clientState]
	lastSweep time.Time
}

// clientState is one client's limits.
type clientState struct {
	bucket   *rate.Limiter
	n404     int
	pending  int // requests let through and not yet answered: each may be a 404
	start404 time.Time
	lastSeen time.Time
	blocked  time.Time // 404 cap reached: refused until then
}

// newClientLimits returns limits for perSecond requests (burst) and max404
// 404 answers per window; 0 turns either off.
func newClientLimits(now func() time.Time, perSecond float64, burst, max404 int) *clientLimits {
	clients, _ := simplelru.NewLRU[string, *clientState](maxClients, nil) // errors only for a size < 1
	return &clientLimits{now: now, rate: rate.Limit(perSecond), burst: burst, max404: max404, clients: clients}
}

// enabled reports whether any per-client limit is on.
func (l *clientLimits) enabled() bool { return l.rate > 0 || l.max404 > 0 }

// allow decides whether a request from the client key may proceed; when
// not, it returns how long the client should wait. A request let through
// counts against the 404 cap until finish says what it was: requests in
// flight at once cannot take a client past the cap, as each would, were
// 404s counted only once answered.
func (l *clientLimits) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	c := l.client(key, now)
	if now.Before(c.blocked) {
		return false, c.blocked.Sub(now)
	}
	if l.max404 > 0 && c.count404(now)+c.pending >= l.max404 {
		return false, time.Second // the next answer in flight may free a place
	}
	if l.rate > 0 && !c.bucket.AllowN(now, 1) {
		missing := 1 - c.bucket.TokensAt(now)
		return false, time.Duration(missing / float64(l.rate) * float64(time.Second))
	}
	if l.max404 > 0 {
		c.pending++
	}
	return true, 0
}

// count404 is the client's 404s in the current window.
func (c *clientState) count404(now time.Time) int {
	if now.Sub(c.start404) >= window404 {
		c.start404, c.n404 = now, 0
	}
	return c.n404
}

// finish ends a request allow let through: it no longer counts as pending,
// and a 404 answer counts; at max404 in one window the client is refused
// until the window ends.
func (l *clientLimits) finish(key string, notFound bool) {
	if l.max404 <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.client(key, now)
	c.pending = max(c.pending-1, 0) // 0 when the entry was evicted meanwhile
	if !notFound {
		return
	}
	c.count404(now)
	c.n404++
	if c.n404 >= l.max404 {
		c.blocked = c.start404.Add(window404)
	}
}

// client returns key's state, creating it; l.mu must be held.
func (l *clientLimits) client(key string, now time.Time) *clientState {
	c, ok := l.clients.Get(key)
	if !ok {
		c = &clientState{}
		if l.rate > 0 {
			c.bucket = rate.NewLimiter(l.rate, l.burst)
		}
		l.clients.Add(key, c)
	}
	c.lastSeen = now
	return c
}

// sweep drops clients idle for longer than any of their limits can
// remember, oldest first; l.mu must be held.
func (l *clientLimits) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for {
		_, c, ok := l.clients.GetOldest()
		if !ok || now.Sub(c.lastSeen) <= clientIdleTime || now.Before(c.blocked) {
			return
		}
		l.clients.RemoveOldest()
	}
}

// size is the number of client entries held.
func (l *clientLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clients.Len()
}

// ---- connections ----

// clientConnListener closes at once a connection from a client that
// already holds max open connections, so no one address can take the
// server's descriptors and memory. Peers in trusted (the proxies in
// front) are not counted: every client reaches usersvc through them.
type clientConnListener struct {
	net.Listener
	max     int
	trusted trustedProxies

	mu   sync.Mutex
	open map[string]int
}

// limitConnsPerClient wraps ln; max 0 turns the limit off.
func limitConnsPerClient(ln net.Listener, max int, trusted trustedProxies) net.Listener {
	if max <= 0 {
		return ln
	}
	return &clientConnListener{Listener: ln, max: max, trusted: trusted, open: map[string]int{}}
}

// Accept returns the next connection whose client is under its limit,
// closing the others as they come.
func (l *clientConnListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
		if err != nil || l.trusted.contains(ap.Addr()) {
			return c, nil
		}
		key := limitKey(ap.Addr().Unmap())
		if !l.take(key) {
			c.Close()
			continue
		}
		return &countedConn{Conn: c, release: func() { l.give(key) }}, nil
	}
}

// take counts one more connection of key, unless it holds max already.
func (l *clientConnListener) take(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key] >= l.max {
		return false
	}
	l.open[key]++
	return true
}

// give counts one connection of key less.
func (l *clientConnListener) give(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

// countedConn gives its place back once, when it closes.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// maxLockouts bounds the lockout table: when more usernames than this
// have failures in their window, the oldest windows are forgotten first.
const maxLockouts = 100_000

// loginLockout counts failed authenticates per username (without regard to
// case) in a window that starts at the first failure; at max the username
// is locked until the window ends, whatever password is sent. Attempts
// still being checked count too, so a burst of concurrent guesses cannot
// slip past the limit. The counts live in the database: every instance
// shares them, and a restart forgets nothing.
type loginLockout struct {
	store *store
	now   func() time.Time
	max   int // 0: off
	log   *slog.Logger

	mu        sync.Mutex
	lastSweep time.Time
}

// newLoginLockout returns the lockout of at most max failed logins per
// username and window (0 turns it off), kept in st.
func newLoginLockout(st *store, now func() time.Time, max int, log *slog.Logger) *loginLockout {
	return &loginLockout{store: st, now: now, max: max, log: log}
}

// begin reserves an attempt for username, or refuses it (an *Error: the
// username is locked, or too many of its attempts are being checked). The
// caller must call done with the outcome (an internal error is neither
// success nor failure).
func (l *loginLockout) begin(ctx context.Context, username string) (done func(success, failed bool), err error) {
	if l.max <= 0 {
		return func(bool, bool) {}, nil
	}
	now := l.now()
	if err := l.sweep(ctx, now); err != nil {
		return nil, err
	}
	attempt, refused, err := l.store.BeginLogin(ctx, username, now, windowLogin, l.max)
	switch {
	case err != nil:
		return nil, err
	case refused != nil:
		return nil, refused
	}
	return func(success, failed bool) {
		// The outcome is recorded even if the client has gone.
		err := l.store.FinishLogin(context.WithoutCancel(ctx), username, attempt, l.now(), windowLogin, success, failed)
		if err != nil { // the attempt's pending mark then expires by itself
			l.log.WarnContext(ctx, "record the outcome of a login", "err", err, "request_id", requestID(ctx))
		}
	}, nil
}

// sweep clears the lockout table of what it no longer needs, at most once
// a sweepEvery.
func (l *loginLockout) sweep(ctx context.Context, now time.Time) error {
	l.mu.Lock()
	due := now.Sub(l.lastSweep) >= sweepEvery
	if due {
		l.lastSweep = now
	}
	l.mu.Unlock()
	if !due {
		return nil
	}
	return l.store.SweepLogins(ctx, now, windowLogin, maxLockouts)
}

// retryAfterSeconds renders a wait as a whole number of seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// ---- large answers ----

// An answer that may grow past largeAnswerBytes (a user whose goals have
// long descriptions renders to as much as 13 MB at the default -max-goals;
// a page to 4 MiB) takes one of largeAnswerPlaces while it is rendered and
// sent, at most largeAnswersPerClient of them for one client. A client
// that does not read keeps its answer in memory until the write timeout:
// 64 such connections from one address held 1.1 GB (review 18). Past the
// places a read of one user is a 503 at once, a page ends early (its Link
// says where the next begins), and a write is a 503 before it commits
// (answerGoals): it changes nothing.
const (
	largeAnswerBytes      = 1 << 20
	largeAnswerPlaces     = 8
	largeAnswersPerClient = 2
)

var errLargeAnswersBusy = &Error{Code: codeUnavailable, Message: "too many large answers are being sent right now: retry in a moment", RetryAfter: time.Second}

// largeAnswers counts the places taken, in all and by client key.
type largeAnswers struct {
	mu      sync.Mutex
	taken   int
	clients map[string]int
}

func newLargeAnswers() *largeAnswers { return &largeAnswers{clients: map[string]int{}} }

// take takes a place for client, or reports false when none is free to it.
func (l *largeAnswers) take(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.taken >= largeAnswerPlaces || l.clients[client] >= largeAnswersPerClient {
		return false
	}
	l.taken++
	l.clients[client]++
	return true
}

// give gives back a place client took.
func (l *largeAnswers) give(client string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.taken--
	if l.clients[client]--; l.clients[client] <= 0 {
		delete(l.clients, client)
	}
}

// answerPlace is one answer's claim on a place: taken when the answer
// first may grow past largeAnswerBytes, kept until done.
type answerPlace struct {
	answers *largeAnswers
	client  string
	held    bool
}

// fits reports whether the answer may grow to size bytes: at once when
// that is small or it holds a place, else when it gets one.
func (p *answerPlace) fits(size int) bool {
	if size <= largeAnswerBytes || p.held {
		return true
	}
	p.held = p.answers.take(p.client)
	return p.held
}

// forGoals is what a user write asks, inside its transaction, before it
// commits an answer that embeds the user's goals (see answerGoals): a
// place, when that answer is large.
func (p *answerPlace) forGoals(show userShow) answerGoals {
	return func(u *User, goals []Goal) error {
		if !p.fits(maxUserBytes(u, show, goals)) {
			return errLargeAnswersBusy
		}
		return nil
	}
}

// done gives the place back, if the answer took one.
func (p *answerPlace) done() {
	if p.held {
		p.answers.give(p.client)
		p.held = false
	}
}
