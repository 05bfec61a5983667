//go:build unix && !linux

package launch

import "syscall"

// procAttr puts a server in its own process group and runs it as o. Only
// Linux can also have it killed when the parent dies.
func procAttr(o owner) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: credential(o), Setpgid: true}
}

// processesIn cannot find a data directory's processes without /proc; after a
// Kill, waiting for the port to be free is all that is left.
func processesIn(dir string) []int { return nil }

// fastTempDir finds no RAM-backed folder outside Linux.
func fastTempDir() string { return "" }
