package launch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// ProcAttr is what a helper child of a launching program (walcast-bench's
// servers under test, for instance) should run with: its own process group,
// so a terminal's Ctrl-C reaches only the parent, which stops it in order,
// and on Linux SIGKILL when the parent dies.
func ProcAttr() *syscall.SysProcAttr { return procAttr(self()) }

// process is a server program started as a direct child, so that kill
// delivers SIGKILL to the server itself rather than to a wrapper such as
// runuser or pg_ctl, which would leave the server running.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result; read only after done is closed
}

// startProcess runs name with args in dir as o, appending its stdout and
// stderr to logPath. One goroutine reaps the process; it ends when the
// process does, and every server's Close makes sure that happens.
func startProcess(name string, args []string, dir, logPath string, o owner) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	// The child gets its own copy of the descriptor: an *os.File needs no
	// copying goroutine, and ours can be closed right after the start.
	defer logFile.Close()

	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = procAttr(o)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the process ended; only valid once exited.
func (p *process) exitError() error {
	<-p.done
	if p.err == nil {
		return errors.New("exited with status 0")
	}
	return p.err
}

// signal sends sig unless the process is already gone.
func (p *process) signal(sig os.Signal) error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// wait waits up to timeout for the process to exit and reports whether it did.
func (p *process) wait(timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// stop asks the process to exit with sig and gives it grace to do so; then it
// is killed, because a launcher must never leave a server behind.
func (p *process) stop(sig os.Signal, grace time.Duration) error {
	if err := p.signal(sig); err != nil {
		return err
	}
	if p.wait(grace) {
		return nil
	}
	if err := p.kill(); err != nil {
		return err
	}
	return fmt.Errorf("did not exit within %s of %v; killed it", grace, sig)
}

// kill sends SIGKILL and waits until the process has been reaped.
func (p *process) kill() error {
	if err := p.signal(os.Kill); err != nil {
		return err
	}
	if !p.wait(readyTimeout) {
		return fmt.Errorf("pid %d still running %s after SIGKILL", p.pid(), readyTimeout)
	}
	return nil
}

// killPID sends SIGKILL to a process that is not our child.
func killPID(pid int) {
	if proc, err := os.FindProcess(pid); err == nil {
		_ = proc.Kill()
	}
}
