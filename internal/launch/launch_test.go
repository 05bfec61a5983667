package launch_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/walcast/walcast/internal/launch"
	"github.com/walcast/walcast/internal/testenv"
)

// TestCloseRemovesEverything checks what the demo and the bench rely on:
// Close stops each server and leaves no folder behind, and a second Close
// does no harm.
func TestCloseRemovesEverything(t *testing.T) {
	testenv.SkipIfShort(t, "PostgreSQL and Redis servers")
	ctx := context.Background()
	pg, err := launch.StartPostgres(ctx, launch.PostgresConfig{Name: "launchtest", Fresh: true,
		Settings: [][2]string{{"max_connections", "30"}}})
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := launch.StartRedis(ctx, launch.RedisConfig{AOF: true})
	if err != nil {
		pg.Close()
		t.Fatal(err)
	}
	for _, s := range []interface {
		Dir() string
		Close() error
	}{pg, rdb} {
		if _, err := os.Stat(s.Dir()); err != nil {
			t.Fatalf("folder of a running server: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if _, err := os.Stat(s.Dir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after Close (stat: %v)", s.Dir(), err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
	}
}

// TestFailedStartSaysWhyAndLeavesNothing starts redis-server with an
// argument it refuses: the error must carry the server's own complaint (the
// log's tail), and no folder may stay behind.
func TestFailedStartSaysWhyAndLeavesNothing(t *testing.T) {
	testenv.SkipIfShort(t, "a Redis server")
	_, err := launch.StartRedis(context.Background(), launch.RedisConfig{Args: []string{"--no-such-option", "1"}})
	if err == nil {
		t.Fatal("redis-server started with an unknown option")
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("the error does not carry the server's complaint:\n%v", err)
	}
	// The log's tail is headed by the log's path, in the server's folder.
	m := regexp.MustCompile(`(\S*walcast-redis-[^/\s]+)/redis\.log`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the error names no log file:\n%v", err)
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there after the failed start (stat: %v)", m[1], err)
	}
}
