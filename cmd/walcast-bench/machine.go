package main

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/walcast/walcast/internal/launch"
)

// describeMachine says where the numbers came from.
func describeMachine(ctx context.Context) string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	parts := []string{time.Now().UTC().Format("2006-01-02"), itoa(runtime.NumCPU()) + " cores (" + cpu + ")"}
	if p, err := launch.PGProgram("postgres"); err == nil {
		if out, err := exec.CommandContext(ctx, p, "--version").Output(); err == nil {
			parts = append(parts, strings.TrimSpace(string(out)))
		}
	}
	if out, err := exec.CommandContext(ctx, "redis-server", "--version").Output(); err == nil {
		f := strings.Fields(string(out))
		for _, x := range f {
			if strings.HasPrefix(x, "v=") {
				parts = append(parts, "Redis "+strings.TrimPrefix(x, "v="))
			}
		}
	}
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		parts = append(parts, "bench tree at commit "+strings.TrimSpace(string(out))+" (walcast is --walcast-bin when given)")
	}
	return strings.Join(parts, ", ")
}

func itoa(n int) string { return num(float64(n)) }
