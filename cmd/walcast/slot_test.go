package main

import (
	"bytes"
	"strings"
	"testing"
)

// slotCmd runs `walcast slot …` and returns its exit status and output.
func slotCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = realMain(append([]string{"slot"}, args...), &out, &errOut, func(string) string { return "" })
	t.Logf("walcast slot %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// walcast slot status describes the slot and who holds it; walcast slot
// drop refuses without --yes and while the slot is in use, then drops it.
func TestSlotStatusAndDropCommands(t *testing.T) {
	pg := electionDB(t)
	db := []string{"--database-url", pg.URL()}

	if code, _, stderr := slotCmd(t, append([]string{"status"}, db...)...); code != 1 || !strings.Contains(stderr, "replication slot walcast does not exist") {
		t.Errorf("status before the slot exists: exit %d, %q", code, stderr)
	}

	app := startApp(t, testConfig(t, pg.URL()))
	app.waitStreaming(t)
	code, stdout, _ := slotCmd(t, append([]string{"status"}, db...)...)
	for _, want := range []string{"slot                 walcast", "plugin               pgoutput", "database             postgres",
		"active               yes, PID ", `application "walcast-`, "confirmed_flush_lsn  0/", "restart_lsn          0/",
		"retained WAL         ", "wal_status           reserved", "safe_wal_size        unlimited"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status output lacks %q", want)
		}
	}
	if code != 0 {
		t.Errorf("status: exit %d", code)
	}

	if code, stdout, stderr := slotCmd(t, append([]string{"drop"}, db...)...); code != 2 || !strings.Contains(stderr, "without --yes") || stdout != "" {
		t.Errorf("drop without --yes: exit %d, %q", code, stderr)
	}
	if code, _, stderr := slotCmd(t, append([]string{"drop", "--yes"}, db...)...); code != 1 || !strings.Contains(stderr, "in use by PID") || !strings.Contains(stderr, `application "walcast-`) {
		t.Errorf("drop while walcast streams: exit %d, %q", code, stderr)
	}
	if !app.app.Status().Streaming {
		t.Errorf("walcast stopped streaming after a refused drop")
	}

	app.stop(t)
	waitSlotInactive(t, pg.URL(), "walcast")
	code, stdout, stderr := slotCmd(t, append([]string{"drop", "--yes"}, db...)...)
	if code != 0 || !strings.Contains(stdout, "dropped replication slot walcast") || !strings.Contains(stdout, "DROP PUBLICATION walcast;") {
		t.Errorf("drop: exit %d, %q %q", code, stdout, stderr)
	}
	if code, _, stderr := slotCmd(t, append([]string{"status"}, db...)...); code != 1 || !strings.Contains(stderr, "does not exist") {
		t.Errorf("status after drop: exit %d, %q", code, stderr)
	}
	if code, _, stderr := slotCmd(t, "rename"); code != 2 || !strings.Contains(stderr, `unknown slot command "rename"`) {
		t.Errorf("unknown subcommand: exit %d, %q", code, stderr)
	}
}
