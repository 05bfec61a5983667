//go:build !unix

package launch

import (
	"os"
	"syscall"
)

// procAttr has nothing to set where there are no process groups or users to
// switch to: the servers run as ordinary children.
func procAttr(owner) *syscall.SysProcAttr { return nil }

// processesIn cannot find a data directory's processes here; after a Kill,
// waiting for the port to be free is all that is left.
func processesIn(dir string) []int { return nil }

// fastTempDir finds no RAM-backed folder here.
func fastTempDir() string { return "" }

// fileUID cannot tell a file's owner here; every file counts as ours.
func fileUID(os.FileInfo) (int, bool) { return os.Geteuid(), true }
