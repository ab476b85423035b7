// writer.go: group commit. Every write runs on the one writer connection,
// and writes that arrive together share one transaction and one fsync.
package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// maxBatch caps how many writes share one transaction, so one commit never
// waits on an unbounded queue.
const maxBatch = 128

var errStoreClosed = errors.New("store is closed")

// writeOp is one caller's write: fn runs inside the batch transaction, under
// its own savepoint, and err is sent on done once the batch has committed.
type writeOp struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx *sqlx.Tx) error
	done chan error
}

// write runs fn in a write transaction and returns once that transaction has
// committed (the change is on disk) or failed. fn's changes are undone when
// it returns an error; other writes in the same batch are not affected.
// fn must use the ctx it is given (never the caller's: cancelling one
// statement would roll back the whole shared transaction), must not keep tx,
// and publishes results through its closure.
func (s *store) write(ctx context.Context, fn func(ctx context.Context, tx *sqlx.Tx) error) error {
	op := &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case s.ops <- op:
	case <-s.stopping:
		return errStoreClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once queued, the op may commit: wait for the answer even if ctx ends,
	// so the caller never reports a failure for a write that landed.
	return <-op.done
}

// runWriter takes queued writes and commits them in batches until the store
// stops, then drains what is left.
func (s *store) runWriter() {
	defer close(s.writerDone)
	for {
		select {
		case op := <-s.ops:
			s.commitBatch(s.collectBatch(op))
		case <-s.stopping:
			for {
				select {
				case op := <-s.ops:
					s.commitBatch(s.collectBatch(op))
				default:
					return
				}
			}
		}
	}
}

// collectBatch adds to first every write already waiting, up to maxBatch.
func (s *store) collectBatch(first *writeOp) []*writeOp {
	batch := []*writeOp{first}
	for len(batch) < maxBatch {
		select {
		case op := <-s.ops:
			batch = append(batch, op)
		default:
			return batch
		}
	}
	return batch
}

// commitBatch runs each op under its own savepoint in one transaction, then
// commits once and answers every op.
func (s *store) commitBatch(batch []*writeOp) {
	results := make([]error, len(batch))
	err := s.runBatch(batch, results)
	for i, op := range batch {
		if err != nil && results[i] == nil {
			results[i] = err
		}
		op.done <- results[i]
	}
}

// runBatch executes the batch; a returned error means nothing committed.
func (s *store) runBatch(batch []*writeOp, results []error) error {
	// Statements run without the callers' contexts: interrupting one
	// statement would roll back the whole shared transaction.
	ctx := context.Background()
	tx, err := s.writeDB.BeginTxx(ctx, nil)
	if err != nil {
		return classifyWriteError(fmt.Errorf("begin write: %w", err))
	}
	defer tx.Rollback() //nolint:errcheck // after Commit this is a no-op
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if results[i], err = runSavepoint(ctx, tx, op.fn); err != nil {
			return classifyWriteError(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return classifyWriteError(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// runSavepoint runs fn under a savepoint, rolling back to it when fn fails.
// It returns fn's error, and a second error only when the savepoint itself
// could not be managed (the transaction is then unusable).
func runSavepoint(ctx context.Context, tx *sqlx.Tx, fn func(context.Context, *sqlx.Tx) error) (fnErr, err error) {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT op"); err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	if fnErr = classifyWriteError(fn(ctx, tx)); fnErr != nil {
		// After some errors (a full disk, I/O) SQLite has already rolled
		// back the whole transaction, and this fails: the batch ends.
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT op"); err != nil {
			return fnErr, fmt.Errorf("rollback to savepoint: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT op"); err != nil {
		return fnErr, fmt.Errorf("release savepoint: %w", err)
	}
	return fnErr, nil
}
