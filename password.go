// password.go: argon2id password hashing in PHC string form, with a bound on
// how many hashes run at once (each takes the full memory cost).
package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/argon2"
)

// passwordParams are the argon2id cost parameters. Memory is in KiB.
type passwordParams struct {
	Memory  uint32
	Time    uint32
	Threads uint8
	SaltLen uint32
	KeyLen  uint32
}

// defaultPasswordParams meet OWASP's minimum for argon2id: m=19 MiB, t=2, p=1.
var defaultPasswordParams = passwordParams{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

var errBadPHC = errors.New("stored password hash is not an argon2id PHC string")

// passwordHasher hashes and verifies passwords, each hash admitted by
// admission first, so a burst of logins costs at most one hash's Memory of
// RAM per slot.
type passwordHasher struct {
	params    passwordParams
	admission *hashAdmission
	limit     *memoryLimit // raised by each hash while it runs; nil for none

	hashes prometheus.Counter // argon2id computations

	dummyOnce sync.Once
	dummy     string // what VerifyNobody checks against
}

// Hashing admission: one slot per CPU (at least two), 32 places a slot for
// hashes running or waiting (at about 50 ms a production hash, one round
// of 64 waiting clients is under two seconds), and two places per client.
const (
	hashPlacesPerSlot = 32
	hashPerClient     = 2
	hashRetryAfter    = time.Second
)

// errHashBusy answers a login or password write when hashing is saturated.
var errHashBusy = &Error{Code: codeUnavailable, Message: "password hashing is busy: retry in a moment", RetryAfter: hashRetryAfter}

// newPasswordHasher returns a hasher with p, counting its work in hashes
// and its refusals in rejected.
func newPasswordHasher(p passwordParams, hashes, rejected prometheus.Counter) *passwordHasher {
	slots := max(2, runtime.NumCPU())
	return &passwordHasher{params: p, admission: newHashAdmission(slots, slots*hashPlacesPerSlot, rejected), hashes: hashes}
}

// hashAdmission decides when a hash may run: at most slots at once, and
// the waiting ones in turn by client, so a client's second waiting hash
// runs after every other waiting client's first. While a place is free, a
// flood from many addresses delays a newcomer by one round of the clients
// waiting, not by everything queued before it (first come, first served,
// 17 addresses holding two places each kept every other login refused).
// Past places in all, or hashPerClient for one client, a hash is refused
// at once: a flood must not make a legitimate login wait behind it. So a
// flood from places/hashPerClient addresses (32 on 2 CPUs) still fills
// every place, and other logins are refused while it lasts: a bound on
// memory and waiting cannot tell a legitimate client from the 33rd
// address.
type hashAdmission struct {
	slots, places int
	rejected      prometheus.Counter // refused with errHashBusy

	mu      sync.Mutex
	running int
	pending int // running or waiting
	clients map[string]*hashClient
	turns   []*hashClient // clients with a hash waiting, the next first
}

// hashClient is one client's share of the admission.
type hashClient struct {
	key     string
	held    int             // places held, running or waiting
	waiting []chan struct{} // closed when that hash may run
}

func newHashAdmission(slots, places int, rejected prometheus.Counter) *hashAdmission {
	return &hashAdmission{slots: slots, places: places, rejected: rejected, clients: map[string]*hashClient{}}
}

// acquire takes a place for the client (refusing at once when none is
// free) and then waits for its turn at a slot, or for ctx to end. release
// gives both back.
func (a *hashAdmission) acquire(ctx context.Context, client string) (release func(), err error) {
	a.mu.Lock()
	c := a.clients[client]
	if a.pending >= a.places || (c != nil && c.held >= hashPerClient) {
		a.mu.Unlock()
		a.rejected.Inc()
		return nil, errHashBusy
	}
	if c == nil {
		c = &hashClient{key: client}
		a.clients[client] = c
	}
	a.pending++
	c.held++
	release = func() {
		a.mu.Lock()
		a.running--
		a.leave(c)
		a.grant()
		a.mu.Unlock()
	}
	if a.running < a.slots {
		a.running++
		a.mu.Unlock()
		return release, nil
	}
	ready := make(chan struct{})
	if c.waiting = append(c.waiting, ready); len(c.waiting) == 1 {
		a.turns = append(a.turns, c)
	}
	a.mu.Unlock()
	select {
	case <-ready:
		return release, nil
	case <-ctx.Done():
		a.giveUp(c, ready)
		return nil, fmt.Errorf("wait for a password hashing slot: %w", ctx.Err())
	}
}

// giveUp takes back a waiting place whose caller stopped waiting. Its turn
// may have come meanwhile: then the slot it was given goes to the next.
func (a *hashAdmission) giveUp(c *hashClient, ready chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i := slices.Index(c.waiting, ready); i >= 0 {
		if c.waiting = slices.Delete(c.waiting, i, i+1); len(c.waiting) == 0 {
			a.turns = slices.DeleteFunc(a.turns, func(t *hashClient) bool { return t == c })
		}
	} else {
		a.running--
	}
	a.leave(c)
	a.grant()
}

// leave gives back one place of c. Callers hold mu.
func (a *hashAdmission) leave(c *hashClient) {
	a.pending--
	if c.held--; c.held == 0 {
		delete(a.clients, c.key)
	}
}

// grant gives free slots to the waiting hashes whose turn it is: each
// client's oldest, then that client goes to the back of the turns.
// Callers hold mu.
func (a *hashAdmission) grant() {
	for a.running < a.slots && len(a.turns) > 0 {
		c := a.turns[0]
		a.turns = a.turns[1:]
		ready := c.waiting[0]
		if c.waiting = c.waiting[1:]; len(c.waiting) > 0 {
			a.turns = append(a.turns, c)
		}
		a.running++
		close(ready)
	}
}

// Hash returns the PHC string of password with a fresh random salt:
// $argon2id$v=19$m=…,t=…,p=…$salt$hash.
// The client (its limit key) counts the hash against its sender (see
// acquire).
func (h *passwordHasher) Hash(ctx context.Context, client, password string) (string, error) {
	salt := make([]byte, h.params.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	release, err := h.admission.acquire(ctx, client)
	if err != nil {
		return "", err
	}
	defer release()
	return h.phc(password, salt), nil
}

// phc computes the argon2id hash of password with salt and returns it as
// a PHC string, with no admission: callers take a place first.
func (h *passwordHasher) phc(password string, salt []byte) string {
	p := h.params
	key := h.key(password, salt, p, p.KeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, enc.EncodeToString(salt), enc.EncodeToString(key))
}

// Verify reports whether password matches the PHC string, using the
// parameters stored in it and a constant-time compare.
func (h *passwordHasher) Verify(ctx context.Context, client, phc, password string) (bool, error) {
	p, salt, want, err := parsePHC(phc)
	if err != nil {
		return false, err
	}
	release, err := h.admission.acquire(ctx, client)
	if err != nil {
		return false, err
	}
	defer release()
	got := h.key(password, salt, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// key computes an argon2id key, counted, with the garbage collector's
// memory limit raised by the memory it takes (see memoryLimit.raise).
func (h *passwordHasher) key(password string, salt []byte, p passwordParams, keyLen uint32) []byte {
	h.hashes.Inc()
	defer h.limit.raise(int64(p.Memory) << 10)()
	return argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
}

// VerifyNobody spends the time of a real Verify for a username that does not
// exist, so a caller cannot tell unknown users from wrong passwords by timing.
func (h *passwordHasher) VerifyNobody(ctx context.Context, client, password string) error {
	h.warmUp()
	_, err := h.Verify(ctx, client, h.dummy, password)
	return err
}

// warmUp makes the hash VerifyNobody checks against. The server calls it at
// start, in the background, so the first unknown username costs no more
// than the next. It skips admission, which could refuse it (and a refusal
// must not stick), and needs no random salt: the hash guards nothing, it
// only has to cost what a real one does.
func (h *passwordHasher) warmUp() {
	h.dummyOnce.Do(func() {
		h.dummy = h.phc("usersvc: no such user", make([]byte, h.params.SaltLen))
	})
}

// parsePHC splits an argon2id PHC string into its parameters, salt and hash.
func parsePHC(phc string) (passwordParams, []byte, []byte, error) {
	var p passwordParams
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return p, nil, nil, errBadPHC
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return p, nil, nil, errBadPHC
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, errBadPHC
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return p, nil, nil, errBadPHC
	}
	hash, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(hash) == 0 {
		return p, nil, nil, errBadPHC
	}
	return p, salt, hash, nil
}
