package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// demoPostgres is the throwaway PostgreSQL server of `walcast demo`: a
// fresh cluster in a temporary folder, run as a direct child so that the
// demo can stop it, and removed on exit.
type demoPostgres struct {
	dir  string // temporary folder: data/ and postgres.log
	port int
	cmd  *exec.Cmd
	done chan struct{} // closed once the server has exited and been reaped
}

// demoPGSettings make a cluster walcast can read and that is quick to use;
// the data only has to live as long as the demo.
var demoPGSettings = [][2]string{
	{"wal_level", "logical"},
	{"max_replication_slots", "10"},
	{"max_wal_senders", "10"},
	{"fsync", "off"},
	{"listen_addresses", "127.0.0.1"},
	{"unix_socket_directories", ""},
}

// startDemoPostgres initialises a cluster in a new temporary folder, starts
// it on a free port and waits until it accepts connections. On error nothing
// is left behind.
func startDemoPostgres(ctx context.Context) (_ *demoPostgres, err error) {
	initdb, postgres, err := findDemoPGBinaries()
	if err != nil {
		return nil, err
	}
	uid, gid, asOther, err := demoPGOwner()
	if err != nil {
		return nil, err
	}
	base := os.TempDir()
	if asOther && !demoWorldEnterable(base) {
		// The server's user must be able to enter every parent folder.
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "walcast-demo-")
	if err != nil {
		return nil, fmt.Errorf("create demo folder: %w", err)
	}
	p := &demoPostgres{dir: dir}
	defer func() {
		if err != nil {
			p.stop()
		}
	}()
	if asOther {
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, fmt.Errorf("give %s to the postgres user: %w", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.CommandContext(ctx, initdb, "-D", data, "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C")
	cmd.Dir = dir
	cmd.SysProcAttr = demoProcAttr(uid, gid, asOther)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, bytes.TrimSpace(out))
	}

	if p.port, err = demoFreePort(); err != nil {
		return nil, err
	}
	var conf strings.Builder
	conf.WriteString("\n# Added by walcast demo.\n")
	for _, s := range append(demoPGSettings, [2]string{"port", strconv.Itoa(p.port)}) {
		fmt.Fprintf(&conf, "%s = '%s'\n", s[0], s[1])
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("write postgresql.conf: %w", err)
	}
	_, err = f.WriteString(conf.String())
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return nil, fmt.Errorf("write postgresql.conf: %w", err)
	}

	logFile, err := os.OpenFile(p.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	p.cmd = exec.Command(postgres, "-D", data)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = demoProcAttr(uid, gid, asOther)
	if err := p.cmd.Start(); err != nil {
		p.cmd = nil
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	p.done = make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	return p, p.waitReady(ctx)
}

// URL is the libpq URL of the "postgres" database as the superuser.
func (p *demoPostgres) URL() string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"),
		Host: "127.0.0.1:" + strconv.Itoa(p.port), Path: "/postgres", RawQuery: "sslmode=disable"}
	return u.String()
}

func (p *demoPostgres) logPath() string { return filepath.Join(p.dir, "postgres.log") }

// waitReady polls until a real connection succeeds: the server has finished
// starting.
func (p *demoPostgres) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("postgres exited at start:\n%s", p.logTail(20))
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, p.URL())
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 30s: %w\n%s", err, p.logTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop shuts the server down (SIGINT is PostgreSQL's fast shutdown; SIGKILL
// after 5 s) and removes the temporary folder.
func (p *demoPostgres) stop() error {
	var err error
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			err = errors.New("postgres did not stop within 5s of SIGINT; killed it")
		}
	}
	if rmErr := os.RemoveAll(p.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("remove demo folder: %w", rmErr)
	}
	return err
}

func (p *demoPostgres) logTail(n int) string {
	b, _ := os.ReadFile(p.logPath())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "postgres log " + p.logPath() + ":\n" + strings.Join(lines, "\n")
}

// findDemoPGBinaries finds initdb and postgres of one installation: on PATH,
// else the newest /usr/lib/postgresql/*/bin (Debian keeps them off PATH).
func findDemoPGBinaries() (initdb, postgres string, err error) {
	if i, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(i)
		if real, err := filepath.EvalSymlinks(i); err == nil {
			dir = filepath.Dir(real)
		}
		if pg := filepath.Join(dir, "postgres"); demoExecutable(pg) {
			return i, pg, nil
		}
		if pg, err := exec.LookPath("postgres"); err == nil {
			return i, pg, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // numerically: 9.6 is older than 15
		a, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		b, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return a > b
	})
	for _, dir := range dirs {
		i, pg := filepath.Join(dir, "initdb"), filepath.Join(dir, "postgres")
		if demoExecutable(i) && demoExecutable(pg) {
			return i, pg, nil
		}
	}
	return "", "", errors.New("the demo needs the PostgreSQL server programs (initdb, postgres), which are not on PATH " +
		"nor under /usr/lib/postgresql/*/bin: install them with `apt-get install postgresql` (Debian/Ubuntu) " +
		"or your system's postgresql server package")
}

func demoExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// demoPGOwner decides who runs PostgreSQL, which refuses to run as root:
// as root, the "postgres" system user (the Debian package creates it);
// otherwise ourselves.
func demoPGOwner() (uid, gid int, asOther bool, err error) {
	if os.Geteuid() != 0 {
		return 0, 0, false, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, false, fmt.Errorf("PostgreSQL refuses to run as root and there is no %q system user to run it as (%v): "+
			"`apt-get install postgresql` creates it, or `useradd --system postgres`", "postgres", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, false, fmt.Errorf("user postgres: %w", err)
	}
	return uid, gid, true, nil
}

// demoProcAttr puts the server in its own process group, so that the
// terminal's Ctrl-C reaches only walcast, which then stops the server in
// order; runs it as uid/gid when asOther; and asks the kernel to SIGKILL it
// should walcast die without cleaning up (Linux). The fields are set by name
// because they exist only on some systems, and this file builds on all.
func demoProcAttr(uid, gid int, asOther bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	v := reflect.ValueOf(attr).Elem()
	if f := v.FieldByName("Setpgid"); f.IsValid() {
		f.SetBool(true)
	}
	if f := v.FieldByName("Pdeathsig"); f.IsValid() {
		f.Set(reflect.ValueOf(syscall.SIGKILL))
	}
	if f := v.FieldByName("Credential"); asOther && f.IsValid() {
		cred := reflect.New(f.Type().Elem())
		cred.Elem().FieldByName("Uid").SetUint(uint64(uid))
		cred.Elem().FieldByName("Gid").SetUint(uint64(gid))
		// Without Groups the server would keep root's supplementary groups.
		cred.Elem().FieldByName("Groups").Set(reflect.ValueOf([]uint32{uint32(gid)}))
		f.Set(cred)
	}
	return attr
}

// demoWorldEnterable reports whether every folder from / down to dir may be
// entered by other users.
func demoWorldEnterable(dir string) bool {
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

// demoFreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func demoFreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
