package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// Every PostgreSQL type the design lists reaches the client in its JSON
// form: integers and floats as numbers, numeric as a string, timestamptz
// as RFC 3339 with zone, date as YYYY-MM-DD, json/jsonb embedded, arrays as
// arrays, bytea as base64, NULL as null, enums and text as strings.
func TestColumnTypesRoundTripToJSON(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `
		CREATE TYPE mood AS ENUM ('happy', 'sad');
		CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 20);
		CREATE TABLE typed_row (
			id bigint PRIMARY KEY,
			committee_id int,
			small smallint, regular integer, big bigint,
			real4 real, double8 double precision, not_a_number double precision, infinite double precision,
			exact numeric(30,10), huge numeric,
			yes boolean, no boolean,
			words text, chars varchar(10), padded char(4), unicode text,
			at timestamptz, at_offset timestamptz, local_at timestamp, day date, far_future timestamptz,
			doc json, docb jsonb,
			ints integer[], texts text[], grid integer[][], empty_arr text[], nulls_arr integer[],
			blob bytea, nothing text,
			feeling mood, feelings mood[], id_uuid uuid, span interval, addr inet, note short_text
		);
		ALTER TABLE typed_row REPLICA IDENTITY FULL;`)
	app := startApp(t, testConfig(t, pg.URL(), "--tables", "typed_row=guarantee"))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")

	pg.Exec(t, `INSERT INTO typed_row VALUES (
		1, 3,
		-32768, 2147483647, 9223372036854775807,
		1.5, 0.1, 'NaN', '-Infinity',
		12345678901234567890.0123456789, 1e40,
		true, false,
		'say "hi"\n', 'vc', 'ab', 'héllo ✓ 🎉',
		'2026-11-25 12:00:00.123456+00', '2026-11-25 14:30:00+02:30', '2026-11-25 12:00:00', '2026-11-25', 'infinity',
		'{"a": [1, 2]}', '{"b": {"c": null}}',
		'{1,2,3}', '{"a b","c\"d",NULL,"NULL"}', '{{1,2},{3,4}}', '{}', '{NULL,1}',
		'\x00ff10', NULL,
		'happy', '{happy,sad}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 02:03:04', '192.168.0.1/24', 'short'
	)`)
	var frame struct{ Data map[string]json.RawMessage }
	if err := json.Unmarshal(c.changeRaw(t), &frame); err != nil {
		t.Fatal(err)
	}
	got := frame.Data
	want := map[string]string{
		"id": `1`, "committee_id": `3`,
		"small": `-32768`, "regular": `2147483647`, "big": `9223372036854775807`,
		"real4": `1.5`, "double8": `0.1`, "not_a_number": `"NaN"`, "infinite": `"-Infinity"`,
		"exact": `"12345678901234567890.0123456789"`, "huge": `"10000000000000000000000000000000000000000"`,
		"yes": `true`, "no": `false`,
		"words": `"say \"hi\"\\n"`, "chars": `"vc"`, "padded": `"ab  "`, "unicode": `"héllo ✓ 🎉"`,
		"at": `"2026-11-25T12:00:00.123456Z"`, "at_offset": `"2026-11-25T12:00:00Z"`, "local_at": `"2026-11-25T12:00:00"`,
		"day": `"2026-11-25"`, "far_future": `"infinity"`,
		"doc": `{"a": [1, 2]}`, "docb": `{"b": {"c": null}}`,
		"ints": `[1,2,3]`, "texts": `["a b","c\"d",null,"NULL"]`, "grid": `[[1,2],[3,4]]`, "empty_arr": `[]`, "nulls_arr": `[null,1]`,
		"blob": `"AP8Q"`, "nothing": `null`,
		"feeling": `"happy"`, "feelings": `["happy","sad"]`, "id_uuid": `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`,
		"span": `"P1DT2H3M4S"`, "addr": `"192.168.0.1/24"`, "note": `"short"`,
	}
	for col, w := range want {
		g, ok := got[col]
		if !ok {
			t.Errorf("%s missing from data", col)
			continue
		}
		if compact(t, g) != compact(t, json.RawMessage(w)) {
			t.Errorf("%s = %s, want %s", col, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("data has %d columns, want %d: %v", len(got), len(want), got)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compact normalises JSON for comparison, keeping strings' content and
// numbers' spelling.
func compact(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("invalid JSON %s: %v", raw, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// An unchanged TOASTed column is not in the WAL. Without REPLICA IDENTITY
// FULL walcast cannot know its value: it leaves it out of data and names it
// in "unchanged", never sending a placeholder. With FULL it fills it from
// the old row.
func TestUnchangedToastedColumnIsNeverAPlaceholder(t *testing.T) {
	pg := electionDB(t)
	pg.Exec(t, `
		CREATE TABLE notes_default (id int PRIMARY KEY, committee_id int, status text, notes text);
		ALTER TABLE notes_default ALTER COLUMN notes SET STORAGE EXTERNAL;
		CREATE TABLE notes_full (id int PRIMARY KEY, committee_id int, status text, notes text);
		ALTER TABLE notes_full ALTER COLUMN notes SET STORAGE EXTERNAL;
		ALTER TABLE notes_full REPLICA IDENTITY FULL;`)
	big := strings.Repeat("long note ", 1000) // 10 kB: stored out of line
	pg.Exec(t, `INSERT INTO notes_default VALUES (1, 1, 'weak', $1)`, big)
	pg.Exec(t, `INSERT INTO notes_full VALUES (1, 1, 'weak', $1)`, big)
	app := startApp(t, testConfig(t, pg.URL(), "--tables", "notes_default=guarantee,notes_full=guarantee"))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")

	pg.Exec(t, `UPDATE notes_default SET status = 'strong' WHERE id = 1`)
	m := c.change(t)
	data := m["data"].(map[string]any)
	if _, has := data["notes"]; has {
		t.Errorf("default identity: data has notes = %.40q…; want it left out", data["notes"])
	}
	if u, _ := json.Marshal(m["unchanged"]); string(u) != `["notes"]` {
		t.Errorf("default identity: unchanged = %s, want [\"notes\"]", u)
	}
	if data["status"] != "strong" {
		t.Errorf("status = %v", data["status"])
	}

	pg.Exec(t, `UPDATE notes_full SET status = 'strong' WHERE id = 1`)
	m = c.change(t)
	data = m["data"].(map[string]any)
	if data["notes"] != big {
		t.Errorf("full identity: notes not filled from the old row (got %.40q)", data["notes"])
	}
	if _, has := m["unchanged"]; has {
		t.Errorf("full identity: unexpected unchanged %v", m["unchanged"])
	}
	if old, _ := json.Marshal(m["old"]); string(old) != `{"status":"weak"}` {
		t.Errorf("full identity: old = %s", old)
	}
}

// A row too large to send whole (50 MB here) is sent as its key and routing
// columns with "oversized": true and the others named in "omitted", so the
// client refetches it; nothing is lost and capture goes on.
func TestOversizedRowIsSentAsItsKey(t *testing.T) {
	pg := electionDB(t)
	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	c := dial(t, app.addr, token(t, 1, "admin"), "")

	pg.Exec(t, `INSERT INTO guarantee (id, committee_id, user_id, notes) VALUES (50, 2, 7, repeat('x', 50*1024*1024))`)
	m := c.change(t)
	if m["oversized"] != true {
		t.Fatalf("oversized = %v in %.300s", m["oversized"], mustJSON(t, m))
	}
	data, _ := json.Marshal(m["data"])
	if string(data) != `{"committee_id":2,"id":50,"user_id":7}` {
		t.Errorf("data = %.300s, want the key and routing columns", data)
	}
	omitted, _ := json.Marshal(m["omitted"])
	if !strings.Contains(string(omitted), `"notes"`) {
		t.Errorf("omitted = %s, want notes named", omitted)
	}
	pg.Exec(t, `UPDATE guarantee SET status = 'strong' WHERE id = 50`)
	m = c.change(t)
	if m["oversized"] != true || m["action"] != "updated" {
		t.Errorf("update of the large row: %.300s", mustJSON(t, m))
	}
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'after')`)
	m = c.change(t)
	if d := m["data"].(map[string]any); d["elector_name"] != "after" {
		t.Errorf("capture did not go on after the large row: %v", m)
	}
}
