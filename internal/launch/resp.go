package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Do sends one command to the server over a new connection and returns
// its answer: a string (simple or bulk), an int64, nil, or a []any of
// those; an error answer is an error. It authenticates first when the
// server was started with --requirepass. It is for setting servers up
// (cluster commands, INFO), not for load.
func (r *Redis) Do(ctx context.Context, args ...string) (any, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", r.Addr())
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", args[0], r.Addr(), err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if pass, ok := r.password(); ok {
		if _, err := conn.Write([]byte(respCommand("AUTH", pass))); err != nil {
			return nil, err
		}
		if _, err := readReply(br); err != nil {
			return nil, fmt.Errorf("AUTH at %s: %w", r.Addr(), err)
		}
	}
	if _, err := conn.Write([]byte(respCommand(args...))); err != nil {
		return nil, fmt.Errorf("%s at %s: %w", args[0], r.Addr(), err)
	}
	v, err := readReply(br)
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", strings.Join(args, " "), r.Addr(), err)
	}
	return v, nil
}

// DoString is Do for a command that answers a string.
func (r *Redis) DoString(ctx context.Context, args ...string) (string, error) {
	v, err := r.Do(ctx, args...)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s at %s answered %v, not a string", args[0], r.Addr(), v)
	}
	return s, nil
}

// readReply reads one RESP2 reply.
func readReply(br *bufio.Reader) (any, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply")
	}
	switch body := line[1:]; line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, errors.New(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(br); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unreadable reply %q", line)
}
