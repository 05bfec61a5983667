package testenv_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/walcast/walcast/internal/testenv"
)

// queryString runs a one-value query on a new connection.
func queryString(t *testing.T, url, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// timed runs f and logs how long it took, so the cost of each operation shows
// up in go test -v.
func timed(t *testing.T, what string, f func()) {
	t.Helper()
	began := time.Now()
	f()
	t.Logf("%s took %s", what, time.Since(began).Round(time.Millisecond))
}

func TestPostgresSurvivesKill(t *testing.T) {
	t.Parallel()
	var pg *testenv.Postgres
	timed(t, "StartPostgres", func() { pg = testenv.StartPostgres(t) })

	if got := queryString(t, pg.URL(), "SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level = %q, want logical", got)
	}
	pg.Exec(t, "CREATE TABLE vote_count (id int PRIMARY KEY, votes int NOT NULL)")
	pg.Exec(t, "SELECT pg_create_logical_replication_slot('t', 'pgoutput')")
	// Committed last, right before the crash: it must survive.
	pg.Exec(t, "INSERT INTO vote_count VALUES ($1, $2)", 1, 42)

	timed(t, "Kill", func() { pg.Kill(t) })
	if _, err := pgx.Connect(context.Background(), pg.URL()); err == nil {
		t.Fatal("connected to a killed server")
	}
	timed(t, "Start after Kill (crash recovery)", func() { pg.Start(t) })

	if got := queryString(t, pg.URL(), "SELECT string_agg(slot_name || ':' || plugin, ',') FROM pg_replication_slots"); got != "t:pgoutput" {
		t.Errorf("slots after restart = %q, want t:pgoutput", got)
	}
	if got := queryString(t, pg.URL(), "SELECT votes::text FROM vote_count WHERE id = 1"); got != "42" {
		t.Errorf("votes after restart = %q, want 42", got)
	}
	if !strings.Contains(pg.LogTail(50), "database system was interrupted") {
		t.Errorf("log does not show crash recovery:\n%s", pg.LogTail(50))
	}
}

func TestPostgresStopStartAndDatabases(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	port := pg.Port()
	url := pg.CreateDatabase(t, "Election-2026") // needs quoting
	pg.ExecDB(t, url, "CREATE TABLE attendance (id int); INSERT INTO attendance VALUES (7)")

	timed(t, "Stop", func() { pg.Stop(t) })
	timed(t, "Start after Stop", func() { pg.Start(t) })

	if pg.Port() != port {
		t.Errorf("port changed from %d to %d", port, pg.Port())
	}
	if got := queryString(t, url, "SELECT id::text FROM attendance"); got != "7" {
		t.Errorf("attendance after restart = %q, want 7", got)
	}
	if got := queryString(t, pg.URL(), "SHOW synchronous_commit"); got != "on" {
		t.Errorf("synchronous_commit = %q, want on", got)
	}
}

func TestPostgresWithSetting(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.WithSetting("wal_level", "replica"), testenv.WithSetting("application_name", `it's a \ test`))
	if got := queryString(t, pg.URL(), "SHOW wal_level"); got != "replica" {
		t.Errorf("wal_level = %q, want replica", got)
	}
	if got := queryString(t, pg.URL(), "SHOW application_name"); got != `it's a \ test` {
		t.Errorf("quoted setting = %q", got)
	}
}

func TestRedisAOFSurvivesKill(t *testing.T) {
	t.Parallel()
	var r *testenv.Redis
	timed(t, "StartRedis", func() { r = testenv.StartRedis(t, testenv.WithAOF()) })
	opts, err := redis.ParseURL(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	timed(t, "Redis Kill", func() { r.Kill(t) })
	timed(t, "Redis Start", func() { r.Start(t) })

	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("GET k after kill = %q, %v; want v", got, err)
	}

	timed(t, "Redis Stop", func() { r.Stop(t) })
	r.Start(t)
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("GET k after stop = %q, %v; want v", got, err)
	}
}

func TestRedisWithoutAOFLosesData(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r.Kill(t)
	r.Start(t)
	if err := rdb.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET k after kill without AOF: err = %v, want redis.Nil", err)
	}
}

func TestRedisPassword(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t, testenv.WithAOF(), testenv.WithRedisArgs("--requirepass", "s3cret*"))
	ctx := context.Background()
	anon := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil {
		t.Error("PING without password succeeded")
	}
	r.Kill(t)
	r.Start(t) // readiness must authenticate to see past LOADING
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), Password: "s3cret*"})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Errorf("PING with password: %v", err)
	}
}

func TestFreePortDistinct(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := testenv.FreePort(t)
		if seen[p] {
			t.Fatalf("port %d returned twice", p)
		}
		seen[p] = true
	}
}

// Three Sentinels watching a primary with a replica, passwords on both
// sides, promote the replica when the primary is killed.
func TestSentinelsFailOver(t *testing.T) {
	pw := "pr1m-pass"
	primary := testenv.StartRedis(t, testenv.WithRedisArgs("--requirepass", pw, "--masterauth", pw))
	replica := testenv.StartRedis(t, testenv.WithRedisArgs("--requirepass", pw, "--masterauth", pw), testenv.AsReplicaOf(primary))
	s := testenv.StartSentinels(t, primary, 3, 2, 1, testenv.WithSentinelPassword("s3nt-pass"))
	if got := s.Primary(t); got != primary.Addr() {
		t.Fatalf("primary %s, want %s", got, primary.Addr())
	}
	if u := s.URL(pw); !strings.HasPrefix(u, "redis-sentinel://:pr1m-pass@127.0.0.1:") || !strings.HasSuffix(u, "/walcast?sentinel_password=s3nt-pass") {
		t.Errorf("URL %s", u)
	}
	primary.Kill(t)
	deadline := time.Now().Add(30 * time.Second)
	for s.Primary(t) != replica.Addr() {
		if time.Now().After(deadline) {
			t.Fatalf("no failover to %s within 30 s\n%s", replica.Addr(), s.Sentinel(0).LogTail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
