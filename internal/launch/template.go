package launch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// templateFormat changes whenever initdbArgs or the template's layout
// changes, so an old cached template is not reused by mistake.
const templateFormat = "1"

// initdbArgs make a cluster whose superuser is "postgres" and where every
// local connection is trusted, so no password is needed. --no-sync because
// nothing here needs to survive a power loss, and it saves seconds.
var initdbArgs = []string{"-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"}

// pgShared is what every cluster in this process has in common.
type pgShared struct {
	bins  pgBinaries
	owner owner
	base  string   // folder that holds the clusters made from the template
	bases []string // every folder where earlier runs may have left clusters; the last is on disk

	templateOnce sync.Once
	template     string // initdb's output, copied for every new cluster
	templateErr  error

	sweptMu sync.Mutex
	swept   map[string]bool // cluster name prefixes already swept
}

var (
	pgSharedOnce sync.Once
	pgSharedVal  *pgShared
	pgSharedErr  error
)

// sharedPG finds the programs and the owner, once per process. A failure is remembered, so every caller that wants a cluster
// fails with the same message instead of retrying a slow initdb.
func sharedPG() (*pgShared, error) {
	pgSharedOnce.Do(func() {
		pgSharedVal, pgSharedErr = setupPG()
	})
	return pgSharedVal, pgSharedErr
}

func setupPG() (*pgShared, error) {
	bins, err := findPGBinaries()
	if err != nil {
		return nil, err
	}
	o, err := lookupPGOwner()
	if err != nil {
		return nil, err
	}
	s := &pgShared{bins: bins, owner: o, swept: map[string]bool{}}
	s.base, s.bases = pgBaseDirs(o)
	for _, dir := range s.bases {
		s.sweepAbandoned(dir, "walcast-testenv-initdb-")
	}
	return s, nil
}

// templateDir makes the template the first time a cluster is copied from
// it in this process; a failure is remembered.
func (s *pgShared) templateDir() (string, error) {
	s.templateOnce.Do(func() {
		s.template, s.templateErr = s.ensureTemplate()
	})
	return s.template, s.templateErr
}

// initdb makes a new cluster in the empty folder dir.
func (s *pgShared) initdb(dir string) error {
	cmd := exec.Command(s.bins.initdb, append([]string{"-D", dir}, initdbArgs...)...)
	cmd.Dir = dir // initdb complains when it cannot read its working directory
	cmd.SysProcAttr = procAttr(s.owner)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// ensureTemplate returns a folder holding a freshly initdb'ed cluster that is
// never started. It is cached on disk, named after a hash of everything that
// shapes it, because a cached one is what makes StartPostgres fast: test
// binaries of different packages run in parallel and would each pay for
// initdb, and a per-process template could never be removed (a package has no
// hook that runs when the process exits). The one cached folder is reused by
// every later run with the same PostgreSQL.
func (s *pgShared) ensureTemplate() (string, error) {
	out, err := exec.Command(s.bins.postgres, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", s.bins.postgres, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%d\n", templateFormat, s.bins.initdb, out, strings.Join(initdbArgs, " "), s.owner.uid)
	final := filepath.Join(s.base, "walcast-testenv-pgtemplate-"+hex.EncodeToString(h.Sum(nil))[:16])

	if ok, err := s.usableTemplate(final); err != nil || ok {
		return final, err
	}

	// initdb into a private folder and rename it into place: a rename is
	// atomic, so another process sees either no template or a complete
	// one, and when two race, the loser's rename fails and it uses the
	// winner's.
	tmp, err := os.MkdirTemp(s.base, "walcast-testenv-initdb-")
	if err != nil {
		return "", fmt.Errorf("make template folder: %w", err)
	}
	if err := s.owner.chown(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("make template folder: %w", err)
	}
	if err := s.initdb(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		if ok, err2 := s.usableTemplate(final); err2 != nil || !ok {
			return "", fmt.Errorf("move template into place: %w", errors.Join(err, err2))
		}
	}
	return final, nil
}

// usableTemplate reports whether dir holds a finished template. A folder of
// that name that is not ours (another owner, a symlink) is refused rather
// than copied: someone else could have planted it in the shared temp folder.
func (s *pgShared) usableTemplate(dir string) (bool, error) {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if uid, ok := fileUID(fi); !fi.IsDir() || !ok || uid != s.owner.uid {
		return false, fmt.Errorf("cached PostgreSQL template %s is not a folder owned by uid %d; remove it", dir, s.owner.uid)
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		return false, fmt.Errorf("cached PostgreSQL template %s is incomplete; remove it: %w", dir, err)
	}
	return true, nil
}

// copyTemplate copies the template's contents into dst. cp -a keeps the
// owner and the 0700 mode PostgreSQL insists on, and is faster than anything
// we would write here.
func (s *pgShared) copyTemplate(dst string) error {
	template, err := s.templateDir()
	if err != nil {
		return err
	}
	out, err := exec.Command("cp", "-a", template+"/.", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy template %s: %w\n%s", template, err, out)
	}
	return nil
}

// abandonedAge is how old a cluster folder must be before another process
// may remove it. It is far longer than any test run (make test stops at 9
// minutes), so a folder that old whose server is gone belongs to a run that is
// over.
const abandonedAge = time.Hour

// sweepOnce sweeps the folders named with prefix the first time a cluster of
// that name is made in this process.
func (s *pgShared) sweepOnce(prefix string) {
	s.sweptMu.Lock()
	defer s.sweptMu.Unlock()
	if s.swept[prefix] {
		return
	}
	s.swept[prefix] = true
	for _, dir := range s.bases {
		s.sweepAbandoned(dir, prefix)
	}
}

// sweepAbandoned removes cluster folders under base named with prefix that
// were left behind by processes that died without cleaning up, such as a
// test binary stopped by -timeout: the kernel killed their servers (the
// parent-death signal), but nothing removed the folders, 40 MB each. A folder
// is only removed when it is old, ours, and no process works in it.
func (s *pgShared) sweepAbandoned(base, prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(base, prefix+"*"))
	for _, dir := range dirs {
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < abandonedAge {
			continue
		}
		if uid, ok := fileUID(fi); !ok || uid != s.owner.uid {
			continue
		}
		if len(processesIn(dir)) == 0 {
			os.RemoveAll(dir)
		}
	}
}
