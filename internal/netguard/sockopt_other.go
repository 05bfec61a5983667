//go:build !linux

package netguard

import "syscall"

// setUserTimeout does nothing: TCP_USER_TIMEOUT is Linux's. Keepalive
// still applies where the platform supports its settings.
func setUserTimeout(c syscall.RawConn, ms int) error { return nil }
