package broadcast

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies reads --trusted-proxies: a comma-separated list of
// CIDR prefixes (10.0.0.0/8, fd00::/8) or single addresses (192.0.2.7).
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or a CIDR prefix like 10.0.0.0/8", item)
			}
			if p.Addr().Is4In6() {
				// ::ffff:10.0.0.0/104 is written as 10.0.0.0/8: peers are unmapped.
				if p.Bits() < 96 {
					return nil, fmt.Errorf("%q: an IPv4-mapped prefix must be at least /96", item)
				}
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or a CIDR prefix like 10.0.0.0/8", item)
		}
		a = a.Unmap().WithZone("")
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// clientAddr returns the address of the client behind r and its TCP peer.
// The peer is the client unless it is one of the trusted proxies: then
// X-Forwarded-For is read from the right, each proxy having appended the
// address it received the request from, and the client is the rightmost
// entry that is not itself a trusted proxy. Entries left of it were written
// by the client or by untrusted hops and are ignored, so a client cannot
// pick its own address. Only X-Forwarded-For is read, never Forwarded:
// reading both would let a client forge the one its proxy does not set.
// An entry that is not an address (a proxy writing "unknown") stops the
// walk at the trusted hop to its right, which is then taken as the client.
func clientAddr(r *http.Request, trusted []netip.Prefix) (client, peer netip.Addr) {
	peer = peerAddr(r.RemoteAddr)
	if len(trusted) == 0 || !isTrusted(peer, trusted) {
		return peer, peer
	}
	client = peer
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		rest := values[i]
		for rest != "" {
			entry := rest
			if j := strings.LastIndexByte(rest, ','); j >= 0 {
				entry, rest = rest[j+1:], rest[:j]
			} else {
				rest = ""
			}
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			a, ok := parseForwarded(entry)
			if !ok {
				return client, peer
			}
			client = a
			if !isTrusted(a, trusted) {
				return client, peer
			}
		}
	}
	// Every hop was a trusted proxy: the leftmost is as close to the
	// client as the header gets.
	return client, peer
}

// parseForwarded reads one X-Forwarded-For entry: an address, possibly
// with a port (192.0.2.1:5000, [2001:db8::1]:5000).
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}

// peerAddr parses http.Request.RemoteAddr; the zero Addr when it is not an
// IP address and port.
func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
