#!/usr/bin/env bash
# Installs the Debian 12 packages chatd needs, and only those missing.
#
#   scripts/deps.sh build   what building and running chatd needs
#   scripts/deps.sh test    that, plus the servers and tools the tests use,
#                           and playwright-core in tests/e2e/node_modules
#   scripts/deps.sh bench   what bench/run.sh needs besides the build
#
# Each package is looked up with dpkg-query first, so when everything is
# there apt is not touched at all (no `apt-get update`, no root needed);
# otherwise apt-get update runs once and the missing packages are installed
# without questions. Used by scripts/run.sh and scripts/test.sh.
set -euo pipefail

# chatd runs libwebsockets on a libuv loop: libuv's headers, and lws's
# libuv event library (a plugin lws loads when the context starts).
DEPS_BUILD=(
	build-essential autoconf automake pkg-config
	libwebsockets-dev libwebsockets-evlib-uv libuv1-dev libjson-c-dev libsqlite3-dev libpq-dev
	libhiredis-dev libcrypt-dev libssl-dev check
)
# postgresql and redis-server for the throwaway servers, prometheus for
# promtool, the exporters, python3-yaml, docker-compose (for
# `docker-compose config` only, no Docker daemon) and shellcheck for the
# monitoring suite, python3 with pytest and websockets for the integration tests,
# chromium (driven by playwright-core from npm, which never downloads a
# browser of its own) and an emoji font for the browser tests, nginx and
# openssl (a throwaway certificate) for the proxy example's test. Node.js
# and npm come from Debian when there is no node at all (see deps_node).
DEPS_TEST=(
	postgresql redis-server prometheus
	prometheus-postgres-exporter prometheus-redis-exporter
	prometheus-node-exporter python3-yaml docker-compose shellcheck
	python3 python3-pytest python3-websockets curl
	chromium fonts-noto-color-emoji nginx openssl
)

# The load generator runs libwebsockets on libuv loops; the Postgres run
# uses the throwaway servers; the scripts wait on chatd with curl.
DEPS_BENCH=(libuv1-dev postgresql redis-server python3 curl)

deps_usage() {
	echo "usage: $0 build|test|bench" >&2
	exit 2
}

deps_installed() {
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# npm as a command line: the one on PATH, else the copy some Node.js
# packages carry without linking it; nothing if there is neither.
deps_npm_cmd() {
	local cli=/usr/lib/node_modules/npm/bin/npm-cli.js
	if command -v npm >/dev/null 2>&1; then
		echo npm
	elif command -v node >/dev/null 2>&1 && [[ -f "$cli" ]]; then
		echo "node $cli"
	fi
}

# The Debian packages Node.js still needs. A node from elsewhere (another
# repository's nodejs package) is used as it is: Debian's npm would conflict.
deps_node() {
	if ! command -v node >/dev/null 2>&1; then
		echo nodejs npm
	elif [[ -z "$(deps_npm_cmd)" ]]; then
		echo npm
	fi
}

# Installs the browser tests' npm packages from the committed lock file,
# when they are missing or older than it. The lock pins playwright-core,
# which drives the system's chromium and downloads nothing else.
deps_e2e_modules() {
	local dir=tests/e2e npm
	[[ -f "$dir/node_modules/playwright-core/package.json" &&
		! "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]] && return 0
	npm=$(deps_npm_cmd)
	[[ -n "$npm" ]] || {
		echo "deps.sh: no npm to install $dir/node_modules with" >&2
		exit 1
	}
	echo "deps.sh: npm ci in $dir" >&2
	# shellcheck disable=SC2086 # "node <cli>" is two words on purpose
	(cd "$dir" && $npm ci --no-audit --no-fund --loglevel=error) || {
		echo "deps.sh: npm ci in $dir failed" >&2
		exit 1
	}
}

[[ $# -eq 1 ]] || deps_usage
case "$1" in
build) deps_wanted=("${DEPS_BUILD[@]}") ;;
test) deps_wanted=("${DEPS_BUILD[@]}" "${DEPS_TEST[@]}") ;;
bench) deps_wanted=("${DEPS_BUILD[@]}" "${DEPS_BENCH[@]}") ;;
*) deps_usage ;;
esac

command -v dpkg-query >/dev/null 2>&1 || {
	echo "deps.sh: no dpkg-query: this script knows Debian 12 only;" \
		"install by hand: ${deps_wanted[*]}" >&2
	exit 1
}

cd "$(dirname "$0")/.."

deps_missing=()
for deps_pkg in "${deps_wanted[@]}"; do
	deps_installed "$deps_pkg" || deps_missing+=("$deps_pkg")
done
if [[ "$1" == test ]]; then
	# shellcheck disable=SC2207 # plain package names
	deps_missing+=($(deps_node))
fi
if [[ ${#deps_missing[@]} -eq 0 ]]; then
	[[ "$1" == test ]] && deps_e2e_modules
	exit 0
fi

echo "deps.sh: installing ${deps_missing[*]}" >&2
deps_sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1; then
		deps_sudo=(sudo)
	else
		echo "deps.sh: missing packages and not root; as root run:" \
			"apt-get install ${deps_missing[*]}" >&2
		exit 1
	fi
fi
# Wait for another apt or dpkg run to finish instead of failing at once.
deps_apt=("${deps_sudo[@]}" env DEBIAN_FRONTEND=noninteractive
	apt-get -q -o DPkg::Lock::Timeout=600)
"${deps_apt[@]}" update
"${deps_apt[@]}" install -y --no-install-recommends "${deps_missing[@]}"

for deps_pkg in "${deps_missing[@]}"; do
	deps_installed "$deps_pkg" || {
		echo "deps.sh: $deps_pkg is still not installed" >&2
		exit 1
	}
done
if [[ "$1" == test ]]; then
	deps_e2e_modules
fi
