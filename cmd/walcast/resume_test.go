package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/broadcast"
	"github.com/walcast/walcast/internal/testenv"
)

// redisSent returns how many bytes Redis has sent to its clients.
func redisSent(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_output_bytes:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no total_net_output_bytes in INFO stats")
	return 0
}

// floodResumes sends n resume frames from 0-0 back to back and then
// reconnects reconnects times with since=0-0, as a client that may receive
// none of the history; it returns how many frames were refused as rate
// limited.
func floodResumes(t *testing.T, addr string, n, reconnects int) int {
	t.Helper()
	tok := token(t, 99, "user", 3) // committee 3: none of the history is for it
	c := dial(t, addr, tok, "since=0-0")
	for i := 0; i < n; i++ {
		if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"resume","since":"0-0"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	limited := 0
	for {
		m := c.next(t, 30*time.Second)
		if m["type"] == "pong" {
			break
		}
		if m["type"] == "error" && m["code"] == "rate_limited" {
			limited++
		}
	}
	for i := 0; i < reconnects; i++ {
		r := dial(t, addr, tok, "since=0-0")
		r.conn.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping"}`))
		for m := r.next(t, 30*time.Second); m["type"] != "pong"; m = r.next(t, 30*time.Second) {
		}
		r.conn.CloseNow()
	}
	return limited
}

// Resuming from the beginning, again and again, costs Redis little: a
// replica serves replays from its window (a replica that starts preloads
// it), and a connection may resume a few times a second.
func TestResumeFloodIsBounded(t *testing.T) {
	const rows = 20000
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rd.Addr()})
	defer rdb.Close()
	app := startApp(t, testConfig(t, pg.URL(), "--redis-url", rd.URL(), "--dashboard-interval", "0"))
	app.waitStreaming(t)
	w := dial(t, app.addr, token(t, 1, "admin"), "")
	pg.Exec(t, fmt.Sprintf(`INSERT INTO guarantee (committee_id, user_id, elector_name) SELECT 1, 1, repeat('x', 200) FROM generate_series(1, %d)`, rows))
	for i := 0; i < rows; i++ {
		w.change(t)
	}
	mem, err := rdb.MemoryUsage(context.Background(), broadcast.DefaultStreamKey).Result()
	if err != nil {
		t.Fatal(err)
	}

	before := redisSent(t, rdb)
	limited := floodResumes(t, app.addr, 10, 5)
	sent := redisSent(t, rdb) - before
	t.Logf("window replica: 10 resume frames + 5 reconnects from 0-0 over %d entries (%d bytes in Redis): Redis sent %d bytes; %d frames rate limited", rows, mem, sent, limited)
	if limited != 7 {
		t.Errorf("%d of 10 back-to-back resume frames rate limited, want 7", limited)
	}
	if sent > mem/10 {
		t.Errorf("Redis sent %d bytes for the flood, more than a tenth of the history (%d bytes)", sent, mem)
	}

	// A replica started after the history was written: its window does not
	// hold it, so replays read Redis, a bounded amount each.
	serve := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	dial(t, serve.addr, token(t, 1, "admin"), "") // it follows the stream
	before = redisSent(t, rdb)
	limited = floodResumes(t, serve.addr, 10, 5)
	sent = redisSent(t, rdb) - before
	t.Logf("fresh replica (preloaded window): the same flood: Redis sent %d bytes; %d frames rate limited", sent, limited)
	if sent > mem/10 {
		t.Errorf("Redis sent %d bytes for the flood on a fresh replica, more than a tenth of the history (%d bytes): it should have preloaded its window", sent, mem)
	}
}

// The dashboard page connects with since=0-0 ("everything"): once Redis
// trimmed the stream, walcast cannot give everything and says so with
// resync_required instead of replaying what is left; before the trim it
// replays the whole history. Both on the capturing replica and on one
// started after the trim.
func TestSinceTheBeginningAfterATrim(t *testing.T) {
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	app := startApp(t, testConfig(t, pg.URL(), "--redis-url", rd.URL(), "--history", "200", "--dashboard-interval", "0"))
	app.waitStreaming(t)
	pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) VALUES (1, 1, 'first')`)
	c := dial(t, app.addr, token(t, 1, "admin"), "since=0-0")
	if got := electorName(c.change(t)); got != "first" {
		t.Fatalf("since=0-0 before a trim replayed %v first, want the first change", got)
	}
	for batch := 0; batch < 10; batch++ { // small batches: the follower keeps up with the trim
		pg.Exec(t, `INSERT INTO guarantee (committee_id, user_id, elector_name) SELECT 1, 1, 'filler' FROM generate_series(1, 50)`)
		for i := 0; i < 50; i++ {
			c.change(t)
		}
	}
	serve := startMode(t, cmdServe, modeConfig(t, cmdServe, "--redis-url", rd.URL()))
	for _, addr := range []string{app.addr, serve.addr} {
		m := dial(t, addr, token(t, 1, "admin"), "since=0-0").nextOf(t, "resync_required")
		if m["position"] == nil {
			t.Errorf("%s: %v, want the position the connection continues from", addr, m)
		}
	}
}
