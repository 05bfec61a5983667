package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/walcast/walcast/internal/launch"
)

// server is the WebSocket server under test: a walcast child, the minimal
// baseline child, or a walcast someone else started (pid 0: no CPU or
// memory figures).
type server struct {
	name string
	ws   string // ws://127.0.0.1:port
	http string // http://127.0.0.1:port
	// internal is walcast's --internal-listen (http://127.0.0.1:port),
	// set when the run profiles it: /metrics and pprof are there.
	internal string
	pid      int
	cmd      *exec.Cmd
	done     chan struct{}
	logPath  string
}

// builtWalcast is the walcast binary this process built, reused while it
// exists (a test's temporary folder, where it was built, may be gone).
var builtWalcast string

// walcastBinary returns the walcast program to run: --walcast-bin, or one
// built from this module into dir (once per process while it lasts).
func walcastBinary(ctx context.Context, cfg *Config, dir string) (string, error) {
	if cfg.WalcastBin != "" {
		if _, err := os.Stat(cfg.WalcastBin); err != nil {
			return "", fmt.Errorf("--walcast-bin: %w", err)
		}
		return cfg.WalcastBin, nil
	}
	if builtWalcast != "" {
		if _, err := os.Stat(builtWalcast); err == nil {
			return builtWalcast, nil
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", errors.New("no go command to build walcast with: pass --walcast-bin")
	}
	out := filepath.Join(dir, "walcast")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/walcast/walcast/cmd/walcast")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build walcast (run from the walcast module, or pass --walcast-bin): %w\n%s", err, b)
	}
	builtWalcast = out
	return out, nil
}

// startWalcast runs `walcast run` as a child on a free loopback port and
// waits until /readyz says it streams.
func startWalcast(ctx context.Context, cfg *Config, dir, dbURL, redisURL, slot, secret string) (*server, error) {
	bin, err := walcastBinary(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	port, err := launch.FreePort()
	if err != nil {
		return nil, err
	}
	command := cfg.WalcastCmd
	if command == "" {
		command = "run"
	}
	args := []string{command, "--database-url", dbURL, "--slot", slot}
	if command == "capture" {
		// No /ws: none of the serving flags apply.
		args = append(args, "--listen", "127.0.0.1:"+strconv.Itoa(port), "--log-level", "warn")
	} else {
		args = append(args, serverArgs(port, secret)...)
	}
	if redisURL != "" {
		args = append(args, "--redis-url", redisURL)
	}
	internal := ""
	// Sampling reads the Go runtime's figures from /metrics there, and
	// the profiles come from its pprof.
	if cfg.Profile != "" || (cfg.Sample > 0 && cfg.Mode == "live") {
		iport, err := launch.FreePort()
		if err != nil {
			return nil, err
		}
		internal = "http://127.0.0.1:" + strconv.Itoa(iport)
		args = append(args, "--internal-listen", "127.0.0.1:"+strconv.Itoa(iport))
	}
	args = append(args, cfg.WalcastArgs...)
	var env []string
	if cfg.HeapProfileRate > 0 {
		godebug := "memprofilerate=" + strconv.Itoa(cfg.HeapProfileRate)
		if g := os.Getenv("GODEBUG"); g != "" {
			godebug = g + "," + godebug
		}
		env = append(env, "GODEBUG="+godebug)
	}
	s, err := startChild(ctx, "walcast", bin, args, dir, port, env...)
	if s != nil {
		s.internal = internal
	}
	return s, err
}

// profile fetches a CPU profile (kind "cpu") or an execution trace
// ("trace") of seconds from the child's pprof (its --internal-listen)
// into path.
func (s *server) profile(ctx context.Context, kind string, seconds int, path string) error {
	if s.internal == "" {
		return errors.New("no internal listener to profile")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
	defer cancel()
	if err := fetchTo(ctx, s.internal+pprofPath[kind]+"?seconds="+strconv.Itoa(seconds), path); err != nil {
		return fmt.Errorf("profile %s: %w", s.name, err)
	}
	return nil
}

// fetchTo writes the body of a GET of url to the file at path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofPath is where net/http/pprof serves each kind of profile.
var pprofPath = map[string]string{"cpu": "/debug/pprof/profile", "trace": "/debug/pprof/trace"}

// startProfile profiles the child in the background when cfg asks for it;
// the returned wait gives the result (nil at once when not asked).
func startProfile(ctx context.Context, cfg *Config, s *server) (wait func() error) {
	if cfg.Profile == "" {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() { done <- s.profile(ctx, cfg.ProfileKind, cfg.ProfileSeconds, cfg.Profile) }()
	return func() error { return <-done }
}

// serverArgs are the flags of every walcast child that serves clients.
func serverArgs(port int, secret string) []string {
	return []string{"--listen", "127.0.0.1:" + strconv.Itoa(port), "--jwt-secret", secret,
		// Every client connects from 127.0.0.1: lift the per-address rate.
		"--connect-rate", "1000000", "--max-connections", "20000",
		"--log-level", "warn"}
}

// startServe runs `walcast serve` as a child following redisURL, on a
// free loopback port, and waits until /readyz says it reads the stream.
func startServe(ctx context.Context, cfg *Config, dir, redisURL, secret string) (*server, error) {
	bin, err := walcastBinary(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	port, err := launch.FreePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--redis-url", redisURL}, serverArgs(port, secret)...)
	args = append(args, cfg.WalcastArgs...)
	return startChild(ctx, "walcast-serve", bin, args, dir, port)
}

// startMinimal runs this program's minimal broadcast server as a child, so
// that it has its own open-file limit and its own CPU and memory figures.
func startMinimal(ctx context.Context, cfg *Config, dir string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	port, err := launch.FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{"minimal-server", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--row-size", strconv.Itoa(cfg.RowSize)}
	return startChild(ctx, "minimal", self, args, dir, port)
}

// startChild starts bin with args, its output in a log in dir, and waits
// until it answers /readyz on port; env adds to this process's
// environment (a later duplicate wins).
func startChild(ctx context.Context, name, bin string, args []string, dir string, port int, env ...string) (*server, error) {
	logPath := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = launch.ProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, ws: fmt.Sprintf("ws://127.0.0.1:%d", port), http: fmt.Sprintf("http://127.0.0.1:%d", port),
		pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

// remoteServer is a walcast started by someone else.
func remoteServer(target string) *server {
	return &server{name: "walcast", ws: target, http: "http" + strings.TrimPrefix(target, "ws")}
}

func (s *server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	cl := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-s.done:
			return fmt.Errorf("%s exited at start:\n%s", s.name, s.logTail(20))
		default:
		}
		resp, err := cl.Get(s.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within 60s (last: %v)\n%s", s.name, err, s.logTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) logTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return s.logPath + ":\n" + strings.Join(lines, "\n")
}

// stop ends a child with SIGINT (walcast shuts down in order), SIGKILL
// after 10 s. A remote server is left alone.
func (s *server) stop() error {
	if s == nil || s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.pid, syscall.SIGKILL)
		<-s.done
		return fmt.Errorf("%s did not stop within 10s of SIGINT; killed it", s.name)
	}
}

// metrics scrapes /metrics and sums each metric over its labels.
func (s *server) metrics(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	base := s.http
	if s.internal != "" {
		// --internal-listen takes /metrics off --listen.
		base = s.internal
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s metrics: %w", s.name, err)
	}
	defer resp.Body.Close()
	return parseMetrics(bufio.NewScanner(resp.Body))
}

// parseMetrics reads Prometheus text format, summing samples by name.
func parseMetrics(sc *bufio.Scanner) (map[string]float64, error) {
	m := map[string]float64{}
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		m[strings.TrimSpace(name)] += v
	}
	return m, sc.Err()
}
