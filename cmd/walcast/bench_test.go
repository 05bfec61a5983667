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
	pg := electionDBB(b)
	var app *running
	switch bus {
	case "":
		app = startAppB(b, cmdRun, benchConfig(b, cmdRun, "--database-url", pg.URL()))
	case "redis":
		rd := testenv.StartRedis(b)
		app = startAppB(b, cmdRun, benchConfig(b, cmdRun, "--database-url", pg.URL(), "--redis-url", rd.URL()))
	case "split":
		rd := testenv.StartRedis(b)
		startAppB(b, cmdCapture, benchConfig(b, cmdCapture, "--database-url", pg.URL(), "--redis-url", rd.URL()))
		app = startAppB(b, cmdServe, benchConfig(b, cmdServe, "--redis-url", rd.URL()))
	}
	recv, err := exec.LookPath("pg_recvlogical")
	if err != nil {
		if p, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_recvlogical"); len(p) > 0 {
			recv = p[len(p)-1]
		}
	}
	ctx := context.Background()
	// A client like client.js: it reads ids and, when closed as too slow
	// (4008), reconnects and resumes from the last id it saw.
	var conn *websocket.Conn
	last := ""
	resumes := 0
	connect := func() {
		u := fmt.Sprintf("ws://%s/ws?token=%s", app.addr, tokenB(b))
		if last != "" {
			u += "&since=" + last
		}
		c, _, err := websocket.Dial(ctx, u, nil)
		if err != nil {
			b.Fatal(err)
		}
		c.SetReadLimit(1 << 20)
		if _, _, err := c.Read(ctx); err != nil { // welcome
			b.Fatal(err)
		}
		conn = c
	}
	read := func() {
		for {
			_, msg, err := conn.Read(ctx)
			if err == nil {
				if i := strings.Index(string(msg), `"id":"`); i >= 0 {
					rest := string(msg[i+6:])
					last = rest[:strings.IndexByte(rest, '"')]
				}
				return
			}
			if websocket.CloseStatus(err) != 4008 {
				b.Fatalf("read: %v", err)
			}
			resumes++
			connect()
		}
	}
	connect()
	defer func() { conn.CloseNow() }()

	var walcastTotal, insertTotal, recvTotal time.Duration
	for i := 0; i < b.N; i++ {
		pg.Exec(b, `SELECT pg_create_logical_replication_slot('baseline', 'pgoutput')`)
		start := time.Now()
		pg.Exec(b, fmt.Sprintf(`INSERT INTO guarantee (committee_id, user_id, elector_name, notes)
			SELECT 1 + g %% 3, g %% 100, 'elector ' || g, 'bulk' FROM generate_series(1, %d) g`, rows))
		insertTotal += time.Since(start)
		for n := 0; n < rows; n++ {
			read()
		}
		walcastTotal += time.Since(start)

		if recv != "" {
			var end string
			pgConn := pg.URL()
			out, err := exec.Command("psql", pgConn, "-Atc", "SELECT pg_current_wal_lsn()").Output()
			if err != nil {
				b.Fatalf("psql: %v", err)
			}
			end = strings.TrimSpace(string(out))
			rs := time.Now()
			cmd := exec.Command(recv, "-d", pgConn, "-S", "baseline", "--start", "-f", "/dev/null",
				"-o", "proto_version=1", "-o", "publication_names=walcast", "-E", end, "--no-loop")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("pg_recvlogical: %v\n%s", err, out)
			}
			recvTotal += time.Since(rs)
		}
		pg.Exec(b, `SELECT pg_drop_replication_slot('baseline')`)
		pg.Exec(b, `TRUNCATE guarantee`)
		read() // the truncate is a message too
	}
	n := float64(b.N * rows)
	b.ReportMetric(float64(resumes), "resumes")
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
