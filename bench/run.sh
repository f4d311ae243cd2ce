#!/usr/bin/env bash
# The benchmark: builds chatload, starts a chatd of its own on a fresh
# database, runs the standard workloads against it, prints one table and
# stops everything it started.
#
#   bench/run.sh [--chatd PATH] [--postgres] [--baselines] [--duration S]
#                [--repeat R] [--workloads LIST] [--backends LIST]
#                [--perf DIR]
#
#   --chatd PATH   the chatd to measure (default: ./chatd of this tree)
#   --postgres     also measure on a throwaway Postgres (tests/servers.sh),
#                  migrated with `chatd migrate up`
#   --baselines    also measure the limits each figure is a fraction of,
#                  in the same run: chatd with the send transaction taken
#                  out (backend "none": bench/build-null.sh links it from
#                  the objects next to --chatd), and with --postgres,
#                  Postgres's own ingest ceiling on the same server and
#                  schema (bench/pgingest.c: COPY, INSERT ... SELECT FROM
#                  unnest, and chatd's own transaction), and the disk's
#                  fdatasync latency (bench/fsync.py)
#   --duration S   measured seconds per workload (default 10)
#   --repeat R     runs of each workload (default 3): the table gives the
#                  median and the range
#   --workloads L  comma-separated names from the list below (default all)
#   --backends L   of sqlite, none, postgres, ingest: run only these (none
#                  and ingest are the baselines; default: sqlite, plus
#                  what --postgres and --baselines add)
#   --perf DIR     record chatd with `perf record -g` during the first run
#                  of each workload, into DIR/BACKEND-WORKLOAD.perf.data
#
# The machine must be otherwise idle: before each run, run.sh waits (up to
# 30 minutes) until the rest of the machine has used under 15% of a core
# for 5 s, and a run during which something else took more than 25% of a
# core ("other %" in the table) is run again, up to 3 times; the table
# says how many runs were retried.
#
# Everything (database, logs, each workload's full report) goes to a
# temporary directory that is printed at the end and kept for reading.
# See docs/benchmarks.md for what each workload measures.
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$bench_dir/.." && pwd)
chatd="$root/chatd"
postgres=0
baselines=0
duration=10
repeat=3
only=""
perf_dir=""
backends=""

while (($#)); do
	case "$1" in
	--chatd) chatd=$2; shift 2 ;;
	--postgres) postgres=1; shift ;;
	--baselines) baselines=1; shift ;;
	--duration) duration=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--workloads) only=$2; shift 2 ;;
	--perf) perf_dir=$(mkdir -p "$2" && cd "$2" && pwd); shift 2 ;;
	--backends) backends=$2; shift 2 ;;
	-h | --help) sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
[[ -x "$chatd" ]] || { echo "run.sh: $chatd is not an executable (build chatd first, or --chatd PATH)" >&2; exit 1; }
if [[ -n "$perf_dir" ]] && ! command -v perf >/dev/null 2>&1; then
	echo "run.sh: --perf needs perf (Debian: apt-get install linux-perf)" >&2
	exit 1
fi
chatd=$(cd "$(dirname "$chatd")" && pwd)/$(basename "$chatd")
if [[ -z "$backends" ]]; then
	backends=sqlite
	((baselines)) && backends+=,none
	((postgres)) && backends+=,postgres
	((postgres && baselines)) && backends+=,ingest
fi
run_backend() {
	[[ ",$backends," == *",$1,"* ]]
}

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
	"open-5000-u5000|--users 5000 --conv-size 2 --rate 5000"
	"open-10000|--users 1000 --conv-size 2 --rate 10000"
	"open-15000|--users 1500 --conv-size 2 --rate 15000"
	"fanout-2000x10|--users 2000 --conv-size 10 --window 8"
)
# Postgres's own ingest: mode | rows per transaction | connections. One
# connection is chatd's shape (one store thread); two show what the
# whole machine gives Postgres alone.
ingests=(
	"copy|100|1" "copy|1000|1" "unnest|100|1" "unnest|1000|1"
	"chatd|100|1" "chatd|1000|1" "copy|1000|2" "chatd|1000|2"
)

# Both processes hold one socket per user.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
chmod 755 "$work" # the postgres system user must reach its data dir below
chatd_pid=""
servers_started=0

run_cleanup() {
	if [[ -n "$chatd_pid" ]]; then
		kill -TERM "$chatd_pid" 2>/dev/null || true
		wait "$chatd_pid" 2>/dev/null || true
	fi
	if ((servers_started)); then
		"$root/tests/servers.sh" stop "$work/servers" || true
	fi
}
trap run_cleanup EXIT

"$root/scripts/deps.sh" bench
echo "run.sh: building chatload and pgingest" >&2
read -r -a bench_flags <<<"$(pkg-config --cflags --libs libwebsockets json-c libuv)"
cc -std=gnu11 -O2 -Wall -Wextra -o "$work/chatload" "$bench_dir/chatload.c" \
	"${bench_flags[@]}" -pthread -lm
read -r -a pq_flags <<<"$(pkg-config --cflags --libs libpq)"
cc -std=gnu11 -O2 -Wall -Wextra -o "$work/pgingest" "$bench_dir/pgingest.c" \
	"${pq_flags[@]}" -pthread -lm
if run_backend none; then
	"$bench_dir/build-null.sh" "$(dirname "$chatd")" "$work/chatd-null" >/dev/null
fi

run_selected() {
	[[ -z "$only" || ",$only," == *",$1,"* ]]
}

# The most users any selected workload needs: the accounts made in bulk.
max_users=2
for w in "${workloads[@]}"; do
	name=${w%%|*}
	run_selected "$name" || continue
	n=$(sed -n 's/.*--users \([0-9]*\).*/\1/p' <<<"${w#*|}")
	((n > max_users)) && max_users=$n
done

run_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts chatd ($1: the binary) on database $2; sets chatd_pid and
# chatd_url.
run_start_chatd() {
	local bin=$1 db=$2 port i
	port=$(run_free_port)
	chatd_url="http://127.0.0.1:$port"
	"$bin" --database "$db" --data-dir "$root" --listen "127.0.0.1:$port" \
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

# Migrates database $1 and makes $max_users accounts with a session each
# (bench/bulkload.py), so that no workload spends its set-up hashing
# passwords; the accounts land in $work/accounts-$backend.
run_prepare_db() {
	"$chatd" migrate up --database "$1" --data-dir "$root" \
		>"$work/migrate-$backend.log" 2>&1 ||
		{ cat "$work/migrate-$backend.log" >&2; exit 1; }
	python3 "$bench_dir/bulkload.py" --database "$1" --users "$max_users" \
		--accounts "$work/accounts-$backend" --prefix "b$backend" \
		2>>"$work/bulkload.log"
}

# Busy CPU ticks of the whole machine (/proc/stat), and of chatd and
# Postgres (with its children) when they run.
run_busy_ticks() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}
run_own_ticks() {
	local p t=0 pids=${chatd_pid:-}
	if [[ -n "${pg_pid:-}" ]]; then
		pids+=" $pg_pid $(pgrep -P "$pg_pid" || true)"
	fi
	for p in $pids; do
		[[ -r /proc/$p/stat ]] || continue
		t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
	done
	echo "$t"
}

# Waits until the rest of the machine is idle: under 15% of one core for
# 5 s (what chatd and Postgres use meanwhile is not counted), at most 30
# minutes.
run_wait_quiet() {
	local hz b0 o0 b1 o1 other waited=0
	hz=$(getconf CLK_TCK)
	while ((waited < 1800)); do
		b0=$(run_busy_ticks); o0=$(run_own_ticks)
		sleep 5
		b1=$(run_busy_ticks); o1=$(run_own_ticks)
		other=$(((b1 - b0 - (o1 - o0)) * 100 / (5 * hz)))
		((other < 15)) && return 0
		((waited == 0)) && echo "run.sh: the machine is busy ($other% of a core besides chatd and Postgres): waiting" >&2
		waited=$((waited + 5))
	done
	echo "run.sh: still busy after 30 minutes: measuring anyway" >&2
}

# Sum and count of chat_store_batch_size: the mean batch of a run.
run_batch_stats() {
	curl -sf "$chatd_url/metrics" |
		awk '$1 == "chat_store_batch_size_sum" { s = $2 }
		     $1 == "chat_store_batch_size_count" { c = $2 }
		     END { printf "%s %s\n", s + 0, c + 0 }'
}

# Runs every selected workload, --repeat times, against the running chatd.
run_workloads() {
	local w name args pg_args=() r out b0 b1 perf_pid other retries=0
	if [[ -n "${pg_pid:-}" ]]; then
		pg_args=(--pg-pid "$pg_pid")
	fi
	for w in "${workloads[@]}"; do
		name=${w%%|*}
		args=${w#*|}
		run_selected "$name" || continue
		for ((r = 1; r <= repeat; r++)); do
			out="$work/$backend-$name-$r"
			run_wait_quiet
			echo "run.sh: $backend $name run $r: chatload $args --duration $duration ($(uptime | sed 's/.*load/load/'))" >&2
			b0=$(run_batch_stats)
			perf_pid=""
			if [[ -n "$perf_dir" && $r -eq 1 ]]; then
				# the measured window: after connecting (~2 s) and 2 s of warm-up
				(sleep 4 && exec perf record -q -F 999 -g -p "$chatd_pid" \
					-o "$perf_dir/$backend-$name.perf.data" -- sleep "$duration" \
					>"$work/perf-$backend-$name.log" 2>&1) &
				perf_pid=$!
			fi
			# chatload stops by itself; the timeout is only a guard
			# shellcheck disable=SC2086
			if ! timeout $((duration + 600)) "$work/chatload" --url "$chatd_url" \
				--chatd-pid "$chatd_pid" "${pg_args[@]}" \
				--accounts "$work/accounts-$backend" --duration "$duration" \
				$args >"$out.out" 2>"$out.err"; then
				echo "run.sh: $backend $name reported lost or duplicated messages" >&2
			fi
			[[ -z "$perf_pid" ]] || wait "$perf_pid" || true
			b1=$(run_batch_stats)
			other=$(sed -n 's/^RESULT .*chatd_cpu=\([-0-9]*\) pg_cpu=\([-0-9]*\) self_cpu=\([-0-9]*\) machine_cpu=\([-0-9]*\).*/\4 - \1 - (\2 > 0 ? \2 : 0) - \3/p' "$out.out")
			other=$((${other:-0}))
			if ((other > 25 && retries < 3)); then
				echo "run.sh: $backend $name run $r shared the machine ($other% of a core went elsewhere): again" >&2
				retries=$((retries + 1))
				r=$((r - 1))
				continue
			fi
			awk -v b0="$b0" -v b1="$b1" -v be="$backend" -v n="$name" -v r="$r" -v rt="$retries" '
				BEGIN { split(b0, x, " "); split(b1, y, " ")
					mb = (y[2] > x[2]) ? (y[1] - x[1]) / (y[2] - x[2]) : 0 }
				/^RESULT / { sub(/^RESULT /, ""); printf "backend=%s name=%s run=%d %s batch=%.1f retries=%d\n", be, n, r, $0, mb, rt }
			' "$out.out" >>"$work/results"
			retries=0
		done
	done
}

# Postgres's ingest ceiling on database $1 (the server of $pg_pid; $2 is
# its maintenance database, to make $1 afresh for every run).
run_ingest() {
	local i mode b c r out name other retries=0
	for i in "${ingests[@]}"; do
		IFS='|' read -r mode b c <<<"$i"
		name="$mode-b$b-c$c"
		for ((r = 1; r <= repeat; r++)); do
			out="$work/ingest-$name-$r.out"
			# every run on a fresh database, its writes checkpointed
			psql -X -q -v ON_ERROR_STOP=1 "$2" -c 'DROP DATABASE IF EXISTS ingest' \
				-c 'CREATE DATABASE ingest' -c 'CHECKPOINT'
			"$chatd" migrate up --database "$1" --data-dir "$root" \
				>"$work/migrate-ingest.log" 2>&1
			run_wait_quiet
			echo "run.sh: postgres ingest $name run $r ($(uptime | sed 's/.*load/load/'))" >&2
			"$work/pgingest" --url "$1" --mode "$mode" --batch "$b" --clients "$c" \
				--duration "$duration" --pg-pid "$pg_pid" >"$out" 2>"$out.err"
			other=$(sed -n 's/^RESULT .*pg_cpu=\([-0-9]*\) self_cpu=\([-0-9]*\) machine_cpu=\([-0-9]*\).*/\3 - \1 - \2/p' "$out")
			other=$((${other:-0}))
			if ((other > 25 && retries < 3)); then
				echo "run.sh: ingest $name run $r shared the machine ($other% of a core went elsewhere): again" >&2
				retries=$((retries + 1))
				r=$((r - 1))
				continue
			fi
			sed -n "s/^RESULT /backend=pg-ingest name=$name run=$r retries=$retries /p" "$out" >>"$work/ingest"
			retries=0
		done
	done
}

: >"$work/results"
: >"$work/ingest"
: >"$work/fsync"

if ((baselines)); then
	# The floor under every durable ack: one small write made durable,
	# on the file system the databases live on.
	echo "run.sh: the disk's fdatasync latency (bench/fsync.py)" >&2
	python3 "$bench_dir/fsync.py" --dir "$work" >"$work/fsync"
fi

pg_pid=""
if run_backend sqlite; then
	backend=sqlite
	run_prepare_db "sqlite:$work/chat.db"
	run_start_chatd "$chatd" "sqlite:$work/chat.db"
	run_workloads
	run_stop_chatd
fi

if run_backend none; then
	# The send transaction taken out; accounts and conversations on SQLite.
	backend=none
	run_prepare_db "sqlite:$work/none.db"
	run_start_chatd "$work/chatd-null" "sqlite:$work/none.db"
	run_workloads
	run_stop_chatd
fi

if run_backend postgres || run_backend ingest; then
	mkdir "$work/servers"
	servers_started=1
	eval "$("$root/tests/servers.sh" start "$work/servers")"
	pg_url=$CHATD_TEST_PG_URL
	pg_pid=$(head -n 1 "$work/servers/pg/postmaster.pid")
	if run_backend postgres; then
		backend=postgres
		run_prepare_db "$pg_url"
		run_start_chatd "$chatd" "$pg_url"
		run_workloads
		run_stop_chatd
	fi
	if run_backend ingest; then
		# Same server, same schema, a database of its own.
		run_ingest "${pg_url%/*}/ingest" "${pg_url%/*}/postgres"
	fi
fi

# The table: one row per backend and workload, the median of its runs
# and, in brackets, the lowest and highest.
awk '
function get(k,   i, kv) {
	for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] }
	return "-"
}
function stat(s,   x, m, i, j, t, med) {
	m = split(s, x, " ")
	if (m == 0 || x[1] == "-" || x[1] == -1) return "-"
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
		if (x[j] + 0 < x[i] + 0) { t = x[i]; x[i] = x[j]; x[j] = t }
	med = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
	if (m == 1 || x[1] == x[m]) return sprintf("%g", med)
	return sprintf("%g [%g-%g]", med, x[1], x[m])
}
BEGIN { nk = split("acked_per_s deliveries_per_s p50_ms p99_ms p999_ms chatd_cpu pg_cpu self_cpu batch", keys, " ") }
{
	id = get("backend") " " get("name")
	if (!(id in seen)) { seen[id] = 1; order[++n] = id }
	runs[id]++
	lost[id] += get("lost"); dup[id] += get("dup"); retried[id] += get("retries")
	for (k = 1; k <= nk; k++) v[id, keys[k]] = v[id, keys[k]] " " get(keys[k])
	# what the rest of the machine (other processes) took meanwhile
	pg = get("pg_cpu") + 0; if (pg < 0) pg = 0
	v[id, "other"] = v[id, "other"] " " (get("machine_cpu") - get("chatd_cpu") - pg - get("self_cpu"))
}
END {
	printf "%-9s %-16s %4s %-24s %-26s %-22s %-22s %4s %3s %-14s %-14s %-14s %-14s %-14s %s\n",
		"backend", "workload", "runs", "acked/s", "deliveries/s", "p50 ms", "p99 ms",
		"lost", "dup", "chatd %", "pg %", "chatload %", "other %", "batch", "retried"
	for (i = 1; i <= n; i++) {
		id = order[i]; split(id, b, " ")
		printf "%-9s %-16s %4d %-24s %-26s %-22s %-22s %4d %3d %-14s %-14s %-14s %-14s %-14s %d\n",
			b[1], b[2], runs[id], stat(v[id, "acked_per_s"]), stat(v[id, "deliveries_per_s"]),
			stat(v[id, "p50_ms"]), stat(v[id, "p99_ms"]), lost[id], dup[id],
			stat(v[id, "chatd_cpu"]), stat(v[id, "pg_cpu"]), stat(v[id, "self_cpu"]),
			stat(v[id, "other"]), stat(v[id, "batch"]), retried[id]
	}
}' "$work/results"
if [[ -s "$work/ingest" ]]; then
	echo
	awk '
	function get(k,   i, kv) {
		for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] }
		return "-"
	}
	function stat(s,   x, m, i, j, t, med) {
		m = split(s, x, " ")
		if (m == 0 || x[1] == "-" || x[1] == -1) return "-"
		for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++)
			if (x[j] + 0 < x[i] + 0) { t = x[i]; x[i] = x[j]; x[j] = t }
		med = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
		if (m == 1 || x[1] == x[m]) return sprintf("%g", med)
		return sprintf("%g [%g-%g]", med, x[1], x[m])
	}
	{
		id = get("name")
		if (!(id in seen)) { seen[id] = 1; order[++n] = id }
		runs[id]++
		r[id] = r[id] " " get("rows_per_s"); p[id] = p[id] " " get("tx_p99_ms")
		c[id] = c[id] " " get("pg_cpu")
		o[id] = o[id] " " (get("machine_cpu") - get("pg_cpu") - get("self_cpu"))
	}
	END {
		printf "%-16s %4s %-26s %-24s %-14s %-14s\n", "postgres ingest", "runs", "rows/s", "tx p99 ms", "pg %", "other %"
		for (i = 1; i <= n; i++)
			printf "%-16s %4d %-26s %-24s %-14s %-14s\n", order[i], runs[order[i]],
				stat(r[order[i]]), stat(p[order[i]]), stat(c[order[i]]), stat(o[order[i]])
	}' "$work/ingest"
fi
if [[ -s "$work/fsync" ]]; then
	echo
	echo "disk: 4 KiB write + fdatasync, back to back (bench/fsync.py)"
	sed 's/^RESULT /  /' "$work/fsync"
fi
echo "run.sh: full reports in $work" >&2
