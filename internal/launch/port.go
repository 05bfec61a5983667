package launch

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// givenPorts remembers every port FreePort handed out in this process. The
// kernel may offer a just-closed port again, and two servers started at once
// must not be told to use the same one.
var (
	givenPortsMu sync.Mutex
	givenPorts   = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and has
// not been returned before in this process. Another program can still take it
// before it is used; StartPostgres and StartRedis retry with a new port when
// their first start fails that way.
func FreePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		givenPortsMu.Lock()
		fresh := !givenPorts[port]
		givenPorts[port] = true
		givenPortsMu.Unlock()
		if fresh {
			return port, nil
		}
	}
	return 0, errors.New("find a free port: the kernel kept offering ports already handed out")
}

// portFree reports whether nothing listens on 127.0.0.1:port any more, so a
// restarted server can bind it again.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
