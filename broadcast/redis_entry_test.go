package broadcast

import (
	"context"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/testenv"
	"github.com/walcast/walcast/schema"
)

// newEntry returns m as the append script stores it: the header, the
// frame, and the left frame or a dashboard's type and key when m has them.
func newEntry(m *schema.Message) redis.XMessage {
	v := map[string]any{fieldHeader: string(appendHeader(nil, m)), fieldJSON: string(m.JSON), fieldAdminOnly: "1"}
	if len(m.LeftJSON) > 0 {
		v[fieldLeftJSON] = string(m.LeftJSON)
	}
	if m.DashboardKey != "" {
		v[fieldType], v[fieldDashboard] = m.Type, m.DashboardKey
	}
	return redis.XMessage{ID: m.Pos.String(), Values: v}
}

// oldEntry returns m's fields as walcast wrote them before the header.
func oldEntry(m *schema.Message) map[string]any {
	v := map[string]any{fieldJSON: string(m.JSON), fieldType: m.Type}
	if m.HasCommittee {
		v[fieldCommittee] = strconv.FormatInt(m.Committee, 10)
	}
	if m.HasOwner {
		v[fieldOwner] = strconv.FormatInt(m.Owner, 10)
	}
	if m.AdminOnly {
		v[fieldAdminOnly] = "1"
	}
	if m.DashboardKey != "" {
		v[fieldDashboard] = m.DashboardKey
	}
	if r := m.Row; r != nil {
		v[fieldRowOp], v[fieldRowTable] = rowOpCode(r), r.Table
		if r.Key != "" {
			v[fieldRowKey] = r.Key
		}
		if r.OldKey != "" {
			v[fieldRowOldKey] = r.OldKey
		}
		if len(r.Unchanged) > 0 {
			v[fieldRowUnchanged] = luaNames(r.Unchanged)
		}
	}
	if l := m.Left; l != nil {
		v[fieldLeftScope] = string(appendLeftScope(nil, l))
		v[fieldLeftJSON] = string(m.LeftJSON)
	}
	return v
}

// entryMessages are messages of every kind an entry carries.
func entryMessages() []schema.Message {
	p := func(l, s uint64) schema.Position { return schema.Position{LSN: l, Seq: s} }
	row := func(table, key string) *schema.RowRef {
		return &schema.RowRef{Table: table, Key: key, Op: schema.RowUpsert, Data: []byte(`{"id":7}`)}
	}
	return []schema.Message{
		{Pos: p(10, 0), Type: schema.TypeGuarantee, Committee: 3, HasCommittee: true, Owner: 12, HasOwner: true,
			JSON: []byte(`{"id":"10-0","data":{"id":7}}`), Row: row("public.guarantee", "[7]")},
		{Pos: p(10, 1), Type: schema.TypeVoting, JSON: []byte(`{"election-wide":true}`)},
		{Pos: p(10, 2), Type: schema.TypeAttendance, AdminOnly: true, JSON: []byte(`{"unplaced":true}`)},
		{Pos: p(10, 3), Type: schema.TypeDashboard, DashboardKey: "supervisor:3", Committee: 3, HasCommittee: true,
			JSON: []byte(`{"type":"dashboard_update"}`)},
		{Pos: p(11, 0), Type: schema.TypeGuarantee, Owner: 9007199254740993, HasOwner: true, JSON: []byte(`{"moved":true}`),
			Left: &schema.Scope{Committee: 4, HasCommittee: true}, LeftJSON: []byte(`{"left":true}`),
			Row: &schema.RowRef{Table: "public.guarantee", Key: `["a b"]`, OldKey: `["a"]`, Op: schema.RowUpsert,
				Data: []byte(`{}`), Unchanged: []string{"notes", "x\ny"}, Oversized: true}},
		{Pos: p(11, 1), Type: "announcement_update", Committee: -5, HasCommittee: true, JSON: []byte(`{}`),
			Row: &schema.RowRef{Table: "odd\n\"schema\".t", Key: "[1]", Op: schema.RowDelete}},
		{Pos: p(11, 2), Type: schema.TypeGuarantee, JSON: []byte(`{}`), Row: &schema.RowRef{Table: "public.guarantee", Op: schema.RowClear}},
	}
}

// What matters of a decoded message: the stream does not keep why a
// message is unroutable, nor its row.
func entryView(m *schema.Message) schema.Message {
	v := *m
	v.Unroutable, v.Row = "", nil
	return v
}

// Every message reads back as it was appended, from an entry of either
// format.
func TestStreamEntryRoundTrip(t *testing.T) {
	for _, m := range entryMessages() {
		for _, format := range []string{"header", "fields"} {
			x := newEntry(&m)
			if format == "fields" {
				x = redis.XMessage{ID: m.Pos.String(), Values: oldEntry(&m)}
			}
			got, err := fromEntry(x)
			if err != nil {
				t.Fatalf("%s %s: %v", m.Pos, format, err)
			}
			if want := entryView(&m); !reflect.DeepEqual(entryView(got), want) {
				t.Errorf("%s %s: read %+v, want %+v (header %q)", m.Pos, format, entryView(got), want, x.Values[fieldHeader])
			}
		}
	}
}

// A header that is there but cannot be read (another version, damaged,
// not a string) makes the entry admin-only, never election-wide; an entry
// without a frame is not walcast's, and an error.
func TestStreamEntryHeaderFailsClosed(t *testing.T) {
	good := string(appendHeader(nil, &entryMessages()[0]))
	cases := []struct {
		name   string
		header any
		admin  bool
		typ    string
	}{
		{"good", good, false, schema.TypeGuarantee},
		{"election-wide", "v1\n\n\n\nvoting_update\n\n\n\n\n\n", false, schema.TypeVoting},
		{"another version", strings.Replace(good, "v1", "v2", 1), true, ""},
		{"no version", strings.TrimPrefix(good, "v1\n"), true, ""},
		{"empty", "", true, ""},
		{"not a string", int64(1), true, ""},
		{"scope only", "v1\n\n\n\nvoting_update\n\n", true, ""},
		{"row lines cut", "v1\n\n\n\nvoting_update\n\n\n\n\n", true, ""},
		{"committee 3.00", "v1\n3.00\n\n\nvoting_update\n\n\n\n\n\n", true, schema.TypeVoting},
		{"committee out of range", "v1\n9223372036854775808\n\n\nvoting_update\n\n\n\n\n\n", true, schema.TypeVoting},
		{"owner text", "v1\n\nsomeone\n\nvoting_update\n\n\n\n\n\n", true, schema.TypeVoting},
		{"unknown flag", "v1\n3\n\nx\nvoting_update\n\n\n\n\n\n", true, schema.TypeVoting},
		{"badly quoted type", "v1\n\n\n\n\"voting\n\n\n\n\n\n", true, ""},
		{"crlf", strings.ReplaceAll(good, "\n", "\r\n"), true, ""},
	}
	member := &Principal{UserID: 12, HasUser: true, Role: "user", Committees: map[int64]bool{3: true}}
	for _, c := range cases {
		m, err := fromEntry(redis.XMessage{ID: "5-1", Values: map[string]any{fieldHeader: c.header, fieldJSON: `{}`}})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if m.AdminOnly != c.admin || m.Type != c.typ {
			t.Errorf("%s: admin-only %v, type %q; want %v, %q", c.name, m.AdminOnly, m.Type, c.admin, c.typ)
		}
		if c.admin && member.Allows(m) {
			t.Errorf("%s: a regular user may receive an entry whose header is unreadable", c.name)
		}
	}
	if _, err := fromEntry(redis.XMessage{ID: "5-2", Values: map[string]any{fieldHeader: good}}); err == nil {
		t.Error("an entry without a frame was read")
	}
}

// A walcast that reads entries as before the header (a serve replica
// not yet upgraded) reads every entry of the header's format as
// admin-only, never as election-wide; this version ignores that flag.
func TestStreamEntryFailsClosedForEarlierReaders(t *testing.T) {
	rd := testenv.StartRedis(t)
	bus := newTestRedisBus(t, rd.URL(), 100)
	ms := entryMessages()
	if err := bus.Append(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	stored, err := bus.rdb.XRange(context.Background(), bus.key, "-", "+").Result()
	if err != nil || len(stored) != len(ms) {
		t.Fatalf("read back %d entries, %v", len(stored), err)
	}
	for i, x := range stored {
		var before schema.Message
		decodeFields(x.Values, &before)
		if !before.AdminOnly {
			t.Errorf("entry %s reads as %+v to a reader without the header", x.ID, before)
		}
		if got, err := fromEntry(x); err != nil || got.AdminOnly != ms[i].AdminOnly {
			t.Errorf("entry %s: admin-only %v, %v; want %v", x.ID, got.AdminOnly, err, ms[i].AdminOnly)
		}
	}
}

// FuzzStreamHeader: no header makes the reader panic, a header it reads
// as not admin-only is of this version with readable scope lines, and
// every message's header reads back as written.
func FuzzStreamHeader(f *testing.F) {
	for _, m := range entryMessages() {
		f.Add(string(appendHeader(nil, &m)), int64(m.Committee), m.AdminOnly, "public.t")
	}
	f.Add("v1\n\n\n\n\n\n\n\n\n\n", int64(0), false, "")
	f.Fuzz(func(t *testing.T, h string, id int64, admin bool, table string) {
		var m schema.Message
		decodeHeader(h, "", &m)
		if !m.AdminOnly {
			lines := strings.Split(h, "\n")
			if len(lines) < headerLines || lines[0] != headerVersion || lines[3] != "" {
				t.Fatalf("header %q read as not admin-only", h)
			}
			for _, id := range lines[1:3] {
				if _, _, bad := entryID(id); bad {
					t.Fatalf("header %q: unreadable committee or owner read as not admin-only", h)
				}
			}
		}
		in := schema.Message{Type: "custom_update", Committee: id, HasCommittee: true, AdminOnly: admin,
			Row: &schema.RowRef{Table: table, Key: "[1]", Op: schema.RowUpsert}}
		var out schema.Message
		decodeHeader(string(appendHeader(nil, &in)), "", &out)
		if out.Committee != id || !out.HasCommittee || out.AdminOnly != admin || out.Type != in.Type {
			t.Fatalf("%+v read back as %+v", in, out)
		}
	})
}

// A stream written by the previous version and then by this one reads as
// one history: Since, Preload, the follower and the live state's replay
// read the entries of both formats.
func TestRedisReadsEntriesOfBothFormats(t *testing.T) {
	ctx := context.Background()
	rd := testenv.StartRedis(t)
	log := &lockedLog{}
	bus, err := NewRedisBus(RedisConfig{URL: rd.URL(), History: 1000, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
		t.Fatal(err)
	}
	hub := NewHub(1000)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = bus.Follow(ctx, hub) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "the follower starts", func() bool { return log.has("following stream") })

	dash := func(l uint64, key string) schema.Message {
		return schema.Message{Pos: schema.Position{LSN: l, Seq: 1}, Type: schema.TypeDashboard, DashboardKey: key,
			Owner: int64(l), HasOwner: true, JSON: []byte(`{"type":"dashboard_update"}`)}
	}
	old := []schema.Message{rowMsg(pos(1), "u", "[1]", `{"id":1,"v":"old"}`, 3), rowMsg(pos(2), "u", "[2]", `{"id":2}`, 0),
		dash(2, "personal:2"), rowMsg(pos(3), "d", "[2]", "", 4)}
	for i := range old {
		// As the previous version's script wrote them.
		if err := bus.rdb.XAdd(ctx, &redis.XAddArgs{Stream: bus.key, ID: old[i].Pos.String(), Values: oldEntry(&old[i])}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the old entries published", func() bool { return hub.Stats().Published == 4 })
	cur := []schema.Message{rowMsg(pos(4), "u", "[1]", `{"id":1,"v":"new"}`, 5), dash(4, "personal:4"), rowMsg(pos(5), "u", "[5]", `{"id":5}`, 0)}
	if err := bus.Append(ctx, cur); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new entries published", func() bool { return hub.Stats().Published == 7 })
	keys := func(ms []*schema.Message) (out []string) {
		for _, m := range ms {
			out = append(out, m.DashboardKey)
		}
		slices.Sort(out)
		return out
	}
	if got := keys(hub.Dashboards()); !slices.Equal(got, []string{"personal:2", "personal:4"}) {
		t.Errorf("the follower's dashboards: %v", got)
	}

	all := append(slices.Clone(old), cur...)
	got, err := bus.Since(ctx, schema.Position{}, 100)
	if err != nil || len(got) != len(all) {
		t.Fatalf("Since: %d messages, %v; want %d", len(got), err, len(all))
	}
	for i := range all {
		if want := entryView(&all[i]); !reflect.DeepEqual(entryView(got[i]), want) {
			t.Errorf("Since: entry %d read %+v, want %+v", i, entryView(got[i]), want)
		}
	}
	replica := newTestRedisBus(t, rd.URL(), 1000)
	if err := replica.Preload(ctx, NewHub(1000)); err != nil {
		t.Fatal(err)
	}

	// Rebuilt from the stream: the replay reads both formats.
	if err := bus.LoadState(ctx, schema.Position{}, []string{testTable}, noRows); err != nil {
		t.Fatal(err)
	}
	rows, _ := readRows(t, bus, testTable)
	want := map[string]string{testTable + " [1]": `4-0 {"id":1,"v":"new"}`, testTable + " [5]": `5-0 {"id":5}`}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("state rebuilt from both formats: %v, want %v", rows, want)
	}
}

// BenchmarkStreamEntryEncode measures the append path's arguments for a
// chunk of changes (header, row record, pointers): allocations are per
// chunk of 256, not per message.
//
//	go test ./broadcast -run '^$' -bench StreamEntry -benchmem
func BenchmarkStreamEntryEncode(b *testing.B) {
	msgs := make([]schema.Message, appendChunk)
	for i := range msgs {
		msgs[i] = guaranteeMsg(schema.Position{LSN: 1000, Seq: uint64(i)}, i+1)
	}
	b.ReportAllocs()
	for b.Loop() {
		a := newEntryArgs(len(msgs), int64(100000), "", 100000, "off")
		for i := range msgs {
			a.message(&msgs[i])
		}
		_ = a.resolve()
		a.release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/msg")
}

// BenchmarkStreamEntryDecode measures the follower's decoding of an
// entry, in each format.
func BenchmarkStreamEntryDecode(b *testing.B) {
	m := guaranteeMsg(schema.Position{LSN: 1000, Seq: 1}, 7)
	for _, c := range []struct {
		name string
		x    redis.XMessage
	}{{"header", newEntry(&m)}, {"fields", redis.XMessage{ID: m.Pos.String(), Values: oldEntry(&m)}}} {
		b.Run(c.name, func(b *testing.B) {
			var pack jsonPack
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeEntry(c.x, &pack); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
