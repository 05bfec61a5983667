package launch

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// procAttr puts a server in its own process group, so a Ctrl-C meant for the
// parent does not reach it before the parent can shut it down; runs it as o
// when o is another user; and asks the kernel to SIGKILL it if the parent
// dies without cleaning up (a panic, a test -timeout). Go sets the
// parent-death signal after switching user, so the switch does not clear it.
func procAttr(o owner) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: credential(o),
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
}

// processesIn returns the pids of live processes whose working directory is
// dir. PostgreSQL's postmaster changes into its data directory and every
// backend inherits that, while each backend also makes itself a process-group
// leader; so the working directory, not the group or the parent, is what finds
// the backends a killed postmaster left behind. Zombies have no working
// directory and are not counted; processes of other users we may not inspect
// are skipped.
func processesIn(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && cwd == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

// fastTempDir returns /dev/shm when it is a tmpfs with at least 2 GiB free,
// enough for dozens of clusters at once, else "".
func fastTempDir() string {
	const dir = "/dev/shm"
	const tmpfsMagic = 0x01021994
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Type != tmpfsMagic {
		return ""
	}
	if uint64(st.Bavail)*uint64(st.Bsize) < 2<<30 {
		return ""
	}
	return dir
}
