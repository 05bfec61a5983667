package broadcast

import (
	"encoding/json"
	"testing"
)

func TestParseClientFrame(t *testing.T) {
	cases := []struct {
		in, code string
	}{
		{`{"type":"ping"}`, ""},
		{`{"type":"subscribe","types":["guarantee_update"],"committees":[3]}`, ""},
		{`{"type":"subscribe","types":["nope"]}`, "bad_subscribe"},
		{`{"type":"resume","since":"123-4"}`, ""},
		{`{"type":"resume","since":"yesterday"}`, "bad_position"},
		{`{"type":"auth","token":"x.y.z"}`, ""},
		{`{"type":"auth"}`, "bad_auth"},
		{`{"type":"dance"}`, "unknown_type"},
		{`{}`, "bad_frame"},
		{`not json`, "bad_frame"},
		{`{"type":"ping"} {"type":"ping"}`, "bad_frame"},
		{`{"type":"subscribe","committees":["3"]}`, "bad_frame"},
		{`{"type":"sync"}`, ""},
		{`{"type":"sync","types":["guarantee_update"],"committees":[3]}`, ""},
		{`{"type":"sync","types":["nope"]}`, "bad_sync"},
		{`{"type":"sync","committees":"all"}`, "bad_frame"},
	}
	for _, c := range cases {
		_, err := parseClientFrame([]byte(c.in))
		code := ""
		if fe, ok := err.(*frameError); ok {
			code = fe.code
		} else if err != nil {
			t.Errorf("%s: non-frame error %v", c.in, err)
		}
		if code != c.code {
			t.Errorf("%s: code %q, want %q", c.in, code, c.code)
		}
	}
}

// FuzzClientFrame: any bytes give a frame or a frameError, and the error
// frame sent back is valid JSON.
func FuzzClientFrame(f *testing.F) {
	for _, s := range []string{`{"type":"ping"}`, `{"type":"subscribe","types":["voting_update"],"committees":[1,2]}`, `{"type":"resume","since":"1-2"}`, `{"type":"auth","token":"a"}`,
		`{"type":"sync"}`, `{"type":"sync","types":["guarantee_update","attendance_update"],"committees":[3,-1]}`, `{"type":"sync","types":[]}`} {
		f.Add([]byte(s))
	}
	users := []*Principal{
		{Role: RoleAdmin},
		{UserID: 7, HasUser: true, Role: "user", Committees: map[int64]bool{1: true, 3: true}},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cf, err := parseClientFrame(b)
		if err == nil {
			// What the server answers a valid frame with is valid JSON,
			// and a subscription never widens what the token allows.
			for _, p := range users {
				sub := narrow(p, cf)
				if !json.Valid(subscribedFrame(sub)) {
					t.Fatalf("subscribed frame for %q is not JSON", b)
				}
				for c := range sub.committees {
					if p.Role != RoleAdmin && !p.Committees[c] {
						t.Fatalf("%q: subscription widened to committee %d", b, c)
					}
				}
			}
			return
		}
		fe, ok := err.(*frameError)
		if !ok {
			t.Fatalf("%q: %T %v", b, err, err)
		}
		if !json.Valid(errorFrame(fe.code, fe.message)) {
			t.Fatalf("error frame for %q is not JSON", b)
		}
	})
}

// The subscribed frame lists types and committees sorted; nil means all
// (null), and an empty set is an empty list, never null.
func TestSubscribedFrame(t *testing.T) {
	for _, tc := range []struct {
		f    *filter
		want string
	}{
		{nil, `{"type":"subscribed","types":null,"committees":null}`},
		{&filter{types: map[string]bool{"b": true, "a": true}, committees: map[int64]bool{9007199254740993: true, 2: true}},
			`{"type":"subscribed","types":["a","b"],"committees":[2,9007199254740993]}`},
		{&filter{types: map[string]bool{}, committees: map[int64]bool{}}, `{"type":"subscribed","types":[],"committees":[]}`},
	} {
		if got := string(subscribedFrame(tc.f)); got != tc.want {
			t.Errorf("subscribedFrame(%+v) = %s, want %s", tc.f, got, tc.want)
		}
	}
}
