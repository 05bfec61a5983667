package launch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// installHint tells the operator how to get a missing server: whoever cannot
// find one must be told something actionable.
func installHint(pkg string) string {
	return "install it with `apt-get install " + pkg + "` (Debian/Ubuntu) or your system's package, " +
		"or run `make deps`, which installs what is missing"
}

// pgBinaries are the absolute paths of the PostgreSQL programs launch runs.
type pgBinaries struct {
	initdb   string
	postgres string
}

// findPGBinaries looks on PATH first, then under /usr/lib/postgresql/*/bin,
// which is where Debian puts the server programs without linking them onto
// PATH. initdb and postgres must come from the same installation, because a
// cluster made by one major version will not start under another.
func findPGBinaries() (pgBinaries, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		// /usr/local/bin/initdb may be a symlink into a versioned bin
		// folder; its postgres sibling is the one that matches.
		dirs := []string{filepath.Dir(initdb)}
		if real, err := filepath.EvalSymlinks(initdb); err == nil {
			dirs = append([]string{filepath.Dir(real)}, dirs...)
		}
		for _, dir := range dirs {
			if pg := filepath.Join(dir, "postgres"); isExecutable(pg) {
				return pgBinaries{initdb: initdb, postgres: pg}, nil
			}
		}
		if pg, err := exec.LookPath("postgres"); err == nil {
			return pgBinaries{initdb: initdb, postgres: pg}, nil
		}
	}
	if dir := newestDebianPGBin("initdb", "postgres"); dir != "" {
		return pgBinaries{
			initdb:   filepath.Join(dir, "initdb"),
			postgres: filepath.Join(dir, "postgres"),
		}, nil
	}
	return pgBinaries{}, errors.New("PostgreSQL server programs (initdb, postgres) not found " +
		"on PATH or under /usr/lib/postgresql/*/bin; " + installHint("postgresql"))
}

// PGProgram finds a PostgreSQL program such as pg_recvlogical or postgres:
// beside the server programs StartPostgres runs, so that both come from one
// installation, else on PATH, else in the newest /usr/lib/postgresql/*/bin.
func PGProgram(name string) (string, error) {
	if bins, err := findPGBinaries(); err == nil {
		if p := filepath.Join(filepath.Dir(bins.postgres), name); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if dir := newestDebianPGBin(name); dir != "" {
		return filepath.Join(dir, name), nil
	}
	return "", fmt.Errorf("%s not found on PATH or under /usr/lib/postgresql/*/bin; %s", name, installHint("postgresql"))
}

// newestDebianPGBin returns the bin folder of the highest installed major
// version under /usr/lib/postgresql that has every one of programs, or "".
func newestDebianPGBin(programs ...string) string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	type candidate struct {
		dir     string
		version []int
	}
	var found []candidate
next:
	for _, dir := range matches {
		for _, prog := range programs {
			if !isExecutable(filepath.Join(dir, prog)) {
				continue next
			}
		}
		found = append(found, candidate{dir, parseVersion(filepath.Base(filepath.Dir(dir)))})
	}
	if len(found) == 0 {
		return ""
	}
	// Compare numerically: "9.6" is older than "15".
	sort.Slice(found, func(i, j int) bool {
		a, b := found[i].version, found[j].version
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return len(a) > len(b)
	})
	return found[0].dir
}

func parseVersion(s string) []int {
	var v []int
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			n = -1
		}
		v = append(v, n)
	}
	return v
}

// findRedisServer returns redis-server's path. Debian installs it in
// /usr/bin, but PATH may be trimmed under some runners, so the usual places
// are tried as well.
func findRedisServer() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"} {
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", errors.New("redis-server not found on PATH; " + installHint("redis-server"))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
