#!/usr/bin/env bash
# version.sh prints walcast's build stamp as shell assignments, for
# scripts/build.sh, `make release` and `make docker`:
#
#   VERSION=0.1.0                     the tag v0.1.0 is on HEAD
#   VERSION=0.1.0-dev+3f2a1b9c0d4e    between releases: the next release
#                                     (broadcast/web/package.json's version,
#                                     which the npm package ships) and the commit
#   COMMIT=3f2a1b9c0d4e…              the full commit (with -dirty for
#                                     uncommitted changes)
#   DATE=2026-12-02T04:35:56Z         the commit's date, UTC
#   SOURCE_DATE_EPOCH=1796186156      the same date in seconds
#
# The date is the commit's, not the clock's, so building one commit twice
# gives the same bytes. Variables already set in the environment win: a
# Docker build has no .git and receives them as build arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pkg_version() {
	sed -n 's/^  "version": "\([^"]*\)".*/\1/p' broadcast/web/package.json
}

if git rev-parse --git-dir >/dev/null 2>&1; then
	head=$(git rev-parse HEAD)
	dirty=""
	if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
		dirty="-dirty"
	fi
	: "${COMMIT:=$head$dirty}"
	: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct HEAD)}"
	if tag=$(git describe --tags --exact-match --match 'v[0-9]*' HEAD 2>/dev/null) && [[ -z $dirty ]]; then
		: "${VERSION:=${tag#v}}"
	else
		: "${VERSION:=$(pkg_version)-dev+${head:0:12}${dirty:+.dirty}}"
	fi
fi
: "${VERSION:=$(pkg_version)-dev}"
: "${COMMIT:=unknown}"
if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
	: "${DATE:=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)}"
else
	# No git and no stamp given (a plain `docker build`): nothing to date.
	SOURCE_DATE_EPOCH=0
	: "${DATE:=unknown}"
fi

# A tagged release and the npm package must carry the same version.
if [[ $VERSION != *-* && $VERSION != "$(pkg_version)" ]]; then
	echo "version.sh: tag says $VERSION but broadcast/web/package.json says $(pkg_version); set the package's version to $VERSION before tagging" >&2
	exit 1
fi

printf 'VERSION=%q\nCOMMIT=%q\nDATE=%q\nSOURCE_DATE_EPOCH=%q\n' "$VERSION" "$COMMIT" "$DATE" "$SOURCE_DATE_EPOCH"
