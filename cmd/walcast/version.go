package main

import (
	"fmt"
	"runtime"
)

// The build stamp. scripts/build.sh (used by `make build`, `make release`
// and the Dockerfile) sets them from git with
// -ldflags "-X main.version=… -X main.commit=… -X main.date=…";
// a plain `go build` leaves these defaults.
var (
	// version is the release (0.1.0 at the tag v0.1.0) or, between
	// releases, the next one with the commit (0.1.0-dev+3f2a1b9c0d4e).
	version = "dev"
	// commit is the full git commit the binary was built from.
	commit = "unknown"
	// date is that commit's date in UTC (RFC 3339), not the time of the
	// build, so two builds of one commit are byte for byte the same.
	date = "unknown"
)

// versionString is what `walcast version` prints: the stamp, then the Go
// toolchain and platform, which a bug report needs as well.
func versionString() string {
	return fmt.Sprintf("walcast %s (commit %s, %s, %s %s/%s)",
		version, commit, date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
