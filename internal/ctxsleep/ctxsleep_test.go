package ctxsleep

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("a full wait reported a cancelled context")
	}
	if !Sleep(context.Background(), 0) {
		t.Error("a zero wait with a live context reported false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, 0) {
		t.Error("a zero wait with a cancelled context reported true")
	}
	// A generous liveness bound: a cancelled context must not wait an hour.
	done := make(chan bool)
	go func() { done <- Sleep(ctx, time.Hour) }()
	select {
	case ok := <-done:
		if ok {
			t.Error("a cancelled wait reported true")
		}
	case <-time.After(time.Minute):
		t.Fatal("Sleep ignored its cancelled context")
	}
}
