package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// testStamp is the build stamp of walcastBinary (restart_test.go), which
// builds with scripts/build.sh, as `make build`, `make release` and the
// Dockerfile do.
var testStamp = []string{"VERSION=9.9.9-test.1+abc", "COMMIT=0123456789abcdef",
	"DATE=2026-01-02T03:04:05Z", "SOURCE_DATE_EPOCH=1767323045"}

// TestVersionStamp checks that the stamp given to scripts/build.sh reaches
// the binary (the -ldflags -X names match the variables) and that
// `walcast version` prints it.
func TestVersionStamp(t *testing.T) {
	out, err := exec.Command(walcastBinary(t), "version").CombinedOutput()
	if err != nil {
		t.Fatalf("walcast version: %v\n%s", err, out)
	}
	want := "walcast 9.9.9-test.1+abc (commit 0123456789abcdef, 2026-01-02T03:04:05Z, " +
		runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if string(out) != want {
		t.Fatalf("walcast version printed %q, want %q", out, want)
	}
	// Unstamped (go run, go test): the defaults say so.
	var buf bytes.Buffer
	if code := realMain([]string{"version"}, &buf, &buf, envOS); code != 0 || !strings.HasPrefix(buf.String(), "walcast dev (commit unknown, unknown, ") {
		t.Fatalf("unstamped version: exit %d, %q", code, buf.String())
	}
}

// TestVersionFromGit runs scripts/version.sh in a scratch repository: the
// commit and its date between releases, the tag's version on a tagged
// commit, and a refusal when the tag and the npm package disagree.
func TestVersionFromGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is not on PATH: scripts/version.sh stamps builds from git; install it (apt-get install git)")
	}
	repo := t.TempDir()
	for _, f := range []string{"scripts/version.sh", "broadcast/web/package.json"} {
		b, err := os.ReadFile(filepath.Join("../..", f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "broadcast/web/package.json" {
			b = []byte(`{` + "\n" + `  "name": "@walcast/client",` + "\n" + `  "version": "1.4.0",` + "\n" + `  "type": "module"` + "\n}\n")
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(repo, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE=2026-03-04T05:06:07Z", "GIT_AUTHOR_DATE=2026-03-04T05:06:07Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "first")
	head := git("rev-parse", "HEAD")
	stamp := func() (string, error) {
		cmd := exec.Command("bash", "scripts/version.sh")
		cmd.Dir = repo
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "VERSION=") && !strings.HasPrefix(kv, "COMMIT=") && !strings.HasPrefix(kv, "DATE=") && !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") {
				env = append(env, kv)
			}
		}
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := stamp()
	want := "VERSION=1.4.0-dev+" + head[:12] + "\nCOMMIT=" + head + "\nDATE=2026-03-04T05:06:07Z\nSOURCE_DATE_EPOCH=1772600767\n"
	if err != nil || out != want {
		t.Fatalf("between releases: %v\n%s\nwant\n%s", err, out, want)
	}

	git("tag", "v1.4.0")
	if out, err = stamp(); err != nil || !strings.HasPrefix(out, "VERSION=1.4.0\nCOMMIT="+head+"\n") {
		t.Fatalf("at v1.4.0: %v\n%s", err, out)
	}

	git("tag", "-d", "v1.4.0")
	git("tag", "v1.5.0")
	if out, err = stamp(); err == nil || !strings.Contains(out, "tag says 1.5.0 but broadcast/web/package.json says 1.4.0") {
		t.Fatalf("tag and package disagree: want a refusal, got %v\n%s", err, out)
	}
}
