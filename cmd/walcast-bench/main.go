// Command walcast-bench measures walcast: commit-to-browser latency,
// capture throughput, fan-out and memory per connection, each next to a
// baseline measured in the same run (pg_recvlogical on the same WAL, a
// pipelined XADD loop on the same Redis, a minimal broadcast server to the
// same clients).
//
// By default it starts everything itself on loopback addresses: a
// throwaway PostgreSQL with the election schema, redis-server for --bus
// redis, and walcast (built from this module, or --walcast-bin) as a child
// whose CPU time and resident memory it reads from /proc. --target points
// it at a walcast someone else started.
//
//	walcast-bench --mode live --clients 1000 --scope committee --rate 10000 --tx-size 10
//	walcast-bench --mode drain --rows 300000
//	walcast-bench --mode idle --idle 19000
//	walcast-bench --mode xadd
//	walcast-bench suite --docs docs/benchmarks.md   # the standard set (make bench)
//	walcast-bench election --docs docs/benchmarks.md  # election regime, quiet floor, split capture (make bench-election)
//	walcast-bench --mode drain --walcast-cmd capture --profile capture.pprof --profile-seconds 5
//	walcast-bench soak --docs docs/benchmarks.md    # 10 minutes (make soak)
//	walcast-bench targets --docs docs/benchmarks.md # issue 12's target table from the sets' JSON
//	walcast-bench --mode serve-tier --serve-replicas 0,1,4,16 --rate 10000 --tx-size 10 --clients 4 --scope committee
//	walcast-bench serve-tier --docs docs/benchmarks.md  # that, into the docs (make bench-serve-tier)
//
// Start reading at run (run.go); the report formats are in result.go and
// report.go.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := raiseOpenFileLimit(); err != nil {
		fmt.Fprintf(stderr, "walcast-bench: %v\n", err)
	}
	var err error
	switch {
	case len(args) > 0 && args[0] == "minimal-server":
		err = runMinimalServer(ctx, args[1:])
	case len(args) > 0 && args[0] == "targets":
		err = runTargets(args[1:], stdout, stderr)
	case len(args) > 0 && (args[0] == "suite" || args[0] == "soak" || args[0] == "serve-tier" || args[0] == "election"):
		err = runSuite(ctx, args[0], args[1:], stdout, stderr)
	default:
		err = runOne(ctx, args, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "walcast-bench: %v\n", err)
		return 1
	}
	return 0
}

// raiseOpenFileLimit sets the soft limit on open files to the hard limit.
// Calling Setrlimit ourselves (rather than relying on the Go runtime's own
// raise) also makes children, walcast among them, inherit the raised limit.
func raiseOpenFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read open-file limit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise open-file limit to %d: %w", lim.Max, err)
	}
	if lim.Max < maxClients+500 {
		return fmt.Errorf("open-file hard limit is %d: runs with more than %d clients will fail", lim.Max, lim.Max-500)
	}
	return nil
}

// runOne runs one benchmark from flags, prints its Markdown table and
// writes its JSON.
func runOne(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	workdir, err := os.MkdirTemp("", "walcast-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(workdir)
	res, err := run(ctx, cfg, workdir, commandLine(args))
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, res.Markdown())
	if cfg.JSON != "" {
		return writeJSON(cfg.JSON, res)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// commandLine is the command that reproduces a run, with secrets left out.
func commandLine(args []string) string {
	out := []string{"walcast-bench"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "--jwt-secret") || strings.HasPrefix(a, "-jwt-secret") {
			if !strings.Contains(a, "=") {
				i++
			}
			out = append(out, "--jwt-secret=…")
			continue
		}
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}
