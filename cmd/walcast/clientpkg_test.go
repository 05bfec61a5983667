package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/internal/testenv"
)

// TestClientPackage packs the npm package @walcast/client (broadcast/web)
// with `npm pack`, checks what the tarball holds, installs it into a scratch
// project the way an application would, and runs the Node tests of
// broadcast/web/test/package there against a real walcast (real
// PostgreSQL): the client from the package connects and receives a change,
// and the useWalcast hook of @walcast/client/react, rendered by React
// (react-test-renderer, both from broadcast/web's devDependencies),
// connects, delivers, resubscribes, swaps callbacks and closes.
//
// It also checks that walcast's /client.js and /client.d.ts are the
// package's files byte for byte: one source, served and published.
func TestClientPackage(t *testing.T) {
	webDir, err := filepath.Abs("../../broadcast/web")
	if err != nil {
		t.Fatal(err)
	}
	node, _ := webTestTools(t, webDir, false)
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm is not on PATH; `make test` (scripts/install-deps.sh) installs it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := func(dir string, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		// npm must neither ask the registry nor write outside the test.
		cmd.Env = append(os.Environ(), "npm_config_cache="+filepath.Join(t.TempDir(), "npm-cache"),
			"npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
		}
		return out
	}

	// npm pack: the tarball name comes from --json.
	packDir := t.TempDir()
	var packed []struct {
		Filename string `json:"filename"`
		Version  string `json:"version"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	if err := json.Unmarshal(run(webDir, npm, "pack", "--json", "--pack-destination", packDir), &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v (%d packages)", err, len(packed))
	}
	var files []string
	for _, f := range packed[0].Files {
		files = append(files, f.Path)
	}
	slices.Sort(files)
	want := []string{"README.md", "client.d.ts", "client.js", "package.json", "react.d.ts", "react.js"}
	if !slices.Equal(files, want) {
		t.Errorf("tarball holds %v, want %v (package.json \"files\")", files, want)
	}
	tarball := filepath.Join(packDir, packed[0].Filename)
	t.Logf("packed %s (%s)", packed[0].Filename, strings.Join(files, ", "))

	// The embedded files served at /client.js and /client.d.ts are the
	// tarball's.
	srv := httptest.NewServer(broadcast.WebHandler())
	t.Cleanup(srv.Close)
	inTar := tarFiles(t, tarball)
	for _, name := range []string{"client.js", "client.d.ts"} {
		_, served := webGetBody(t, srv.URL+"/"+name)
		if !bytes.Equal(served, inTar["package/"+name]) {
			t.Errorf("/%s served by walcast differs from %s in the npm package", name, name)
		}
	}

	// A scratch project installs the tarball (from the file: no registry)
	// and gets React from broadcast/web's node_modules, as an app has its own.
	scratch := t.TempDir()
	if err := os.WriteFile(filepath.Join(scratch, "package.json"),
		[]byte(`{"name":"scratch","private":true,"type":"module"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(scratch, npm, "install", "--offline", "--no-save", "--loglevel=error", tarball)
	for _, dep := range []string{"react", "react-test-renderer"} {
		if err := os.Symlink(filepath.Join(webDir, "node_modules", dep), filepath.Join(scratch, "node_modules", dep)); err != nil {
			t.Fatal(err)
		}
	}
	testDir := filepath.Join(scratch, "test")
	if err := os.MkdirAll(testDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tests, _ := filepath.Glob(filepath.Join(webDir, "test", "package", "*.test.js"))
	if len(tests) == 0 {
		t.Fatal("no broadcast/web/test/package/*.test.js")
	}
	for _, src := range append(tests, filepath.Join(webDir, "test", "harness.js")) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(testDir, filepath.Base(src)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A real walcast on a real PostgreSQL (the in-process bus: this test
	// is about the package, resume across restarts is TestWebClientAndDashboard's).
	pg := electionDB(t)
	w := &walcastServer{
		bin:  walcastBinary(t),
		addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		out:  &syncBuffer{},
	}
	w.args = []string{"run", "--database-url", pg.URL(), "--jwt-secret", testSecret, "--listen", w.addr, "--log-level", "warn"}
	t.Cleanup(func() {
		w.kill()
		if t.Failed() {
			t.Logf("walcast output:\n%s", w.out.String())
		}
	})
	if err := w.start(); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(context.Background(), pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	ctl := httptest.NewServer(controlHandler(w, db))
	t.Cleanup(ctl.Close)

	var names []string
	for _, f := range tests {
		names = append(names, filepath.Join("test", filepath.Base(f)))
	}
	cmd := exec.CommandContext(ctx, node, append(nodeTestArgs(), names...)...)
	cmd.Dir = scratch
	cmd.Env = append(os.Environ(),
		"WALCAST_URL=http://"+w.addr,
		"WALCAST_CONTROL="+ctl.URL,
		"WALCAST_PACKAGE_VERSION="+packed[0].Version,
	)
	cmd.WaitDelay = 5 * time.Second
	out := &lineLogger{t: t}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	out.flush()
	if err != nil {
		t.Fatalf("node tests of the installed package: %v", err)
	}
}

// tarFiles reads a .tgz into memory by path.
func tarFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, h.Name, err)
		}
		files[h.Name] = b
	}
}

// webGetBody fetches url and returns the status and body.
func webGetBody(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
