//go:build unix

package broadcast

import (
	"errors"
	"syscall"
)

// canWriteRaw: this platform's descriptors take syscall.Write.
const canWriteRaw = true

// rawWrite writes c.wb once, without waiting for the socket (it is
// non-blocking under Go's poller): EAGAIN is a write of nothing. It
// returns true so that RawConn.Write never waits either.
func (c *batchConn) rawWrite(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), c.wb)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			c.wn = 0
		case err != nil:
			c.wn, c.werr = 0, err
		default:
			c.wn = n
		}
		return true
	}
}
