package benchenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// owner is the operating-system user that runs PostgreSQL: ourselves, or,
// as root (which initdb and postgres refuse to be), the "postgres" user.
type owner struct {
	uid, gid int
	cred     *syscall.Credential // nil: run as ourselves
}

func lookupOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return owner{}, fmt.Errorf("PostgreSQL refuses to run as root and there is no %q system user to run it as (%v): "+
			"`apt-get install postgresql` creates it, or `useradd --system postgres`", "postgres", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return owner{}, fmt.Errorf("user postgres: %w", err)
	}
	return owner{uid: uid, gid: gid,
		// Groups so the server does not keep root's supplementary groups.
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}}, nil
}

// ProcAttr is what every child of a benchmark should run with: its own
// process group, SIGKILL when the parent dies, and cred when not nil.
func ProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// child is a started server process, reaped by a goroutine.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(cmd *exec.Cmd) (*child, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace, then SIGKILLs the process group.
func (c *child) stop(sig syscall.Signal, grace time.Duration) error {
	if c == nil || c.cmd.Process == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("%s did not stop within %s of %s; killed it", filepath.Base(c.cmd.Path), grace, sig)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// worldEnterable reports whether other users may enter every folder from /
// down to dir, as the postgres user must when root makes its folder.
func worldEnterable(dir string) bool {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// PGProgram finds a PostgreSQL program (initdb, postgres, pg_recvlogical):
// on PATH, else in the newest /usr/lib/postgresql/*/bin, where Debian keeps
// the server programs.
func PGProgram(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // numerically: 9.6 is older than 15
		a, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		b, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return a > b
	})
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or under /usr/lib/postgresql/*/bin: "+
		"install the PostgreSQL server programs (`apt-get install postgresql` on Debian/Ubuntu, or `make deps`)", name)
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return path + ":\n" + strings.Join(lines, "\n")
}
