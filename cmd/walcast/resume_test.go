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
