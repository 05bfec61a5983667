package launch

import (
	"context"
	"errors"
	"fmt"
	"time"
)

const (
	// readyTimeout bounds every wait for a server to come up or go away.
	// It is generous because CI machines are slow and busy, and a wait
	// returns as soon as its condition holds.
	readyTimeout = 30 * time.Second
	// pollInterval is short because servers are usually ready in tens of
	// milliseconds and tests start many of them.
	pollInterval = 10 * time.Millisecond
)

// permanentError stops poll at once: retrying cannot help, for example when
// the server process has already exited.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// poll calls check until it returns nil, returns a permanent error, ctx ends
// or timeout passes. On timeout the error carries check's last complaint,
// which usually says what was still wrong.
func poll(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if pe := (permanentError{}); errors.As(err, &pe) {
			return pe.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not done after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}
