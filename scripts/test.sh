#!/usr/bin/env bash
# Builds chatd and runs every test, the way CI does (.ci/run).
#
#   ./scripts/test.sh
#
# On a fresh Debian 12 machine, as root, this is all the set-up there is:
#  1. scripts/deps.sh test installs whatever packages are missing;
#  2. throwaway Postgres and Redis start on loopback (tests/servers.sh) and
#     are stopped on exit, whatever happens; their URLs are exported as
#     CHATD_TEST_PG_URL and CHATD_TEST_REDIS_URL, and a first check proves
#     that both answer;
#  3. build/: an out-of-tree build with -Werror, then `make check`;
#  4. build-asan/: the same with ASan and UBSan, leaks detected, any
#     report fatal;
#  5. the browser tests (tests/e2e/run-e2e.sh): headless Chromium drives
#     the web client against build/chatd on its own SQLite file; the
#     screenshots stay in build/e2e-artifacts;
#  6. the monitoring stack (tests/monitoring/run.sh): a real Prometheus with
#     the repository's rules scrapes build/chatd and the exporters, and every
#     dashboard query runs against it and against Postgres;
#  7. build/: `make distcheck`, which proves the tarball builds and passes.
# Every step runs even when an earlier one failed, so one run shows all
# that is broken. The servers are emptied before each test run.
#
# At the end: the logs of whatever failed, one PASS/FAIL line per test
# program or suite of each build, and as the very last line
# `N passed, M failed`. The exit status is 0 only if nothing failed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
test_root=$PWD
test_jobs=$(nproc)
test_passed=0
test_failed=0
test_results=() # "PASS label" / "FAIL label", in order
test_fail_logs=() # files to print at the end
test_srv=""
test_built=() # builds that compiled

test_step() {
	printf '\n==> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"
}

test_record() {
	local result=$1 label=$2
	if [[ "$result" == PASS ]]; then
		test_passed=$((test_passed + 1))
	else
		test_failed=$((test_failed + 1))
	fi
	test_results+=("$(printf '%-5s %s' "$result" "$label")")
}

# Stops the servers on any exit: success, failure, ^C or kill.
# shellcheck disable=SC2317 # reached through the EXIT trap
test_cleanup() {
	if [[ -n "$test_srv" ]]; then
		"$test_root/tests/servers.sh" stop "$test_srv" || true
		rm -rf "$test_srv"
		test_srv=""
	fi
}
trap test_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the logs of what failed, the results, the count line; exits.
test_finish() {
	local f line
	for f in "${test_fail_logs[@]}"; do
		printf '\n==> log: %s\n' "${f#"$test_root"/}"
		cat "$f"
	done
	test_step "summary"
	for line in "${test_results[@]}"; do
		echo "$line"
	done
	echo "$test_passed passed, $test_failed failed"
	if ((test_failed > 0 || test_passed == 0)); then
		exit 1
	fi
	exit 0
}

# Runs a command with its output on the terminal and in a file; returns
# the command's status.
test_run_logged() {
	local log=$1
	shift
	"$@" 2>&1 | tee "$log"
	return "${PIPESTATUS[0]}"
}

# Keeps what explains a failed step for the end of the run: its error
# lines (with make -j the first error can scroll far up), then its end.
test_keep_tail() {
	local out=$1
	{
		echo "--- error lines:"
		grep -E -A4 'error:|\*\*\*|fatal' "$out" | head -n 80
		echo "--- last lines:"
		tail -n 40 "$out"
	} >"$out.tail"
	test_fail_logs+=("$out.tail")
}

# Records one result per test the automake harness ran under DIR (from
# its .trs files) and queues the logs of those that did not pass. Sets
# test_found and test_found_failed to how many it saw and how many failed.
test_collect() {
	local name=$1 dir=$2 trs result label
	test_found=0
	test_found_failed=0
	while IFS= read -r trs; do
		test_found=$((test_found + 1))
		result=$(sed -n 's/^:global-test-result: //p' "$trs")
		label="$name: ${trs#"$dir"/}"
		label=${label%.trs}
		case "$result" in
		PASS | XFAIL) test_record PASS "$label" ;;
		*)
			test_found_failed=$((test_found_failed + 1))
			test_record FAIL "$label (${result:-no result})"
			test_fail_logs+=("${trs%.trs}.log")
			;;
		esac
	done < <(find "$dir" -name '*.trs' -not -path '*/chatd-*/*' | sort)
}

# Empties the servers so each test run starts from nothing.
test_reset_servers() {
	if ! "$test_root/tests/servers.sh" reset "$test_srv"; then
		test_record FAIL "servers: reset before $1"
		return 1
	fi
}

# test_build NAME [configure options...]: configures NAME/ out of tree,
# builds, runs `make check` (with TEST_CHECK_ENV) and records the results.
test_build() {
	local name=$1 dir="$test_root/$1" rc
	shift
	test_step "$name: configure $*"
	mkdir -p "$dir"
	if ! (cd "$dir" && test_run_logged configure.out ../configure "$@"); then
		test_record FAIL "$name: configure (details in $name/config.log)"
		test_keep_tail "$dir/configure.out"
		return
	fi
	test_step "$name: make"
	if ! (cd "$dir" && test_run_logged make.out make -j"$test_jobs"); then
		test_record FAIL "$name: make"
		test_keep_tail "$dir/make.out"
		return
	fi
	test_reset_servers "$name" || return
	test_step "$name: make check"
	# A test that did not run this time must not be counted from last time.
	find "$dir" -name '*.trs' -not -path '*/chatd-*/*' -delete
	(cd "$dir" && test_run_logged check.out \
		env "${TEST_CHECK_ENV[@]}" make -j"$test_jobs" check)
	rc=$?
	test_collect "$name" "$dir"
	if ((test_found == 0)); then
		test_record FAIL "$name: make check ran no test (exit $rc)"
		test_keep_tail "$dir/check.out"
	elif ((rc != 0 && test_found_failed == 0)); then
		# Every test passed, yet make check failed: say so.
		test_record FAIL "$name: make check (exit $rc)"
		test_keep_tail "$dir/check.out"
	fi
	test_built+=("$name")
}

# The browser tests, one suite, against the chatd of build/.
test_e2e() {
	local dir="$test_root/build" rc n
	if [[ " ${test_built[*]} " != *" build "* ]]; then
		test_record FAIL "e2e: browser tests (not run: build/ did not build)"
		return
	fi
	test_step "e2e: browser tests in headless Chromium (tests/e2e/run-e2e.sh)"
	(cd "$test_root" && test_run_logged "$dir/e2e.out" \
		env CHATD_E2E_ARTIFACTS="$dir/e2e-artifacts" \
		tests/e2e/run-e2e.sh "$dir/chatd")
	rc=$?
	n=$(sed -n 's/^run-e2e.sh: \([0-9]*\) passed, 0 failed.*/\1/p' "$dir/e2e.out")
	if ((rc == 0)) && [[ -n "$n" ]]; then
		test_record PASS "e2e: browser tests ($n tests; screenshots in build/e2e-artifacts)"
	else
		test_record FAIL "e2e: browser tests (exit $rc; screenshots in build/e2e-artifacts)"
		test_keep_tail "$dir/e2e.out"
	fi
}

# The monitoring stack's verification, one suite, against build/chatd.
test_monitoring() {
	local dir="$test_root/build" rc n
	if [[ " ${test_built[*]} " != *" build "* ]]; then
		test_record FAIL "monitoring: stack verification (not run: build/ did not build)"
		return
	fi
	test_step "monitoring: Prometheus, dashboards, roles (tests/monitoring/run.sh)"
	(cd "$test_root" && test_run_logged "$dir/monitoring.out" \
		tests/monitoring/run.sh "$dir/chatd")
	rc=$?
	n=$(sed -n 's/^run.sh: \([0-9]*\) passed, 0 failed$/\1/p' "$dir/monitoring.out")
	if ((rc == 0)) && [[ -n "$n" ]]; then
		test_record PASS "monitoring: stack verification ($n tests)"
	else
		test_record FAIL "monitoring: stack verification (exit $rc)"
		test_keep_tail "$dir/monitoring.out"
	fi
}

test_distcheck() {
	local dir="$test_root/build" rc f
	test_reset_servers distcheck || return
	test_step "build: make distcheck"
	(cd "$dir" && test_run_logged distcheck.out \
		env DISTCHECK_CONFIGURE_FLAGS=--enable-werror \
		make -j"$test_jobs" distcheck)
	rc=$?
	if ((rc == 0)); then
		test_record PASS "build: make distcheck"
		return
	fi
	test_record FAIL "build: make distcheck (exit $rc)"
	# A failed distcheck leaves its tree behind: show the failed tests.
	while IFS= read -r f; do
		test_fail_logs+=("$f")
	done < <(find "$dir" -path '*/chatd-*/*' -name test-suite.log 2>/dev/null)
	test_keep_tail "$dir/distcheck.out"
}

test_step "packages (scripts/deps.sh test)"
if ! ./scripts/deps.sh test; then
	test_record FAIL "set-up: scripts/deps.sh test"
	test_finish
fi

if [[ ! -x configure || configure.ac -nt configure || Makefile.am -nt Makefile.in ]]; then
	test_step "autogen.sh"
	if ! ./autogen.sh; then
		test_record FAIL "set-up: autogen.sh"
		test_finish
	fi
fi

# configure refuses an out-of-tree build while the source tree itself is
# configured (scripts/run.sh builds there); scripts/run.sh redoes it later.
if [[ -f config.status ]]; then
	test_step "make distclean in the source tree (scripts/run.sh rebuilds it)"
	if ! make distclean >/dev/null; then
		rm -f config.status config.h config.log Makefile stamp-h1 chatd
		find src tests \( -name '*.o' -o -name '*.a' \) -delete
		find tests/unit -type f -name 'check_*' ! -name '*.c' -delete
		find src tests \( -name .deps -o -name .dirstamp \) -exec rm -rf {} +
	fi
fi

test_step "throwaway Postgres and Redis (tests/servers.sh)"
test_srv=$(mktemp -d)
if ! test_env=$("$test_root/tests/servers.sh" start "$test_srv"); then
	test_record FAIL "set-up: tests/servers.sh start"
	test_finish
fi
eval "$test_env"
export CHATD_TEST_PG_URL CHATD_TEST_REDIS_URL
echo "$test_env"

# The harness itself is tested: both servers must answer a client.
if [[ "$(psql -X -A -t "$CHATD_TEST_PG_URL" -c 'select 1' 2>&1)" == 1 ]] &&
	[[ "$(redis-cli -u "$CHATD_TEST_REDIS_URL" ping 2>&1)" == PONG ]]; then
	test_record PASS "servers: Postgres and Redis answer"
else
	test_record FAIL "servers: Postgres and Redis answer"
fi

TEST_CHECK_ENV=()
test_build build --enable-werror

TEST_CHECK_ENV=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
test_build build-asan --enable-werror --enable-sanitizers

TEST_CHECK_ENV=()
test_e2e
test_monitoring

if [[ " ${test_built[*]} " == *" build "* ]]; then
	test_distcheck
else
	test_record FAIL "build: make distcheck (not run: build/ did not build)"
fi

test_finish
