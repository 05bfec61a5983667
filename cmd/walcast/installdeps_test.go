package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// depsMachine is a fake machine for scripts/install-deps.sh: a PATH holding
// only fake programs, a fake /usr/lib/postgresql and a fake apt-get that
// logs its arguments and "installs" a package by creating its fake
// programs. Nothing touches the network or the real system.
type depsMachine struct {
	t      *testing.T
	bin    string // the only folder on PATH
	pgLib  string // stands for /usr/lib/postgresql
	webDir string // stands for broadcast/web
	aptLog string // one line per apt-get call
}

func newDepsMachine(t *testing.T) *depsMachine {
	t.Helper()
	dir := t.TempDir()
	m := &depsMachine{t: t, bin: filepath.Join(dir, "bin"), pgLib: filepath.Join(dir, "pglib"),
		webDir: filepath.Join(dir, "web"), aptLog: filepath.Join(dir, "apt.log")}
	for _, d := range []string{m.bin, m.pgLib, m.webDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(m.webDir, "package-lock.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	mkdir, err1 := exec.LookPath("mkdir")
	cp, err2 := exec.LookPath("cp")
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	// The fake apt-get "installs" postgresql into the versioned folder, as
	// Debian does, and redis-server, nodejs, npm, chromium onto PATH.
	m.program("apt-get", `echo "$*" >> `+m.aptLog+`
[ "$1" = install ] || exit 0
for p in "$@"; do
	case $p in
	postgresql) `+mkdir+` -p `+m.pgLib+`/16/bin && `+cp+` $0 `+m.pgLib+`/16/bin/initdb && `+cp+` $0 `+m.pgLib+`/16/bin/postgres ;;
	redis-server|npm|chromium) `+cp+` $0 `+m.bin+`/$p ;;
	nodejs) printf '#!/bin/sh\necho 20\n' > `+m.bin+`/node && /bin/chmod +x `+m.bin+`/node ;;
	esac
done`)
	m.program("go", "")
	return m
}

// program puts an executable shell script named name on the fake PATH.
func (m *depsMachine) program(name, body string) {
	m.t.Helper()
	if err := os.WriteFile(filepath.Join(m.bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		m.t.Fatal(err)
	}
}

// pgServer puts initdb and postgres in pgLib/<version>/bin.
func (m *depsMachine) pgServer(version string) {
	m.t.Helper()
	dir := filepath.Join(m.pgLib, version, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		m.t.Fatal(err)
	}
	for _, name := range []string{"initdb", "postgres"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			m.t.Fatal(err)
		}
	}
}

// run runs install-deps.sh with args and returns its output (stdout and
// stderr), its exit code and what apt-get was asked since the last run.
func (m *depsMachine) run(args ...string) (out string, code int, apt []string) {
	m.t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		m.t.Fatal("bash is not on PATH: `make test` and scripts/build.sh need it")
	}
	script, err := filepath.Abs("../../scripts/install-deps.sh")
	if err != nil {
		m.t.Fatal(err)
	}
	cmd := exec.Command(bash, append([]string{script}, args...)...)
	cmd.Env = []string{"PATH=" + m.bin, "INSTALL_DEPS_PG_LIB=" + m.pgLib, "INSTALL_DEPS_WEB_DIR=" + m.webDir}
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		m.t.Fatal(err)
	}
	if log, err := os.ReadFile(m.aptLog); err == nil {
		apt = strings.Split(strings.TrimSpace(string(log)), "\n")
		os.Remove(m.aptLog)
	}
	return string(b), code, apt
}

// TestInstallDepsDecisions runs scripts/install-deps.sh (what `make test`
// and `make demo` run first) on fake machines: it installs exactly what is
// missing, says so, never reinstalls what is present, and with --dry-run
// changes nothing but says exactly what it would run.
func TestInstallDepsDecisions(t *testing.T) {
	root := os.Geteuid() == 0
	for _, c := range []struct {
		name string
		f    func(*testing.T, bool)
	}{
		{"demo/everything present: silent, nothing installed", depsDemoAllPresent},
		{"demo/dry run: names only the missing PostgreSQL, runs nothing", depsDemoDryRun},
		{"demo/install what is missing, then nothing more", depsDemoInstallsMissing},
		{"demo/a broken install fails with the check that failed", depsDemoBrokenInstall},
		{"test/dry run: Chromium and the npm packages, not what is there", depsTestDryRun},
		{"test/node older than 20 is missing", depsTestOldNode},
		{"no Go: says where to get it", depsNoGo},
		{"bad argument", depsBadArgument},
	} {
		t.Run(c.name, func(t *testing.T) { c.f(t, root) })
	}
}

func depsDemoAllPresent(t *testing.T, root bool) {
	m := newDepsMachine(t)
	m.pgServer("15")
	m.program("redis-server", "")
	out, code, apt := m.run("--demo")
	if code != 0 || out != "" || apt != nil {
		t.Fatalf("exit %d, output %q, apt-get %q; want 0, nothing, no apt-get", code, out, apt)
	}
}

func depsDemoDryRun(t *testing.T, root bool) {
	m := newDepsMachine(t)
	m.program("redis-server", "")
	m.program("apt-get", "echo called >> "+m.aptLog) // must not be called
	out, code, apt := m.run("--demo", "--dry-run")
	if code != 0 || apt != nil {
		t.Fatalf("exit %d, apt-get %q; want 0 and no apt-get call\n%s", code, apt, out)
	}
	want := "install-deps: would install postgresql (missing: PostgreSQL server (initdb, postgres))\n" +
		"install-deps: would run: apt-get update -qq\n" +
		"install-deps: would run: apt-get install -y -qq --no-install-recommends postgresql\n"
	if !root {
		want = "install-deps: missing: PostgreSQL server (initdb, postgres)\n" +
			"install-deps: install them, for example with:\n" +
			"    sudo apt-get install -y --no-install-recommends postgresql\n"
	}
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
}

func depsDemoInstallsMissing(t *testing.T, root bool) {
	m := newDepsMachine(t)
	out, code, apt := m.run("--demo")
	if !root {
		// Not root: it cannot install; it says what to run and fails.
		if code != 1 || !strings.Contains(out, "sudo apt-get install -y --no-install-recommends postgresql redis-server\n") || apt != nil {
			t.Fatalf("exit %d, apt-get %q, output:\n%s", code, apt, out)
		}
		return
	}
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	wantOut := "install-deps: installing postgresql redis-server (missing: PostgreSQL server (initdb, postgres) Redis server (redis-server))\n"
	wantApt := []string{"update -qq", "install -y -qq --no-install-recommends postgresql redis-server"}
	if out != wantOut || strings.Join(apt, "|") != strings.Join(wantApt, "|") {
		t.Fatalf("output %q, apt-get %q; want %q, %q", out, apt, wantOut, wantApt)
	}
	// Everything is there now: a second run is silent and calls nothing.
	out, code, apt = m.run("--demo")
	if code != 0 || out != "" || apt != nil {
		t.Fatalf("second run: exit %d, output %q, apt-get %q; want 0, nothing, no apt-get", code, out, apt)
	}
}

func depsDemoBrokenInstall(t *testing.T, root bool) {
	if !root {
		// The script installs only as root; CI runs as root, so there a
		// run without it is a failure, not a skip.
		if os.Getenv("CI") == "true" {
			t.Fatal("apt-get runs only as root: run the tests as root under CI=true")
		}
		t.Skip("apt-get runs only as root")
	}
	m := newDepsMachine(t)
	m.program("redis-server", "")
	m.program("apt-get", "echo \"$*\" >> "+m.aptLog) // installs nothing
	out, code, _ := m.run("--demo")
	if code != 1 || !strings.Contains(out, "install-deps: still missing after apt-get install: have_pg_server") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func depsTestDryRun(t *testing.T, root bool) {
	m := newDepsMachine(t)
	m.pgServer("16")
	m.program("redis-server", "")
	m.program("node", "echo 22")
	m.program("npm", "exit 1") // must not run: dry run
	out, code, apt := m.run("--dry-run")
	if code != 0 || apt != nil {
		t.Fatalf("exit %d, apt-get %q\n%s", code, apt, out)
	}
	want := "install-deps: would install chromium (missing: Chromium (headless browser for the dashboard test))\n" +
		"install-deps: would run: apt-get update -qq\n" +
		"install-deps: would run: apt-get install -y -qq --no-install-recommends chromium\n" +
		"install-deps: would run: npm ci in broadcast/web\n"
	if !root {
		want = "install-deps: missing: Chromium (headless browser for the dashboard test)\n" +
			"install-deps: install them, for example with:\n" +
			"    sudo apt-get install -y --no-install-recommends chromium\n"
	}
	if out != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out, want)
	}
}

func depsTestOldNode(t *testing.T, root bool) {
	m := newDepsMachine(t)
	m.pgServer("16")
	for _, p := range []string{"redis-server", "npm", "chromium"} {
		m.program(p, "")
	}
	m.program("node", "echo 18")
	out, code, _ := m.run("--dry-run")
	if code != 0 || !strings.Contains(out, "(missing: Node.js 20 or newer (node))") || strings.Contains(out, "chromium") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}

func depsNoGo(t *testing.T, root bool) {
	m := newDepsMachine(t)
	os.Remove(filepath.Join(m.bin, "go"))
	out, code, apt := m.run("--demo")
	if code != 1 || !strings.Contains(out, "install Go 1.26 or newer from https://go.dev/dl/") || apt != nil {
		t.Fatalf("exit %d, apt-get %q, output:\n%s", code, apt, out)
	}
}

func depsBadArgument(t *testing.T, root bool) {
	m := newDepsMachine(t)
	if out, code, _ := m.run("--nope"); code != 2 || !strings.Contains(out, "usage: install-deps.sh") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
}
