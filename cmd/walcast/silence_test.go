package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/walcast/walcast/internal/testenv"
)

// Silent connections: walcast's connections to PostgreSQL and Redis go
// through fault-injecting proxies that stop forwarding on the open
// connections (no FIN, no RST: bytes simply stop) while new connections
// pass, under a steady write load with a resuming client.

// silenceRig is walcast run with PostgreSQL and Redis behind proxies, a
// writer committing one row per transaction directly to PostgreSQL, and a
// resuming client.
type silenceRig struct {
	pg           *testenv.Postgres
	pgProxy, rdP *testenv.Proxy
	app          *running
	logs         *syncBuffer
	client       *resumingClient
	stopClient   func()
	writer       *rowWriter
}

// startSilenceRig starts the rig; args are extra walcast flags.
func startSilenceRig(t *testing.T, args ...string) *silenceRig {
	t.Helper()
	pg := electionDB(t)
	rd := testenv.StartRedis(t)
	r := &silenceRig{pg: pg, pgProxy: testenv.StartProxy(t, "127.0.0.1:"+strconv.Itoa(pg.Port())), rdP: testenv.StartProxy(t, rd.Addr())}
	dbURL := strings.Replace(pg.URL(), ":"+strconv.Itoa(pg.Port())+"/", ":"+strconv.Itoa(r.pgProxy.Port())+"/", 1)
	base := []string{"--redis-url", "redis://" + r.rdP.Addr() + "/0",
		"--heartbeat-interval", "200ms", "--stall-threshold", "2s", "--redis-timeout", "2s", "--query-timeout", "5s"}
	r.app, r.logs = startLogged(t, cmdRun, testConfig(t, dbURL, append(base, args...)...))
	r.app.waitStreaming(t)
	waitReady(t, r.app.addr)
	r.client, r.stopClient = startResumingClient(t, r.app.addr)
	r.writer = startRowWriter(t, pg.URL(), 3*time.Millisecond, t.Logf)
	return r
}

// silence silences connections (silence returns how many) under load and
// waits until /readyz, having turned red within 10 s, is green again
// within limit, and a row written after the silence is delivered within
// deliver.
func (r *silenceRig) silence(t *testing.T, what string, silence func() int, limit, deliver time.Duration) {
	t.Helper()
	n := silence()
	at, before := time.Now(), r.writer.written.Load()
	took, red := r.readyAgain(t, at, 10*time.Second, limit)
	if !red {
		t.Fatalf("/readyz never turned red after the %s went silent", what)
	}
	t.Logf("silenced %d %s; /readyz green again %v later", n, what, took.Round(time.Millisecond))
	r.waitDelivered(t, before, deliver)
	t.Logf("rows flow again %v after the silence", time.Since(at).Round(time.Millisecond))
}

// readyAgain polls /readyz from the fault on: it returns how long after
// `since` /readyz was green again after having turned red (or 0 and false
// if it never turned red within `red`), failing after `limit`.
func (r *silenceRig) readyAgain(t *testing.T, since time.Time, red, limit time.Duration) (time.Duration, bool) {
	t.Helper()
	wentRed := false
	for {
		code, _ := httpGetNoFail("http://" + r.app.addr + "/readyz")
		now := time.Now()
		switch {
		case code != 200:
			wentRed = true
		case wentRed:
			return now.Sub(since), true
		case now.Sub(since) > red:
			return 0, false
		}
		if now.Sub(since) > limit {
			_, body := httpGet(t, "http://"+r.app.addr+"/readyz")
			t.Fatalf("not ready again %v after the fault: %s", limit, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDelivered waits until the client received a row written after the
// fault: changes flow again.
func (r *silenceRig) waitDelivered(t *testing.T, after int64, limit time.Duration) {
	t.Helper()
	name := "w" + strconv.FormatInt(after+20, 10)
	eventually(t, limit, "a row written after the fault is delivered", func() bool {
		r.client.mu.Lock()
		defer r.client.mu.Unlock()
		return r.client.names[name] > 0
	})
}

// finish stops the writer and checks that the client received every row
// exactly once.
func (r *silenceRig) finish(t *testing.T) {
	t.Helper()
	time.Sleep(500 * time.Millisecond) // load after the recovery
	r.writer.halt()
	rows := electorNames(t, r.pg.URL())
	r.client.received(len(rows), 20*time.Second)
	r.stopClient()
	r.client.mu.Lock()
	defer r.client.mu.Unlock()
	t.Logf("%d rows committed, %d messages received, %d reconnects of the client", len(rows), len(r.client.ids), r.client.drops)
	if len(rows) < 300 {
		t.Errorf("only %d rows written: the load was not steady", len(rows))
	}
	r.client.checkExactlyOnce(t, rows)
}

func (r *silenceRig) replaced(t *testing.T, conn, reason string) float64 {
	t.Helper()
	v, _ := metric(t, r.app.addr, `walcast_connections_replaced_total{conn="`+conn+`",reason="`+reason+`"}`)
	return v
}

// otherConsumer streams from its own slot on a direct replication
// connection, with application_name "walcast" (walcast's old name, not its
// token), and answers keepalives until the test ends. It returns its
// walsender's PID.
func otherConsumer(t *testing.T, pg *testenv.Postgres) int32 {
	t.Helper()
	// The publication must exist before the slot: pgoutput reads it as of
	// the WAL it decodes.
	pg.Exec(t, `CREATE PUBLICATION other_pub FOR TABLE guarantee`)
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgconn.Connect(ctx, pg.URL()+"&replication=database&application_name=walcast")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pglogrepl.CreateReplicationSlot(ctx, conn, "other_consumer", "pgoutput", pglogrepl.CreateReplicationSlotOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pglogrepl.StartReplication(ctx, conn, "other_consumer", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'other_pub'"}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			msg, err := conn.ReceiveMessage(ctx)
			if err != nil {
				return
			}
			if cd, ok := msg.(*pgproto3.CopyData); ok && len(cd.Data) > 0 && cd.Data[0] == pglogrepl.PrimaryKeepaliveMessageByteID {
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
				if err == nil && ka.ReplyRequested {
					_ = pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: ka.ServerWALEnd})
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close(context.Background())
	})
	var pid int32
	eventually(t, 10*time.Second, "the other consumer streams", func() bool {
		var p *int32
		queryRow(t, pg.URL(), `SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'other_consumer'`, nil, &p)
		if p != nil {
			pid = *p
		}
		return p != nil
	})
	return pid
}

// stillStreams asserts that the other consumer's walsender was never
// terminated: the same PID still holds its slot.
func stillStreams(t *testing.T, pg *testenv.Postgres, pid int32) {
	t.Helper()
	var p *int32
	queryRow(t, pg.URL(), `SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'other_consumer'`, nil, &p)
	if p == nil || *p != pid {
		t.Errorf("the other consumer's walsender (PID %d) was terminated: slot held by %v", pid, p)
	}
}

// (a) and (e): every PostgreSQL connection walcast holds goes silent.
// walcast closes the replication connection after the stall threshold,
// terminates its own walsender that still holds the slot, streams again,
// and the client ends with every row exactly once. Another consumer's
// walsender on another slot, even one named "walcast", is left alone.
func TestSilentPostgresIsReplaced(t *testing.T) {
	r := startSilenceRig(t)
	other := otherConsumer(t, r.pg)
	time.Sleep(time.Second) // steady load before the fault
	old := walsenderPID(t, r.pg.URL(), "walcast")

	r.silence(t, "PostgreSQL connections", r.pgProxy.Silence, 20*time.Second, 10*time.Second)

	if now := walsenderPID(t, r.pg.URL(), "walcast"); now == old {
		t.Errorf("the same walsender (PID %d) still streams", old)
	}
	var gone bool
	queryRow(t, r.pg.URL(), `SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)`, []any{old}, &gone)
	if !gone {
		t.Errorf("walcast's old walsender (PID %d) still runs", old)
	}
	stillStreams(t, r.pg, other)
	if v := r.replaced(t, "replication", "silent"); v != 1 {
		t.Errorf(`walcast_connections_replaced_total{conn="replication",reason="silent"} = %v, want 1`, v)
	}
	out := r.logs.String()
	if c := strings.Count(out, "replication stalled"); c != 1 {
		t.Errorf("stall logged %d times, want once", c)
	}
	if !strings.Contains(out, "terminated this process's previous walsender") {
		t.Errorf("no line about terminating the old walsender")
	}
	// The dashboard round that was in flight times out (--query-timeout
	// 5s) and the dashboards are computed again on a new connection.
	eventually(t, 15*time.Second, "the dashboard connection is replaced", func() bool { return r.replaced(t, "dashboard", "timeout") >= 1 })
	rounds := r.app.app.Dashboards().Rounds
	eventually(t, 10*time.Second, "dashboards are computed again", func() bool { return r.app.app.Dashboards().Rounds > rounds })
	r.finish(t)
	stillStreams(t, r.pg, other)
}

// With heartbeats off, a replication connection from which nothing
// arrives (walcast asks for keepalives while it is quiet) is replaced the
// same way.
func TestSilentPostgresWithoutHeartbeatsIsReplaced(t *testing.T) {
	r := startSilenceRig(t, "--heartbeat-interval", "0")
	if st := r.app.app.Status(); st.Liveness != "keepalive" {
		t.Fatalf("liveness %q, want keepalive", st.Liveness)
	}
	time.Sleep(time.Second)
	r.silence(t, "PostgreSQL connections", r.pgProxy.Silence, 20*time.Second, 10*time.Second)
	if v := r.replaced(t, "replication", "silent"); v != 1 {
		t.Errorf("replication replaced %v times, want 1", v)
	}
	r.finish(t)
}

// (b): every Redis connection goes silent: the appender's, the
// follower's blocking read, presence's commands and subscription.
func TestSilentRedisIsReplaced(t *testing.T) {
	// A 3 s stall threshold: the replication connection stays up while
	// capture waits for the bus, and a busy test machine must not make it
	// look silent either.
	r := startSilenceRig(t, "--stall-threshold", "3s")
	time.Sleep(time.Second)
	r.silence(t, "Redis connections", r.rdP.Silence, 20*time.Second, 15*time.Second)
	// The follower's blocking read is always out, so it always meets the
	// silence; the appender's pool may have opened a fresh connection.
	if v := r.replaced(t, "redis_follow", "timeout"); v < 1 {
		t.Errorf(`walcast_connections_replaced_total{conn="redis_follow",reason="timeout"} = %v, want at least 1`, v)
	}
	if st := r.app.app.Status(); st.Sessions != 1 {
		t.Errorf("replication sessions = %d: a silent Redis must not restart replication", st.Sessions)
	}
	r.finish(t)
	// The presence subscription is replaced within ttl/3 + the timeout.
	eventually(t, 15*time.Second, "the presence subscription is replaced", func() bool { return r.replaced(t, "redis_pubsub", "timeout") >= 1 })
}

// (c): PostgreSQL and Redis go silent at the same moment.
func TestSilentPostgresAndRedisAreReplaced(t *testing.T) {
	r := startSilenceRig(t)
	time.Sleep(time.Second)
	both := func() int { return r.pgProxy.Silence() + r.rdP.Silence() }
	r.silence(t, "PostgreSQL and Redis connections", both, 25*time.Second, 15*time.Second)
	if v := r.replaced(t, "replication", "silent"); v != 1 {
		t.Errorf(`replication replaced %v times, want 1`, v)
	}
	r.finish(t)
}

// (d): 200 ms more each way on every connection to PostgreSQL and Redis
// makes walcast slower, not wrong: nothing is replaced and every row
// arrives exactly once.
func TestLatencyIsNotASilence(t *testing.T) {
	r := startSilenceRig(t, "--stall-threshold", "3s", "--query-timeout", "15s")
	time.Sleep(500 * time.Millisecond)
	r.pgProxy.SetLatency(200 * time.Millisecond)
	r.rdP.SetLatency(200 * time.Millisecond)
	at, before := time.Now(), r.writer.written.Load()
	r.waitDelivered(t, before, 15*time.Second)
	t.Logf("with 200 ms each way, a row written after the latency began arrived %v later", time.Since(at).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // under latency, longer than the stall threshold
	waitReady(t, r.app.addr)
	r.finish(t)
	if st := r.app.app.Status(); st.Sessions != 1 || st.Stalled != "" {
		t.Errorf("status = %+v: latency must not count as a stall", st)
	}
	for _, conn := range []string{"replication", "query", "dashboard", "redis", "redis_follow", "redis_presence", "redis_pubsub"} {
		for _, reason := range []string{"silent", "timeout", "closed", "error"} {
			if v := r.replaced(t, conn, reason); v != 0 {
				t.Errorf("%s connection replaced (%s) %v times under latency", conn, reason, v)
			}
		}
	}
}
