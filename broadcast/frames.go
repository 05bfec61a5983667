package broadcast

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/walcast/walcast/internal/jsonx"
	"github.com/walcast/walcast/schema"
)

// MaxClientFrame is the largest frame a client may send; larger ones close
// the connection with 1009 (message too big).
const MaxClientFrame = 64 << 10

// clientFrame is any frame a client sends.
type clientFrame struct {
	Type       string   `json:"type"`
	Types      []string `json:"types"`
	Committees []int64  `json:"committees"`
	Since      string   `json:"since"`
	Token      string   `json:"token"`
	Viewing    *string  `json:"viewing"`
	Target     string   `json:"target"`
}

// frameError is a client mistake answered with an error frame; the
// connection stays open.
type frameError struct {
	code, message string
}

func (e *frameError) Error() string { return e.code + ": " + e.message }

var knownTypes = map[string]bool{
	schema.TypeGuarantee: true, schema.TypeAttendance: true,
	schema.TypeVoting: true, schema.TypeDashboard: true,
}

// parseClientFrame decodes and validates one client frame, knowing only
// the built-in message types.
func parseClientFrame(b []byte) (clientFrame, error) { return parseFrame(b, nil) }

// parseFrame decodes and validates one client frame; custom holds the
// message types of custom tables (ServerConfig.MessageTypes), which a
// subscription may name too.
func parseFrame(b []byte, custom map[string]bool) (clientFrame, error) {
	var f clientFrame
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&f); err != nil {
		return f, &frameError{"bad_frame", "frame is not a JSON object of the protocol: " + err.Error()}
	}
	if dec.More() {
		return f, &frameError{"bad_frame", "frame has data after its JSON object"}
	}
	switch f.Type {
	case "ping":
	case "subscribe":
		for _, t := range f.Types {
			if !knownTypes[t] && !custom[t] {
				return f, &frameError{"bad_subscribe", fmt.Sprintf("unknown message type %q", t)}
			}
		}
	case "sync":
		for _, t := range f.Types {
			if !knownTypes[t] && !custom[t] {
				return f, &frameError{"bad_sync", fmt.Sprintf("unknown message type %q", t)}
			}
		}
	case "resume":
		if _, err := schema.ParsePosition(f.Since); err != nil {
			return f, &frameError{"bad_position", fmt.Sprintf("since %q is not a message id", f.Since)}
		}
	case "auth":
		if f.Token == "" {
			return f, &frameError{"bad_auth", "auth frame without a token"}
		}
	case "presence":
		if f.Viewing != nil && len(*f.Viewing) > MaxPresenceText {
			return f, &frameError{"bad_presence", fmt.Sprintf("viewing is longer than %d bytes", MaxPresenceText)}
		}
	case "typing":
		if f.Target == "" || len(f.Target) > MaxPresenceText {
			return f, &frameError{"bad_typing", fmt.Sprintf("typing needs a target of 1 to %d bytes", MaxPresenceText)}
		}
	case "":
		return f, &frameError{"bad_frame", `frame has no "type"`}
	default:
		return f, &frameError{"unknown_type", fmt.Sprintf("unknown frame type %q", f.Type)}
	}
	return f, nil
}

func errorFrame(code, message string) []byte {
	b := []byte(`{"type":"error","code":`)
	b = jsonx.AppendString(b, code)
	b = append(b, `,"message":`...)
	b = jsonx.AppendString(b, message)
	return append(b, '}')
}

func welcomeFrame(head schema.Position) []byte {
	b := []byte(`{"type":"welcome","position":"`)
	b = head.Append(b)
	return append(b, `"}`...)
}

// resyncFrame tells the client to refetch. at, when known, is the position
// the connection continues from: what follows on it comes after at, and a
// client that reconnects before anything arrives resumes from there.
func resyncFrame(reason string, at *schema.Position) []byte {
	b := []byte(`{"type":"resync_required","reason":`)
	b = jsonx.AppendString(b, reason)
	if at != nil {
		b = append(b, `,"position":"`...)
		b = at.Append(b)
		b = append(b, '"')
	}
	return append(b, '}')
}

var pongFrame = []byte(`{"type":"pong"}`)

// subscribedFrame reports the effective subscription; nil means "all".
func subscribedFrame(f *filter) []byte {
	b := []byte(`{"type":"subscribed","types":`)
	if f == nil || f.types == nil {
		b = append(b, "null"...)
	} else {
		b = jsonx.AppendStrings(b, slices.Sorted(maps.Keys(f.types)))
	}
	b = append(b, `,"committees":`...)
	if f == nil || f.committees == nil {
		b = append(b, "null"...)
	} else {
		// Not nil when empty: no committee is [], not null ("all").
		cs := slices.AppendSeq(make([]int64, 0, len(f.committees)), maps.Keys(f.committees))
		slices.Sort(cs)
		j, _ := json.Marshal(cs)
		b = append(b, j...)
	}
	return append(b, '}')
}

// narrow builds the subscription a subscribe frame asks for, limited to
// what the principal may see: it never widens delivery.
func narrow(p *Principal, f clientFrame) *filter {
	out := &filter{}
	if f.Types != nil {
		out.types = map[string]bool{}
		for _, t := range f.Types {
			out.types[t] = true
		}
	}
	if f.Committees != nil {
		out.committees = map[int64]bool{}
		for _, c := range f.Committees {
			if p.SeesCommittee(c) {
				out.committees[c] = true
			}
		}
	}
	return out
}

// narrowTo returns f without the committees p may not see, after an auth
// frame replaced the token the subscription was narrowed for: a committee
// the new token dropped is not kept, even though delivery also checks the
// token.
func (f *filter) narrowTo(p *Principal) *filter {
	out := &filter{types: f.types, committees: map[int64]bool{}}
	for c := range f.committees {
		if p.SeesCommittee(c) {
			out.committees[c] = true
		}
	}
	return out
}

var errSlow = errors.New("client too slow")
