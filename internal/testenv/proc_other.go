//go:build !linux

package testenv

import "syscall"

// serverProcAttr puts a server in its own process group. Only Linux can also
// have it killed when the test binary dies.
func serverProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}

// processesIn cannot find a data directory's processes without /proc; after a
// Kill, waiting for the port to be free is all that is left.
func processesIn(dir string) []int { return nil }

// fastTempDir finds no RAM-backed folder outside Linux.
func fastTempDir() string { return "" }
