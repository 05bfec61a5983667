package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/walcast/walcast/internal/testenv"
)

// BenchmarkBulkInsert measures a one-statement INSERT of 100,000 guarantee
// rows through `walcast run` to one WebSocket client, against two
// baselines from the same run: the INSERT itself, and pg_recvlogical
// decoding the same WAL with pgoutput to /dev/null.
//
//	go test ./cmd/walcast -run '^$' -bench BulkInsert -benchtime 3x
func BenchmarkBulkInsert(b *testing.B) {
	b.Run("bus=memory", func(b *testing.B) { benchBulkInsert(b, "") })
	b.Run("bus=redis", func(b *testing.B) { benchBulkInsert(b, "redis") })
	b.Run("bus=redis-split", func(b *testing.B) { benchBulkInsert(b, "split") })
}

// benchBulkInsert runs the measurement with the in-process bus (""), with
// Redis in one process ("redis"), or with `walcast capture` and a separate
// `walcast serve` replica sharing Redis ("split").
func benchBulkInsert(b *testing.B, bus string) {
	const rows = 100_000
	pg := electionDB(b)
	app := startBenchApp(b, bus, pg.URL())
	recv, err := exec.LookPath("pg_recvlogical")
	if err != nil {
		if p, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_recvlogical"); len(p) > 0 {
			recv = p[len(p)-1]
		}
	}
	c := &benchClient{b: b, addr: app.addr}
	c.connect()
	defer func() { c.conn.CloseNow() }()

	var walcastTotal, insertTotal, recvTotal time.Duration
	for i := 0; i < b.N; i++ {
		pg.Exec(b, `SELECT pg_create_logical_replication_slot('baseline', 'pgoutput')`)
		start := time.Now()
		pg.Exec(b, fmt.Sprintf(`INSERT INTO guarantee (committee_id, user_id, elector_name, notes)
			SELECT 1 + g %% 3, g %% 100, 'elector ' || g, 'bulk' FROM generate_series(1, %d) g`, rows))
		insertTotal += time.Since(start)
		for n := 0; n < rows; n++ {
			c.read()
		}
		walcastTotal += time.Since(start)
		if recv != "" {
			recvTotal += recvlogical(b, recv, pg.URL())
		}
		pg.Exec(b, `SELECT pg_drop_replication_slot('baseline')`)
		pg.Exec(b, `TRUNCATE guarantee`)
		c.read() // the truncate is a message too
	}
	n := float64(b.N * rows)
	b.ReportMetric(float64(c.resumes), "resumes")
	b.ReportMetric(n/walcastTotal.Seconds(), "walcast_rows/s")
	// Nothing can be sent before the commit: this is the rate of the
	// pipeline itself once the transaction is committed.
	b.ReportMetric(n/(walcastTotal-insertTotal).Seconds(), "after_commit_rows/s")
	b.ReportMetric(n/insertTotal.Seconds(), "insert_rows/s")
	if recvTotal > 0 {
		b.ReportMetric(n/recvTotal.Seconds(), "recvlogical_rows/s")
		b.ReportMetric(recvTotal.Seconds()/walcastTotal.Seconds(), "walcast/recvlogical")
	}
}

// startBenchApp starts walcast on the database at dbURL with bus (see
// benchBulkInsert), waits until it streams, and returns the process that
// serves clients.
func startBenchApp(b *testing.B, bus, dbURL string) *running {
	var app *running
	switch bus {
	case "":
		app = startApp(b, modeConfig(b, cmdRun, "--database-url", dbURL))
		app.waitStreaming(b)
	case "redis":
		rd := testenv.StartRedis(b)
		app = startApp(b, modeConfig(b, cmdRun, "--database-url", dbURL, "--redis-url", rd.URL()))
		app.waitStreaming(b)
	case "split":
		rd := testenv.StartRedis(b)
		startMode(b, cmdCapture, modeConfig(b, cmdCapture, "--database-url", dbURL, "--redis-url", rd.URL())).waitStreaming(b)
		app = startMode(b, cmdServe, modeConfig(b, cmdServe, "--redis-url", rd.URL()))
	}
	return app
}

// benchClient is a client like client.js: it reads ids and, when closed as
// too slow (4008), reconnects and resumes from the last id it saw.
type benchClient struct {
	b       *testing.B
	addr    string
	conn    *websocket.Conn
	last    string
	resumes int
}

func (c *benchClient) connect() {
	ctx := context.Background()
	u := fmt.Sprintf("ws://%s/ws?token=%s", c.addr, token(c.b, 1, "admin"))
	if c.last != "" {
		u += "&since=" + c.last
	}
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		c.b.Fatal(err)
	}
	conn.SetReadLimit(1 << 20)
	if _, _, err := conn.Read(ctx); err != nil { // welcome
		c.b.Fatal(err)
	}
	c.conn = conn
}

// read reads one message, resuming after a 4008.
func (c *benchClient) read() {
	for {
		_, msg, err := c.conn.Read(context.Background())
		if err == nil {
			if i := strings.Index(string(msg), `"id":"`); i >= 0 {
				rest := string(msg[i+6:])
				c.last = rest[:strings.IndexByte(rest, '"')]
			}
			return
		}
		if websocket.CloseStatus(err) != 4008 {
			c.b.Fatalf("read: %v", err)
		}
		c.resumes++
		c.connect()
	}
}

// recvlogical times pg_recvlogical decoding the WAL up to now from the
// slot "baseline" with pgoutput, to /dev/null.
func recvlogical(b *testing.B, recv, dbURL string) time.Duration {
	out, err := exec.Command("psql", dbURL, "-Atc", "SELECT pg_current_wal_lsn()").Output()
	if err != nil {
		b.Fatalf("psql: %v", err)
	}
	end := strings.TrimSpace(string(out))
	start := time.Now()
	cmd := exec.Command(recv, "-d", dbURL, "-S", "baseline", "--start", "-f", "/dev/null",
		"-o", "proto_version=1", "-o", "publication_names=walcast", "-E", end, "--no-loop")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pg_recvlogical: %v\n%s", err, out)
	}
	return time.Since(start)
}
