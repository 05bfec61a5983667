#!/usr/bin/env bash
# install-deps.sh makes sure this machine has what walcast's make targets
# need, and prints nothing when all of it is present:
#
#   install-deps.sh          for `make test`: Go, the PostgreSQL and Redis
#                            server programs that internal/launch starts
#                            for the integration tests, and for the browser
#                            tests (cmd/walcast/browser_test.go,
#                            clientpkg_test.go) Node.js 20+, npm, Chromium and
#                            broadcast/web's npm packages
#   install-deps.sh --demo   for `make demo`: Go, PostgreSQL and Redis only
#   --dry-run                say what is missing and exactly what would be
#                            run to install it; change nothing
#
# When something is missing and we are root on a Debian-like system, it
# installs the missing packages with apt-get; otherwise it says which packages
# to install and exits 1. Running it again changes nothing.
#
# To add a requirement, add a `need` line at the bottom: a description, a
# check command, and the Debian packages that provide it.
#
# For its tests (cmd/walcast/installdeps_test.go), which run it with a fake
# PATH and a fake apt-get: INSTALL_DEPS_PG_LIB replaces /usr/lib/postgresql
# and INSTALL_DEPS_WEB_DIR replaces broadcast/web.
set -euo pipefail

mode=test
dry_run=false
for arg in "$@"; do
	case $arg in
	--demo) mode=demo ;;
	--dry-run) dry_run=true ;;
	*)
		echo "usage: install-deps.sh [--demo] [--dry-run]" >&2
		exit 2
		;;
	esac
done

# Only bash builtins decide what is missing, so the tests can give a PATH
# holding nothing but fakes.
here=${BASH_SOURCE[0]%/*}
[[ $here == "${BASH_SOURCE[0]}" ]] && here=.
pg_lib=${INSTALL_DEPS_PG_LIB:-/usr/lib/postgresql}
web_dir=${INSTALL_DEPS_WEB_DIR:-$here/../broadcast/web}

have() { command -v "$1" >/dev/null 2>&1; }

# have_pg_server: initdb and postgres on PATH, or in a versioned Debian folder,
# where the postgresql package puts them without linking them onto PATH. This
# is the same search internal/launch makes.
have_pg_server() {
	if have initdb && have postgres; then
		return 0
	fi
	local dir
	for dir in "$pg_lib"/*/bin; do
		if [[ -x $dir/initdb && -x $dir/postgres ]]; then
			return 0
		fi
	done
	return 1
}

# have_node20: the browser test needs Node.js 20 or newer, for its
# WebSocket and test runner. (Debian 12's own nodejs is 18: too old.)
have_node20() {
	have node && (($(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0) >= 20))
}

missing_what=()
missing_pkgs=()
checks=()

# need DESCRIPTION CHECK PACKAGE...: records a requirement and, when CHECK
# fails, what to install for it.
need() {
	local what=$1 check=$2
	shift 2
	checks+=("$check")
	if ! eval "$check"; then
		missing_what+=("$what")
		missing_pkgs+=("$@")
	fi
}

# Go is not installed from apt: Debian's golang is older than go.mod needs.
if ! have go; then
	echo "install-deps: Go is missing; install Go 1.26 or newer from https://go.dev/dl/ and put its bin folder on PATH" >&2
	exit 1
fi

need "PostgreSQL server (initdb, postgres)" have_pg_server postgresql
need "Redis server (redis-server)" "have redis-server" redis-server
if [[ $mode == test ]]; then
	need "Node.js 20 or newer (node)" have_node20 nodejs
	need "npm" "have npm" npm
	need "Chromium (headless browser for the dashboard test)" "have chromium" chromium
fi

# web_deps installs broadcast/web's npm devDependencies (playwright-core for
# the dashboard test, react and react-test-renderer for the hook's test,
# pinned by package-lock.json) when node_modules is missing or older than
# the lock file. npm never downloads a browser here: the test uses Chromium.
web_deps() {
	[[ $mode == test ]] || return 0
	if [[ -f $web_dir/node_modules/.package-lock.json && ! $web_dir/package-lock.json -nt $web_dir/node_modules/.package-lock.json ]]; then
		return 0
	fi
	if $dry_run; then
		echo "install-deps: would run: npm ci in broadcast/web"
		return 0
	fi
	echo "install-deps: npm ci in broadcast/web"
	(cd "$web_dir" && npm ci --no-audit --no-fund --loglevel=error)
}

if ((${#missing_pkgs[@]} == 0)); then
	web_deps
	exit 0
fi

if ((EUID != 0)) || ! have apt-get; then
	echo "install-deps: missing: ${missing_what[*]}" >&2
	echo "install-deps: install them, for example with:" >&2
	echo "    sudo apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
	if $dry_run; then
		exit 0
	fi
	exit 1
fi

if $dry_run; then
	echo "install-deps: would install ${missing_pkgs[*]} (missing: ${missing_what[*]})"
	echo "install-deps: would run: apt-get update -qq"
	echo "install-deps: would run: apt-get install -y -qq --no-install-recommends ${missing_pkgs[*]}"
	web_deps
	exit 0
fi

echo "install-deps: installing ${missing_pkgs[*]} (missing: ${missing_what[*]})"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null

# Installing is not proof: check again, so a broken install fails here and not
# as a puzzling test failure later.
for check in "${checks[@]}"; do
	if ! eval "$check"; then
		echo "install-deps: still missing after apt-get install: $check" >&2
		if [[ $check == have_node20 ]]; then
			echo "install-deps: this system's nodejs package is older than 20; install Node.js 20 or newer (with npm) another way" >&2
		fi
		exit 1
	fi
done
web_deps
