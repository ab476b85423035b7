// limits.go: the per-client rate limit and 404 cap, and the per-username
// authenticate lockout. Tables are swept of idle entries as time passes, so
// they cannot grow without bound.
package main

import (
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	window404      = 10 * time.Minute
	windowLogin    = 15 * time.Minute
	sweepEvery     = time.Minute
	clientIdleTime = window404
)

// clientLimits holds each client address's token bucket and 404 count.
type clientLimits struct {
	now    func() time.Time
	rate   rate.Limit // 0: no rate limit
	burst  int
	max404 int // 0: no 404 cap

	mu        sync.Mutex
	clients   map[string]*clientState
	lastSweep time.Time
}

// clientState is one address's limits.
type clientState struct {
	bucket   *rate.Limiter
	n404     int
	start404 time.Time
	lastSeen time.Time
	blocked  time.Time // 404 cap reached: refused until then
}

// newClientLimits returns limits for perSecond requests (burst) and max404
// 404 answers per window; 0 turns either off.
func newClientLimits(now func() time.Time, perSecond float64, burst, max404 int) *clientLimits {
	return &clientLimits{now: now, rate: rate.Limit(perSecond), burst: burst, max404: max404, clients: map[string]*clientState{}}
}

// enabled reports whether any per-client limit is on.
func (l *clientLimits) enabled() bool { return l.rate > 0 || l.max404 > 0 }

// allow decides whether a request from addr may proceed; when not, it
// returns how long the client should wait.
func (l *clientLimits) allow(addr string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	c := l.client(addr, now)
	if now.Before(c.blocked) {
		return false, c.blocked.Sub(now)
	}
	if l.rate > 0 && !c.bucket.AllowN(now, 1) {
		missing := 1 - c.bucket.TokensAt(now)
		return false, time.Duration(missing / float64(l.rate) * float64(time.Second))
	}
	return true, 0
}

// record404 counts a 404 answer to addr; at max404 in one window the
// address is refused until the window ends.
func (l *clientLimits) record404(addr string) {
	if l.max404 <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.client(addr, now)
	if now.Sub(c.start404) >= window404 {
		c.start404, c.n404 = now, 0
	}
	c.n404++
	if c.n404 >= l.max404 {
		c.blocked = c.start404.Add(window404)
	}
}

// client returns addr's state, creating it; l.mu must be held.
func (l *clientLimits) client(addr string, now time.Time) *clientState {
	c, ok := l.clients[addr]
	if !ok {
		c = &clientState{}
		if l.rate > 0 {
			c.bucket = rate.NewLimiter(l.rate, l.burst)
		}
		l.clients[addr] = c
	}
	c.lastSeen = now
	return c
}

// sweep drops clients idle for longer than any of their limits can
// remember; l.mu must be held.
func (l *clientLimits) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for addr, c := range l.clients {
		if now.Sub(c.lastSeen) > clientIdleTime && !now.Before(c.blocked) {
			delete(l.clients, addr)
		}
	}
}

// size is the number of client entries held.
func (l *clientLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.clients)
}

// loginLockout counts failed authenticates per username (without regard to
// case) in a fixed window; at max the username is locked until the window
// ends, whatever password is sent. Attempts still being checked count too,
// so a burst of concurrent guesses cannot slip past the limit.
type loginLockout struct {
	now func() time.Time
	max int // 0: off

	mu        sync.Mutex
	names     map[string]*loginAttempts
	lastSweep time.Time
}

// loginAttempts is one username's failures in the current window and its
// attempts in flight.
type loginAttempts struct {
	start    time.Time
	failures int
	inFlight int
}

func newLoginLockout(now func() time.Time, max int) *loginLockout {
	return &loginLockout{now: now, max: max, names: map[string]*loginAttempts{}}
}

// begin reserves an attempt for username. When the username is locked it
// returns ok false and how long to wait; otherwise the caller must call
// done with the outcome (an internal error is neither success nor failure).
func (l *loginLockout) begin(username string) (done func(success, failed bool), wait time.Duration, ok bool) {
	if l.max <= 0 {
		return func(bool, bool) {}, 0, true
	}
	key := strings.ToLower(username)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	a, found := l.names[key]
	if !found {
		a = &loginAttempts{start: now}
		l.names[key] = a
	}
	if now.Sub(a.start) >= windowLogin {
		a.start, a.failures = now, 0
	}
	if a.failures+a.inFlight >= l.max {
		if a.failures >= l.max {
			wait = a.start.Add(windowLogin).Sub(now)
		}
		return nil, max(wait, time.Second), false
	}
	a.inFlight++
	return func(success, failed bool) { l.finish(key, a, success, failed) }, 0, true
}

// finish records the outcome of an attempt begun on a.
func (l *loginLockout) finish(key string, a *loginAttempts, success, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a.inFlight--
	switch {
	case failed:
		if a.failures == 0 {
			a.start = l.now() // the window starts at the first failure
		}
		a.failures++
	case success:
		a.failures = 0
	}
	if a.failures == 0 && a.inFlight == 0 && l.names[key] == a {
		delete(l.names, key)
	}
}

// sweep drops windows that have ended; l.mu must be held.
func (l *loginLockout) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery {
		return
	}
	l.lastSweep = now
	for k, a := range l.names {
		if a.inFlight == 0 && now.Sub(a.start) >= windowLogin {
			delete(l.names, k)
		}
	}
}

// retryAfterSeconds renders a wait as a whole number of seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
