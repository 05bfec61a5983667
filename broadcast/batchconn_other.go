//go:build !unix

package broadcast

// canWriteRaw: elsewhere every write goes through net.Conn, waiting, on
// the slow path's goroutine.
const canWriteRaw = false

func (c *batchConn) rawWrite(fd uintptr) bool { return true }
