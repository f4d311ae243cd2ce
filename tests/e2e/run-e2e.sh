#!/bin/sh
# Runs the browser tests (tests/e2e/chat.test.js) in headless Chromium
# against the chatd just built.
#
#   tests/e2e/run-e2e.sh [CHATD_BIN]
#
# CHATD_BIN defaults to build/chatd of the source tree. The tests start their
# own chatd on a free loopback port with a SQLite file in a temporary
# directory. Screenshots and chatd's log go to CHATD_E2E_ARTIFACTS (default
# build/e2e-artifacts), emptied first; the run prints where.
#
# Needs Node.js, Debian's chromium at /usr/bin/chromium (CHROMIUM overrides)
# and playwright-core in tests/e2e/node_modules: scripts/deps.sh test puts
# them there. Without any of them the suite fails; it never skips. Exit
# codes follow automake's test driver: 0 pass, 1 fail, 99 cannot run.
set -u

e2e_error() {
	echo "run-e2e.sh: $*" >&2
	exit 99
}

e2e_dir=$(cd "$(dirname "$0")" && pwd) || e2e_error "cannot find the script's directory"
srcdir=$(cd "$e2e_dir/../.." && pwd)

CHATD_BIN=${1:-${CHATD_BIN:-$srcdir/build/chatd}}
CHATD_TEST_SRCDIR=${CHATD_TEST_SRCDIR:-$srcdir}
CHATD_E2E_ARTIFACTS=${CHATD_E2E_ARTIFACTS:-$srcdir/build/e2e-artifacts}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
# The whole run is bounded; each test has its own bound inside.
E2E_TIMEOUT=${E2E_TIMEOUT:-900}

[ -x "$CHATD_BIN" ] || e2e_error "CHATD_BIN=$CHATD_BIN is not an executable (build chatd first)"
command -v node >/dev/null 2>&1 || e2e_error "node is not installed (run: scripts/deps.sh test)"
[ -x "$CHROMIUM" ] || e2e_error "$CHROMIUM is not installed (run: scripts/deps.sh test)"
[ -f "$e2e_dir/node_modules/playwright-core/package.json" ] ||
	e2e_error "playwright-core is not in tests/e2e/node_modules (run: scripts/deps.sh test)"

case $CHATD_BIN in /*) ;; *) CHATD_BIN=$PWD/$CHATD_BIN ;; esac
mkdir -p "$CHATD_E2E_ARTIFACTS" || e2e_error "cannot create $CHATD_E2E_ARTIFACTS"
CHATD_E2E_ARTIFACTS=$(cd "$CHATD_E2E_ARTIFACTS" && pwd)
rm -f "$CHATD_E2E_ARTIFACTS"/*.png "$CHATD_E2E_ARTIFACTS"/chatd.log
export CHATD_BIN CHATD_TEST_SRCDIR CHATD_E2E_ARTIFACTS CHROMIUM

echo "run-e2e.sh: $(node --version), $("$CHROMIUM" --version 2>/dev/null), chatd $CHATD_BIN"
echo "run-e2e.sh: artifacts in $CHATD_E2E_ARTIFACTS"

out=$(mktemp) || e2e_error "mktemp failed"
trap 'rm -f "$out"' EXIT
trap 'exit 99' HUP INT TERM

# The spec reporter ends with counts: "# pass 9", "# skipped 0" (TAP) or
# "ℹ pass 9" (spec). Node 18 and 20 both take --test-reporter.
(cd "$e2e_dir" && timeout -k 10 "$E2E_TIMEOUT" node --test --test-reporter=spec chat.test.js) \
	>"$out" 2>&1
rc=$?
cat "$out"

count() {
	sed -n "s/^[^a-z]*$1 \([0-9][0-9]*\)\$/\1/p" "$out" | tail -n 1
}
pass=$(count pass)
fail=$(count fail)
skipped=$(count skipped)
todo=$(count todo)
cancelled=$(count cancelled)

if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	echo "run-e2e.sh: FAIL: the run took longer than ${E2E_TIMEOUT}s" >&2
	exit 1
fi
if [ -z "$pass" ]; then
	echo "run-e2e.sh: FAIL: no test result was printed (exit $rc)" >&2
	exit 1
fi
if [ "${skipped:-0}" != 0 ] || [ "${todo:-0}" != 0 ] || [ "${cancelled:-0}" != 0 ]; then
	echo "run-e2e.sh: FAIL: tests were skipped, left to do or cancelled;" \
		"they do not pass" >&2
	exit 1
fi
if [ "$rc" -ne 0 ] || [ "${fail:-1}" != 0 ] || [ "$pass" -eq 0 ]; then
	echo "run-e2e.sh: FAIL: $pass passed, ${fail:-?} failed (exit $rc);" \
		"screenshots of the failure in $CHATD_E2E_ARTIFACTS" >&2
	exit 1
fi
echo "run-e2e.sh: $pass passed, 0 failed; screenshots in $CHATD_E2E_ARTIFACTS"
exit 0
