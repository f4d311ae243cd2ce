#!/usr/bin/env bash
# The benchmark: builds chatload, starts a chatd of its own on a fresh
# database, runs the standard workloads against it, prints one table and
# stops everything it started.
#
#   bench/run.sh [--chatd PATH] [--postgres] [--sqlite-only] [--duration S]
#                [--workloads LIST]
#
#   --chatd PATH   the chatd to measure (default: ./chatd of this tree)
#   --postgres     also measure on a throwaway Postgres (tests/servers.sh),
#                  migrated with `chatd migrate up`
#   --duration S   measured seconds per workload (default 10)
#   --workloads L  comma-separated names from the list below (default all)
#
# Everything (database, logs, each workload's full report) goes to a
# temporary directory that is printed at the end and kept for reading.
# See docs/benchmarks.md for what each workload measures.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$bench_dir/.." && pwd)
chatd="$root/chatd"
postgres=0
duration=10
only=""

while (($#)); do
	case "$1" in
	--chatd) chatd=$2; shift 2 ;;
	--postgres) postgres=1; shift ;;
	--duration) duration=$2; shift 2 ;;
	--workloads) only=$2; shift 2 ;;
	-h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
[[ -x "$chatd" ]] || { echo "run.sh: $chatd is not an executable (build chatd first, or --chatd PATH)" >&2; exit 1; }

# name | chatload arguments. Every user is held to 19 frames/s by chatload
# (chatd allows 20/s per user), so a closed loop's ceiling is users x 19
# until chatd itself is the limit: the "ceiling" workloads use enough users
# that chatd, not the per-user limit, bounds them.
workloads=(
	"closed-200x2|--users 200 --conv-size 2 --window 8"
	"closed-200x10|--users 200 --conv-size 10 --window 8"
	"closed-3000x2|--users 3000 --conv-size 2 --window 8"
	"open-2000|--users 400 --conv-size 2 --rate 2000"
	"open-5000|--users 500 --conv-size 2 --rate 5000"
	"fanout-2000x10|--users 2000 --conv-size 10 --window 8"
)

# Both processes hold one socket per user.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
chmod 755 "$work" # the postgres system user must reach its data dir below
chatd_pid=""
servers_started=0

run_cleanup() {
	run_stop_chatd
	if ((servers_started)); then
		"$root/tests/servers.sh" stop "$work/servers" || true
	fi
}
trap run_cleanup EXIT

"$root/scripts/deps.sh" bench
echo "run.sh: building chatload" >&2
read -r -a bench_flags <<<"$(pkg-config --cflags --libs libwebsockets json-c libuv)"
cc -std=gnu11 -O2 -Wall -Wextra -o "$work/chatload" "$bench_dir/chatload.c" \
	"${bench_flags[@]}" -pthread -lm

run_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts chatd on database $1; sets chatd_pid and chatd_url.
run_start_chatd() {
	local db=$1 port i
	port=$(run_free_port)
	chatd_url="http://127.0.0.1:$port"
	"$chatd" --database "$db" --data-dir "$root" --listen "127.0.0.1:$port" \
		--log-level warn >"$work/chatd-$backend.log" 2>&1 &
	chatd_pid=$!
	for ((i = 0; i < 100; i++)); do
		if curl -sf "$chatd_url/health" >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$chatd_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/chatd-$backend.log" >&2
	echo "run.sh: chatd did not start" >&2
	exit 1
}

run_stop_chatd() {
	if [[ -n "$chatd_pid" ]]; then
		kill -TERM "$chatd_pid" 2>/dev/null || true
		wait "$chatd_pid" 2>/dev/null || true
		chatd_pid=""
	fi
}

# Runs every selected workload against the running chatd.
run_workloads() {
	local w name args pg_args=() prefix
	# One set of users per backend: later workloads log the same users in
	# again instead of registering new ones (half the password hashing).
	prefix="u$RANDOM"
	if [[ -n "${pg_pid:-}" ]]; then
		pg_args=(--pg-pid "$pg_pid")
	fi
	for w in "${workloads[@]}"; do
		name=${w%%|*}
		args=${w#*|}
		if [[ -n "$only" && ",$only," != *",$name,"* ]]; then
			continue
		fi
		echo "run.sh: $backend $name: chatload $args --duration $duration" >&2
		# shellcheck disable=SC2086
		# chatload stops by itself; the timeout is only a guard
		if ! timeout $((duration + 600)) "$work/chatload" --url "$chatd_url" --chatd-pid "$chatd_pid" \
			"${pg_args[@]}" --prefix "$prefix" --duration "$duration" \
			$args >"$work/$backend-$name.out" 2>"$work/$backend-$name.err"; then
			echo "run.sh: $backend $name reported lost or duplicated messages" >&2
		fi
		sed -n 's/^RESULT /backend='"$backend"' name='"$name"' /p' \
			"$work/$backend-$name.out" >>"$work/results"
	done
}

: >"$work/results"

backend=sqlite
pg_pid=""
run_start_chatd "sqlite:$work/chat.db"
run_workloads
run_stop_chatd

if ((postgres)); then
	backend=postgres
	mkdir "$work/servers"
	servers_started=1
	eval "$("$root/tests/servers.sh" start "$work/servers")"
	pg_url=$CHATD_TEST_PG_URL
	pg_pid=$(head -n 1 "$work/servers/pg/postmaster.pid")
	"$chatd" migrate up --database "$pg_url" --data-dir "$root" \
		>"$work/migrate.log" 2>&1 ||
		{ cat "$work/migrate.log" >&2; exit 1; }
	run_start_chatd "$pg_url"
	run_workloads
	run_stop_chatd
fi

# The table: one row per backend and workload.
awk '
function get(k,   i, kv) {
	for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] }
	return "-"
}
BEGIN {
	printf "%-9s %-15s %9s %11s %8s %8s %8s %8s %5s %4s %6s %6s %6s\n",
		"backend", "workload", "acked/s", "deliver/s", "p50 ms", "p99 ms",
		"p99.9ms", "max ms", "lost", "dup", "chatd%", "pg%", "load%"
}
{
	printf "%-9s %-15s %9s %11s %8s %8s %8s %8s %5s %4s %6s %6s %6s\n",
		get("backend"), get("name"), get("acked_per_s"), get("deliveries_per_s"),
		get("p50_ms"), get("p99_ms"), get("p999_ms"), get("max_ms"),
		get("lost"), get("dup"), get("chatd_cpu"), get("pg_cpu"), get("self_cpu")
}' "$work/results"
echo "run.sh: full reports in $work" >&2
