#!/bin/sh
# Runs the integration suite (pytest) against the chatd just built.
#
# `make check` runs this with CHATD_BIN, CHATD_TEST_DATA_DIR and
# CHATD_TEST_SRCDIR set (Makefile.am), plus CHATD_TEST_PG_URL and
# CHATD_TEST_REDIS_URL when tests/servers.sh started servers. Exit codes
# follow automake's test driver: 0 pass, 1 fail, 99 hard error. It never
# exits 77: a suite that cannot run is an error, not a skip, and a pytest
# run that skipped any test fails, so a skip can never pass for success.
#
# Nothing is written into the source tree (distcheck makes it read-only):
# no .pytest_cache, no __pycache__; pytest's own temporary files go to a
# directory removed on exit.
set -u

PYTHON=/usr/bin/python3

run_pytest_error() {
	echo "run-pytest.sh: $*" >&2
	exit 99
}

# The Debian python3 by full path: PATH may hold another one without pytest.
if ! "$PYTHON" -c 'import pytest, websockets' 2>/dev/null; then
	run_pytest_error "$PYTHON with pytest and websockets is needed;" \
		"run: scripts/deps.sh test"
fi

srcdir=${CHATD_TEST_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
[ -d "$srcdir/tests/integration" ] ||
	run_pytest_error "no tests/integration under CHATD_TEST_SRCDIR=$srcdir"
if [ -z "${CHATD_BIN:-}" ] || [ ! -x "$CHATD_BIN" ]; then
	run_pytest_error "CHATD_BIN=${CHATD_BIN:-} is not the built chatd"
fi

tmp=$(mktemp -d) || run_pytest_error "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 99' HUP INT TERM

PYTHONDONTWRITEBYTECODE=1
export PYTHONDONTWRITEBYTECODE

# -rfEs names every failed, erroring and skipped test in the summary.
"$PYTHON" -m pytest -q -p no:cacheprovider -rfEs --basetemp="$tmp/pytest" \
	"$srcdir/tests/integration" >"$tmp/out" 2>&1
rc=$?
cat "$tmp/out"

case $rc in
0)
	# pytest's last line counts outcomes: "12 passed, 1 skipped in 0.50s".
	if tail -n 1 "$tmp/out" | grep -Eq '[0-9]+ skipped'; then
		echo "run-pytest.sh: FAIL: tests were skipped (listed above);" \
			"a skipped test does not pass" >&2
		exit 1
	fi
	exit 0
	;;
1) exit 1 ;;
5) run_pytest_error "pytest collected no tests" ;;
*) run_pytest_error "pytest could not run the suite (exit $rc)" ;;
esac
