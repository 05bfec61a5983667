package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/walcast/walcast/broadcast"
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
	n := &npmRunner{t: t, npm: npm, cache: filepath.Join(t.TempDir(), "npm-cache")}
	tarball, version := packClient(t, n, webDir)
	checkServedIsPackaged(t, tarball)
	scratch, tests := installPackage(t, n, webDir, tarball)

	// A real walcast on a real PostgreSQL (the in-process bus: this test
	// is about the package, resume across restarts is TestWebClientAndDashboard's).
	rig := startNodeRig(t)
	if err := rig.runNode(node, scratch, tests, "WALCAST_PACKAGE_VERSION="+version); err != nil {
		t.Fatalf("node tests of the installed package: %v", err)
	}
}

// npmRunner runs npm for a test: it must neither ask the registry nor
// write outside the test.
type npmRunner struct {
	t          *testing.T
	npm, cache string
}

func (n *npmRunner) run(dir string, args ...string) []byte {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.npm, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_cache="+n.cache,
		"npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		n.t.Fatalf("npm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

// packClient runs npm pack in webDir, checks the tarball's file list, and
// returns its path and the package version.
func packClient(t *testing.T, n *npmRunner, webDir string) (tarball, version string) {
	t.Helper()
	packDir := t.TempDir()
	var packed []struct {
		Filename string `json:"filename"`
		Version  string `json:"version"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	if err := json.Unmarshal(n.run(webDir, "pack", "--json", "--pack-destination", packDir), &packed); err != nil || len(packed) != 1 {
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
	t.Logf("packed %s (%s)", packed[0].Filename, strings.Join(files, ", "))
	return filepath.Join(packDir, packed[0].Filename), packed[0].Version
}

// checkServedIsPackaged checks that the embedded files served at
// /client.js and /client.d.ts are the tarball's.
func checkServedIsPackaged(t *testing.T, tarball string) {
	t.Helper()
	srv := httptest.NewServer(broadcast.WebHandler())
	t.Cleanup(srv.Close)
	inTar := tarFiles(t, tarball)
	for _, name := range []string{"client.js", "client.d.ts"} {
		_, served := webGetBody(t, srv.URL+"/"+name)
		if !bytes.Equal(served, inTar["package/"+name]) {
			t.Errorf("/%s served by walcast differs from %s in the npm package", name, name)
		}
	}
}

// installPackage installs the tarball into a scratch project (from the
// file: no registry), links React from broadcast/web's node_modules, as an
// app has its own, and copies the package's Node tests there. It returns
// the project and the tests' paths in it.
func installPackage(t *testing.T, n *npmRunner, webDir, tarball string) (scratch string, tests []string) {
	t.Helper()
	scratch = t.TempDir()
	if err := os.WriteFile(filepath.Join(scratch, "package.json"),
		[]byte(`{"name":"scratch","private":true,"type":"module"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n.run(scratch, "install", "--offline", "--no-save", "--loglevel=error", tarball)
	for _, dep := range []string{"react", "react-test-renderer"} {
		if err := os.Symlink(filepath.Join(webDir, "node_modules", dep), filepath.Join(scratch, "node_modules", dep)); err != nil {
			t.Fatal(err)
		}
	}
	testDir := filepath.Join(scratch, "test")
	if err := os.MkdirAll(testDir, 0o755); err != nil {
		t.Fatal(err)
	}
	srcs, _ := filepath.Glob(filepath.Join(webDir, "test", "package", "*.test.js"))
	if len(srcs) == 0 {
		t.Fatal("no broadcast/web/test/package/*.test.js")
	}
	for _, src := range append(srcs, filepath.Join(webDir, "test", "harness.js")) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(testDir, filepath.Base(src)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, src := range srcs {
		tests = append(tests, filepath.Join("test", filepath.Base(src)))
	}
	return scratch, tests
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
