#!/usr/bin/env bash
# Installs the Debian 12 packages chatd needs, and only those missing.
#
#   scripts/deps.sh build   what building and running chatd needs
#   scripts/deps.sh test    that, plus the servers and tools the tests use
#
# Each package is looked up with dpkg-query first, so when everything is
# there apt is not touched at all (no `apt-get update`, no root needed);
# otherwise apt-get update runs once and the missing packages are installed
# without questions. Used by scripts/run.sh and scripts/test.sh.
set -euo pipefail

DEPS_BUILD=(
	build-essential autoconf automake pkg-config
	libwebsockets-dev libjson-c-dev libsqlite3-dev libpq-dev
	libhiredis-dev libcrypt-dev libssl-dev check
)
# postgresql and redis-server for the throwaway servers, prometheus for
# promtool, python3 with pytest and websockets for the integration tests.
DEPS_TEST=(
	postgresql redis-server prometheus
	python3 python3-pytest python3-websockets curl
)

deps_usage() {
	echo "usage: $0 build|test" >&2
	exit 2
}

deps_installed() {
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

[[ $# -eq 1 ]] || deps_usage
case "$1" in
build) deps_wanted=("${DEPS_BUILD[@]}") ;;
test) deps_wanted=("${DEPS_BUILD[@]}" "${DEPS_TEST[@]}") ;;
*) deps_usage ;;
esac

command -v dpkg-query >/dev/null 2>&1 || {
	echo "deps.sh: no dpkg-query: this script knows Debian 12 only;" \
		"install by hand: ${deps_wanted[*]}" >&2
	exit 1
}

deps_missing=()
for deps_pkg in "${deps_wanted[@]}"; do
	deps_installed "$deps_pkg" || deps_missing+=("$deps_pkg")
done
if [[ ${#deps_missing[@]} -eq 0 ]]; then
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
