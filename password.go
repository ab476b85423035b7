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
	"strings"
	"sync"
	"sync/atomic"

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

// passwordHasher hashes and verifies passwords. sem bounds the hashes running
// at once, so a burst of logins costs at most cap(sem) × Memory of RAM.
type passwordHasher struct {
	params passwordParams
	sem    chan struct{}

	// hashes counts argon2id computations, so tests can prove an unknown
	// username costs the same work as a wrong password.
	hashes atomic.Int64

	dummyOnce sync.Once
	dummy     string
	dummyErr  error
}

// newPasswordHasher returns a hasher with p, running at most one hash per CPU.
func newPasswordHasher(p passwordParams) *passwordHasher {
	return &passwordHasher{params: p, sem: make(chan struct{}, max(2, runtime.NumCPU()))}
}

// acquire waits for a hashing slot, or for ctx to end.
func (h *passwordHasher) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for a password hashing slot: %w", ctx.Err())
	}
}

func (h *passwordHasher) release() { <-h.sem }

// Hash returns the PHC string of password with a fresh random salt:
// $argon2id$v=19$m=…,t=…,p=…$salt$hash.
func (h *passwordHasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, h.params.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	p := h.params
	h.hashes.Add(1)
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// Verify reports whether password matches the PHC string, using the
// parameters stored in it and a constant-time compare.
func (h *passwordHasher) Verify(ctx context.Context, phc, password string) (bool, error) {
	p, salt, want, err := parsePHC(phc)
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	h.hashes.Add(1)
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// VerifyNobody spends the time of a real Verify for a username that does not
// exist, so a caller cannot tell unknown users from wrong passwords by timing.
func (h *passwordHasher) VerifyNobody(ctx context.Context, password string) error {
	h.warmUp(ctx)
	if h.dummyErr != nil {
		return h.dummyErr
	}
	_, err := h.Verify(ctx, h.dummy, password)
	return err
}

// warmUp makes the hash VerifyNobody checks against. The server calls it at
// start, in the background, so the first unknown username costs no more
// than the next.
func (h *passwordHasher) warmUp(ctx context.Context) {
	h.dummyOnce.Do(func() {
		h.dummy, h.dummyErr = h.Hash(context.WithoutCancel(ctx), "usersvc: no such user")
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
