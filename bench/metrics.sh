#!/usr/bin/env bash
# /metrics and the collector on a big database: loads a fresh database in
# chatd's schema in bulk (bench/bulkload.py: --users users, each in a
# direct conversation and a group of 10, --messages messages), starts
# chatd on it with the default collector settings, scrapes /metrics at a
# steady pace (bench/scrape.py) and reports the scrape latency and every
# collector query's duration, per run of the collector.
#
#   bench/metrics.sh [--chatd PATH] [--backends postgres,sqlite]
#                    [--users N] [--messages M] [--scrapes N] [--rate R]
#                    [--repeat R] [--keep]
#
#   --chatd PATH    the chatd to measure (default: ./chatd of this tree)
#   --backends L    postgres, sqlite or both (default postgres,sqlite)
#   --users N       default 100000
#   --messages M    default 10000000
#   --scrapes N     scrapes per run (default 1000, at --rate 20/s: 50 s,
#                   three runs of each collector query at its default
#                   15 s interval)
#   --repeat R      chatd runs on the same loaded database (default 3)
#   --keep          keep the databases (the directory is printed)
#
# Postgres is a throwaway server (tests/servers.sh: fsync on,
# synchronous_commit on); loading 10 million messages takes a few
# minutes per backend. Everything stops by itself.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$bench_dir/.." && pwd)
chatd="$root/chatd"
backends="postgres,sqlite"
users=100000
messages=10000000
scrapes=1000
rate=20
repeat=3
keep=0

while (($#)); do
	case "$1" in
	--chatd) chatd=$2; shift 2 ;;
	--backends) backends=$2; shift 2 ;;
	--users) users=$2; shift 2 ;;
	--messages) messages=$2; shift 2 ;;
	--scrapes) scrapes=$2; shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	-h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "metrics.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
[[ -x "$chatd" ]] || { echo "metrics.sh: $chatd is not an executable (build chatd first, or --chatd PATH)" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work" # the postgres system user must reach its data dir
chatd_pid=""
servers_started=0
metrics_cleanup() {
	if [[ -n "$chatd_pid" ]]; then
		kill -TERM "$chatd_pid" 2>/dev/null || true
		wait "$chatd_pid" 2>/dev/null || true
	fi
	if ((servers_started)); then
		"$root/tests/servers.sh" stop "$work/servers" || true
	fi
	if ((keep)); then
		echo "metrics.sh: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap metrics_cleanup EXIT

metrics_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

: >"$work/results"
IFS=, read -r -a backend_list <<<"$backends"
for backend in "${backend_list[@]}"; do
	case "$backend" in
	postgres)
		mkdir -p "$work/servers"
		servers_started=1
		eval "$("$root/tests/servers.sh" start "$work/servers")"
		db=$CHATD_TEST_PG_URL
		;;
	sqlite) db="sqlite:$work/big.db" ;;
	*) echo "metrics.sh: unknown backend $backend" >&2; exit 2 ;;
	esac
	"$chatd" migrate up --database "$db" --data-dir "$root" >"$work/migrate-$backend.log"
	echo "metrics.sh: $backend: loading $users users and $messages messages" >&2
	SECONDS=0
	python3 "$bench_dir/bulkload.py" --database "$db" --users "$users" \
		--messages "$messages" --prefix big
	echo "metrics.sh: $backend: loaded in $SECONDS s" >&2
	for ((r = 1; r <= repeat; r++)); do
		port=$(metrics_free_port)
		"$chatd" --database "$db" --data-dir "$root" \
			--listen "127.0.0.1:$port" --log-level warn \
			>"$work/chatd-$backend-$r.log" 2>&1 &
		chatd_pid=$!
		for ((i = 0; i < 100; i++)); do
			curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
			sleep 0.1
		done
		echo "metrics.sh: $backend run $r: $scrapes scrapes at $rate/s" >&2
		python3 "$bench_dir/scrape.py" --url "http://127.0.0.1:$port" \
			--scrapes "$scrapes" --rate "$rate" | tee "$work/scrape-$backend-$r.out" >&2
		sed -n "s/^RESULT /RESULT backend=$backend run=$r /p" \
			"$work/scrape-$backend-$r.out" | tee -a "$work/results"
		kill -TERM "$chatd_pid"
		wait "$chatd_pid" 2>/dev/null || true
		chatd_pid=""
	done
	if [[ "$backend" == postgres ]]; then
		"$root/tests/servers.sh" stop "$work/servers"
		servers_started=0
	fi
done
