#!/usr/bin/env bash
# Idle sockets: chatd's memory per authenticated WebSocket that sends
# nothing. For each socket count, a fresh chatd on a fresh SQLite file
# whose users, sessions and conversations were made in bulk
# (bench/bulkload.py: each user in one direct conversation and one group
# of 10), then chatload --idle processes open one socket per user and hold
# them; chatd's resident memory is read before any socket and once every
# socket is ready.
#
#   bench/idle.sh [--chatd PATH] [--sockets N[,N...]] [--repeat R]
#                 [--hold S]
#
#   --chatd PATH   the chatd to measure (default: ./chatd of this tree)
#   --sockets L    socket counts (default 5000,10000,20000; each is capped
#                  by the open-file limit, see below)
#   --repeat R     runs of each count (default 3)
#   --hold S       seconds the sockets stay open (default 10)
#
# Open files: chatd holds one descriptor per socket plus a few dozen of
# its own, so a count near `ulimit -Hn` is lowered to fit (and says so).
# chatload runs as several processes of at most 8,000 sockets each. Every
# connection comes from 127.0.0.1; 20,000 of them fit in Linux's default
# ephemeral port range (32768-60999) without extra source addresses.
#
# Output: one RESULT line per run, then a table (median and range).
set -euo pipefail

bench_dir=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$bench_dir/.." && pwd)
chatd="$root/chatd"
counts="5000,10000,20000"
repeat=3
hold=10
per_proc=8000

while (($#)); do
	case "$1" in
	--chatd) chatd=$2; shift 2 ;;
	--sockets) counts=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--hold) hold=$2; shift 2 ;;
	-h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "idle.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
[[ -x "$chatd" ]] || { echo "idle.sh: $chatd is not an executable (build chatd first, or --chatd PATH)" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
# chatd's own descriptors: stdio, the listener, lws's pipe, 4 SQLite
# connections (database, WAL and shm each), a margin.
max_sockets=$((fd_limit - 64))

work=$(mktemp -d)
chatd_pid=""
loaders=()
idle_cleanup() {
	local p
	for p in "${loaders[@]}"; do kill "$p" 2>/dev/null || true; done
	if [[ -n "$chatd_pid" ]]; then
		kill -TERM "$chatd_pid" 2>/dev/null || true
		wait "$chatd_pid" 2>/dev/null || true
	fi
}
trap idle_cleanup EXIT

echo "idle.sh: building chatload" >&2
read -r -a bench_flags <<<"$(pkg-config --cflags --libs libwebsockets json-c libuv)"
cc -std=gnu11 -O2 -Wall -Wextra -o "$work/chatload" "$bench_dir/chatload.c" \
	"${bench_flags[@]}" -pthread -lm

idle_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# KiB of a field of /proc/PID/status.
idle_status_kib() {
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# chatd's own count of ready sockets.
idle_ws_connections() {
	curl -sf "$1/metrics" | awk '$1 == "chat_ws_connections" { print int($2) }'
}

: >"$work/results"
IFS=, read -r -a count_list <<<"$counts"
for n in "${count_list[@]}"; do
	if ((n > max_sockets)); then
		echo "idle.sh: $n sockets do not fit the open-file limit of $fd_limit" \
			"(hard limit $(ulimit -Hn)); measuring $max_sockets instead" >&2
		n=$max_sockets
	fi
	# One database per count, reused by its runs: bulk-made users with a
	# session each; every run starts a fresh chatd on it.
	db="$work/idle-$n.db"
	"$chatd" migrate up --database "sqlite:$db" --data-dir "$root" >/dev/null
	python3 "$bench_dir/bulkload.py" --database "sqlite:$db" --users "$n" \
		--accounts "$work/accounts-$n" --prefix idle 2>>"$work/bulkload.log"
	for ((r = 1; r <= repeat; r++)); do
		port=$(idle_free_port)
		url="http://127.0.0.1:$port"
		"$chatd" --database "sqlite:$db" --data-dir "$root" \
			--listen "127.0.0.1:$port" --log-level warn \
			>"$work/chatd-$n-$r.log" 2>&1 &
		chatd_pid=$!
		for ((i = 0; i < 100; i++)); do
			curl -sf "$url/health" >/dev/null 2>&1 && break
			sleep 0.1
		done
		# Settled: the collector's first runs are done.
		sleep 5
		rss0=$(idle_status_kib "$chatd_pid" VmRSS)
		anon0=$(idle_status_kib "$chatd_pid" RssAnon)
		procs=$(((n + per_proc - 1) / per_proc))
		loaders=()
		for ((p = 0; p < procs; p++)); do
			lo=$((n * p / procs))
			hi=$((n * (p + 1) / procs))
			sed -n "$((lo + 1)),${hi}p" "$work/accounts-$n" >"$work/acc-$n-$p"
			"$work/chatload" --url "$url" --idle --accounts "$work/acc-$n-$p" \
				--users $((hi - lo)) --warmup 0 --duration $((hold + 60)) --drain 0 \
				>"$work/chatload-$n-$r-$p.out" 2>"$work/chatload-$n-$r-$p.err" &
			loaders+=($!)
		done
		# Wait until chatd counts every socket ready (or 120 s).
		t0=$SECONDS
		ready=0
		while ((SECONDS - t0 < 120)); do
			ready=$(idle_ws_connections "$url" || echo 0)
			((ready >= n)) && break
			sleep 0.5
		done
		connect_s=$((SECONDS - t0))
		sleep "$hold"
		ready=$(idle_ws_connections "$url" || echo 0)
		rss1=$(idle_status_kib "$chatd_pid" VmRSS)
		anon1=$(idle_status_kib "$chatd_pid" RssAnon)
		for p in "${loaders[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
		for p in "${loaders[@]}"; do wait "$p" 2>/dev/null || true; done
		loaders=()
		kill -TERM "$chatd_pid"
		wait "$chatd_pid" 2>/dev/null || true
		chatd_pid=""
		line=$(awk -v n="$n" -v ready="$ready" -v r0="$rss0" -v r1="$rss1" \
			-v a0="$anon0" -v a1="$anon1" -v run="$r" -v cs="$connect_s" 'BEGIN {
			printf "RESULT sockets=%d ready=%d run=%d rss_before_kib=%d rss_kib=%d kib_per_socket=%.2f anon_kib_per_socket=%.2f connect_s=%d\n",
				n, ready, run, r0, r1, (r1 - r0) / n, (a1 - a0) / n, cs }')
		echo "$line"
		echo "$line" >>"$work/results"
	done
done

awk '
function get(k,   i, kv) {
	for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) return kv[2] }
	return ""
}
{ n = get("sockets"); v[n] = v[n] " " get("kib_per_socket"); a[n] = a[n] " " get("anon_kib_per_socket")
  rd[n] = rd[n] " " get("ready"); if (!(n in seen)) { seen[n] = 1; order[++k] = n } }
function median(s,   x, m, i, j, t) {
	m = split(s, x, " ")
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (x[j] + 0 < x[i] + 0) { t = x[i]; x[i] = x[j]; x[j] = t }
	lo = x[1]; hi = x[m]
	return (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
}
END {
	printf "%8s %6s %22s %22s %s\n", "sockets", "runs", "KiB/socket (RSS)", "KiB/socket (anon)", "ready"
	for (i = 1; i <= k; i++) {
		n = order[i]
		med = median(v[n]); l1 = lo; h1 = hi
		meda = median(a[n]); l2 = lo; h2 = hi
		printf "%8d %6d %10.2f [%.2f-%.2f] %10.2f [%.2f-%.2f] %s\n", n, split(v[n], _, " "), med, l1, h1, meda, l2, h2, rd[n]
	}
}' "$work/results"
echo "idle.sh: logs in $work" >&2
