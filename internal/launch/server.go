package launch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// server is what Postgres and Redis have in common: one program on one
// 127.0.0.1 port, run as a direct child in its own folder, logging to one
// file, that can be stopped, killed and started again on the same port.
type server struct {
	name    string // the program, in messages
	bin     string
	dir     string
	port    int
	logPath string
	owner   owner
	args    func() []string                 // the program's arguments, port included
	ready   func(ctx context.Context) error // nil once the server serves
	// reap, when set, waits until no process of a dead server is left
	// (PostgreSQL's backends outlive a killed postmaster).
	reap func() error

	mu   sync.Mutex
	proc *process // the running server, or nil
}

// startNew starts the server on a free port; on the first start, and only
// then, a port someone else took in the meantime means trying another.
func (s *server) startNew(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return err
		}
		s.port = port
		err = s.start(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errPortTaken) || attempt == 5 {
			return fmt.Errorf("start %s on port %d: %w", s.name, s.port, err)
		}
	}
}

// start runs the program as a direct child, so that kill delivers SIGKILL to
// the server itself, and waits until ready says it serves.
func (s *server) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		return errors.New("already running")
	}
	logStart := fileSize(s.logPath)
	proc, err := startProcess(s.bin, s.args(), s.dir, s.logPath, s.owner)
	if err != nil {
		return err
	}
	s.proc = proc
	err = poll(ctx, readyTimeout, func() error {
		if proc.exited() {
			err := fmt.Errorf("%s exited: %w", s.name, proc.exitError())
			if bindFailed(readFrom(s.logPath, logStart)) {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			return permanent(err)
		}
		return s.ready(ctx)
	})
	if err != nil {
		// Leave nothing half-started behind. The port is not waited for:
		// after a failed bind, someone else holds it.
		proc.kill()
		if s.reap != nil {
			s.reap()
		}
		s.proc = nil
		return err
	}
	return nil
}

// restart starts a stopped or killed server again, on the same port and
// folder. The port stays the same, because clients reconnect to the same
// address; if someone else holds it for a moment, it keeps trying until the
// deadline.
func (s *server) restart(ctx context.Context) error {
	err := poll(ctx, readyTimeout, func() error {
		err := s.start(ctx)
		if err != nil && !errors.Is(err, errPortTaken) {
			return permanent(err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("restart %s on port %d: %w\n%s", s.name, s.port, err, s.LogTail(30))
	}
	return nil
}

// halt ends the running server with end, then waits until it has let go of
// its port (and, for PostgreSQL, its backends). Halting a stopped server does
// nothing.
func (s *server) halt(what string, end func(*process) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := end(s.proc)
	if errGone := s.gone(); err == nil {
		err = errGone
	}
	s.proc = nil
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, s.name, err)
	}
	return nil
}

// kill is halt with SIGKILL.
func (s *server) kill() error {
	return s.halt("kill", func(p *process) error { return p.kill() })
}

// stop is halt with sig, SIGKILL after grace.
func (s *server) stop(sig os.Signal, grace time.Duration) error {
	return s.halt("stop", func(p *process) error { return p.stop(sig, grace) })
}

// close halts the server with end and removes its folder.
func (s *server) close(end func() error) error {
	err := end()
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove %s folder: %w", s.name, rmErr))
	}
	return err
}

// gone waits until no process of the server is left and its port can be
// bound again.
func (s *server) gone() error {
	if s.reap != nil {
		if err := s.reap(); err != nil {
			return err
		}
	}
	return poll(context.Background(), readyTimeout, func() error {
		if !portFree(s.port) {
			return fmt.Errorf("port %d still in use", s.port)
		}
		return nil
	})
}

// Port is the TCP port the server listens on; it stays the same across
// Stop, Kill and Start.
func (s *server) Port() int { return s.port }

// Dir is the server's folder, which holds its data and its log.
func (s *server) Dir() string { return s.dir }

// LogTail returns the last n lines of the server log, to put in error
// messages.
func (s *server) LogTail(n int) string {
	return logTail(s.name+" log "+s.logPath, s.logPath, n)
}

// signal sends sig to the running server; without one it fails.
func (s *server) signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return fmt.Errorf("signal %s: not running", s.name)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", s.name, err)
	}
	return nil
}

// running reports whether the server's process runs.
func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.exited()
}
