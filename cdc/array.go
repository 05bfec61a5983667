package cdc

import (
	"bytes"
)

// arrayConv returns a conv for an array type whose elements convert with
// elem. PostgreSQL writes arrays as {a,b,"c d",NULL}, nested for more
// dimensions, optionally prefixed with bounds ("[0:1]={1,2}").
func arrayConv(elem conv, delim byte) conv {
	return func(dst, text []byte) []byte {
		p := arrayParser{s: text, delim: delim, elem: elem}
		if i := bytes.IndexByte(p.s, '='); i >= 0 && len(p.s) > 0 && p.s[0] == '[' {
			p.s = p.s[i+1:]
		}
		out, ok := p.array(dst)
		if !ok || p.i != len(p.s) {
			return convString(dst, text)
		}
		return out
	}
}

type arrayParser struct {
	s     []byte
	i     int
	delim byte
	elem  conv
	buf   []byte
	depth int
}

func (p *arrayParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

// array parses one {…} level, appending its JSON to dst.
func (p *arrayParser) array(dst []byte) ([]byte, bool) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 8 || p.i >= len(p.s) || p.s[p.i] != '{' {
		return dst, false
	}
	p.i++
	dst = append(dst, '[')
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return append(dst, ']'), true
	}
	for n := 0; ; n++ {
		if n > 0 {
			dst = append(dst, ',')
		}
		p.skipSpace()
		if p.i >= len(p.s) {
			return dst, false
		}
		var ok bool
		switch p.s[p.i] {
		case '{':
			dst, ok = p.array(dst)
		case '"':
			dst, ok = p.quoted(dst)
		default:
			dst, ok = p.bare(dst)
		}
		if !ok {
			return dst, false
		}
		p.skipSpace()
		if p.i >= len(p.s) {
			return dst, false
		}
		switch p.s[p.i] {
		case p.delim:
			p.i++
		case '}':
			p.i++
			return append(dst, ']'), true
		default:
			return dst, false
		}
	}
}

func (p *arrayParser) quoted(dst []byte) ([]byte, bool) {
	p.i++ // opening quote
	p.buf = p.buf[:0]
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch c {
		case '\\':
			if p.i+1 >= len(p.s) {
				return dst, false
			}
			p.buf = append(p.buf, p.s[p.i+1])
			p.i += 2
		case '"':
			p.i++
			return p.elem(dst, p.buf), true
		default:
			p.buf = append(p.buf, c)
			p.i++
		}
	}
	return dst, false
}

func (p *arrayParser) bare(dst []byte) ([]byte, bool) {
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' && p.s[p.i] != '{' && p.s[p.i] != '"' {
		p.i++
	}
	v := bytes.TrimSpace(p.s[start:p.i])
	if len(v) == 0 {
		return dst, false
	}
	if len(v) == 4 && bytes.EqualFold(v, []byte("NULL")) {
		return append(dst, "null"...), true
	}
	return p.elem(dst, v), true
}
