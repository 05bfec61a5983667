//go:build unix

package launch

import (
	"os"
	"syscall"
)

// credential switches a child to o, or is nil when o is ourselves. Groups is
// set so the server does not keep root's supplementary groups.
func credential(o owner) *syscall.Credential {
	if !o.other {
		return nil
	}
	return &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.gid), Groups: []uint32{uint32(o.gid)}}
}

// fileUID returns the user that owns the file fi describes.
func fileUID(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
