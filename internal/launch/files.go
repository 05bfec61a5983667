package launch

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// logTail returns the last n lines of the file at path under a header, or a
// note saying why it could not be read: it ends up in error messages, which
// must not fail themselves.
func logTail(title, path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("--- %s: %v", title, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s:\n%s\n---", len(lines), title, strings.Join(lines, "\n"))
}

// readFrom returns what was written to the file at path after offset, so a
// start failure is judged on this start's messages only.
func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(f)
	return string(data)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// bindFailed reports whether a server's log says its port was taken.
func bindFailed(log string) bool {
	return strings.Contains(log, "could not bind") || strings.Contains(log, "Address already in use")
}
