#!/usr/bin/env bash
# build.sh OUTPUT builds cmd/walcast into OUTPUT the way every walcast
# binary is built (`make build`, `make release`, the Dockerfile): static
# (CGO_ENABLED=0), without local paths (-trimpath) or VCS metadata
# (-buildvcs=false: the stamp below replaces it, and .git may be absent),
# stamped with scripts/version.sh's VERSION, COMMIT and DATE. GOOS and
# GOARCH from the environment pick the platform.
#
# With one Go toolchain, building one commit twice gives the same bytes
# (`make release` prints the checksums; compare two runs).
set -euo pipefail
if (($# != 1)); then
	echo "usage: scripts/build.sh OUTPUT" >&2
	exit 2
fi
out=$1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stamp=$("$here/version.sh")
eval "$stamp"
export SOURCE_DATE_EPOCH
cd "$here/.."
CGO_ENABLED=0 "${GO:-go}" build -trimpath -buildvcs=false \
	-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.date=$DATE" \
	-o "$out" ./cmd/walcast
