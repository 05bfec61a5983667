package launch

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// owner is the operating-system user that owns and runs a cluster.
type owner struct {
	uid, gid int
	// other is true when that user is not ourselves, so children switch
	// to it at exec (see procAttr).
	other bool
}

// lookupPGOwner decides who runs PostgreSQL. initdb and postgres refuse to
// run as root, and CI runs tests as root, so then the "postgres" system user
// (which the Debian package creates) runs them. The switch is made by the
// kernel at exec (SysProcAttr.Credential) rather than by `runuser`, because
// runuser stays behind as the parent of the server: SIGKILL sent to it would
// not crash the server.
func lookupPGOwner() (owner, error) {
	if os.Geteuid() != 0 {
		return owner{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return owner{}, fmt.Errorf("PostgreSQL refuses to run as root and there is no %q system user to run it as (%v); "+
			"`apt-get install postgresql` creates it, or `useradd --system postgres`", "postgres", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return owner{}, fmt.Errorf("user postgres: %w", err)
	}
	return owner{uid: uid, gid: gid, other: true}, nil
}

// self is the owner of children that run as ourselves.
func self() owner { return owner{uid: os.Geteuid(), gid: os.Getegid()} }

// chown gives path to the owner; a no-op when we are the owner already.
func (o owner) chown(path string) error {
	if !o.other {
		return nil
	}
	return os.Chown(path, o.uid, o.gid)
}

// pgBaseDirs returns where clusters and the template go, and every folder
// where earlier runs may have left clusters behind.
//
// A RAM-backed folder (/dev/shm) is preferred when it has room to spare:
// copying the template is about a thousand small files, and creating files is
// what disks in CI virtual machines are slow at (0.4 s per cluster on ext4
// against 0.04 s on tmpfs in one trial). Docker's default /dev/shm of 64 MB is
// too small and is not used.
//
// Otherwise os.TempDir. When we run as root and another user runs the server,
// every folder above the data directory must be enterable by that user; TMPDIR
// may point somewhere private to root, and then /tmp is used instead.
func pgBaseDirs(o owner) (base string, all []string) {
	temp := os.TempDir()
	if o.other && !worldEnterable(temp) {
		temp = "/tmp"
	}
	fast := fastTempDir()
	switch {
	case fast == "":
		return temp, []string{temp}
	case o.other && !worldEnterable(fast):
		return temp, []string{temp}
	default:
		return fast, []string{fast, temp}
	}
}

// worldEnterable reports whether every folder from / down to dir has the
// execute bit for others.
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
