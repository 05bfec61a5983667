#!/usr/bin/env bash
# release.sh builds what a release publishes into dist/ (ignored by git):
#
#   walcast-<version>-<os>-<arch>     static binaries (scripts/build.sh) for
#                                     linux/amd64, linux/arm64, darwin/amd64,
#                                     darwin/arm64
#   walcast-client-<version>.tgz      the npm package @walcast/client (npm pack
#                                     of broadcast/web), when npm is installed
#   SHA256SUMS                        sha256sum -c SHA256SUMS checks them
#
# Everything is stamped with scripts/version.sh; the binaries are the same
# bytes on every run of one commit with one Go toolchain (no build path, no
# VCS metadata, the commit's date instead of the clock), so anyone can
# rebuild a release and compare SHA256SUMS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
eval "$(scripts/version.sh)"
export VERSION COMMIT DATE SOURCE_DATE_EPOCH

platforms=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
rm -rf dist
mkdir -p dist
for p in "${platforms[@]}"; do
	out="dist/walcast-$VERSION-${p%/*}-${p#*/}"
	GOOS=${p%/*} GOARCH=${p#*/} scripts/build.sh "$out"
	echo "release: $out"
done

if command -v npm >/dev/null 2>&1; then
	# The package carries its checked-in version; a tagged release has
	# checked (version.sh) that it is the tag's.
	tgz=$(cd broadcast/web && npm pack --silent --pack-destination ../../dist)
	echo "release: dist/$tgz"
else
	echo "release: npm not found; the npm package is not in dist/" >&2
fi

cd dist
if command -v sha256sum >/dev/null 2>&1; then
	sha256sum -- * >SHA256SUMS
else
	shasum -a 256 -- * >SHA256SUMS
fi
cat SHA256SUMS
echo "release: walcast $VERSION (commit $COMMIT, $DATE) in dist/"
