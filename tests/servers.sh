#!/usr/bin/env bash
# Throwaway Postgres and Redis servers for the tests, on loopback only.
#
#   tests/servers.sh start DIR   start both under DIR, print `export` lines
#   tests/servers.sh reset DIR   empty them: recreate chatd_test, FLUSHALL
#   tests/servers.sh stop DIR    stop both (safe to call twice)
#   tests/servers.sh pg-stop DIR [MODE]  stop Postgres alone; MODE is a
#                                pg_ctl shutdown mode (fast, or immediate
#                                to act like a crash)
#   tests/servers.sh pg-start DIR        start it again on the same port
#   tests/servers.sh redis-stop DIR [MODE]  stop Redis alone; MODE is
#                                shutdown (SHUTDOWN NOSAVE, the default) or
#                                kill (SIGKILL, to act like a crash)
#   tests/servers.sh redis-start DIR     start it again on the same port
#
# `eval "$(tests/servers.sh start "$dir")"` sets CHATD_TEST_PG_URL and
# CHATD_TEST_REDIS_URL; the same lines are kept in DIR/env. Everything the
# servers write (data, sockets, logs, pid files) stays under DIR, which the
# caller creates (mktemp -d) and removes after `stop`. Diagnostics go to
# stderr so that stdout carries only what is meant for eval.
#
# Postgres refuses to run as root, so as root its commands run as the
# `postgres` system user; as anyone else they run as that user.
set -euo pipefail

servers_die() {
	echo "servers.sh: $*" >&2
	exit 1
}

servers_usage() {
	echo "usage: $0 start|reset|stop|pg-start|redis-start DIR |" \
		"pg-stop|redis-stop DIR [MODE]" >&2
	exit 2
}

# The newest installed server binaries; PG_BINDIR overrides.
servers_pg_bindir() {
	local d best=""
	if [[ -n "${PG_BINDIR:-}" ]]; then
		echo "$PG_BINDIR"
		return 0
	fi
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
		if [[ -z "$best" ]] ||
			[[ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n 1)" == "$d" ]]; then
			best=$d
		fi
	done
	[[ -n "$best" ]] || servers_die "no initdb/pg_ctl under /usr/lib/postgresql (run: scripts/deps.sh test)"
	echo "$best"
}

# Runs a Postgres command as an unprivileged user.
servers_as_pg() {
	if [[ "$(id -u)" -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Prints two loopback TCP ports that are free now. Both sockets stay bound
# until both ports are known, so the two cannot be the same port.
servers_free_ports() {
	local py p n used
	for py in /usr/bin/python3 python3; do
		if command -v "$py" >/dev/null 2>&1; then
			"$py" -c '
import socket
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
'
			return 0
		fi
	done
	# Without python: random ports that `ss` does not list as listening.
	used=$(ss -Htan | awk '{ n = split($4, a, ":"); print a[n] }')
	n=0
	while ((n < 2)); do
		p=$((20000 + RANDOM % 20000))
		if ! grep -qx "$p" <<<"$used"; then
			printf '%s ' "$p"
			used+=$'\n'"$p"
			n=$((n + 1))
		fi
	done
	echo
}

# Loads PG_PORT and REDIS_PORT that `start` recorded.
servers_load_ports() {
	local dir=$1
	PG_PORT=$(cat "$dir/pg.port" 2>/dev/null || true)
	REDIS_PORT=$(cat "$dir/redis.port" 2>/dev/null || true)
}

servers_psql() {
	psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

# Starts the initialised cluster under DIR on $PG_PORT.
servers_pg_ctl_start() {
	local dir=$1 bindir
	bindir=$(servers_pg_bindir)
	if ! servers_as_pg "$bindir/pg_ctl" -D "$dir/pg" -l "$dir/postgres.log" \
		-w -t 60 -o "-c listen_addresses=127.0.0.1 -p $PG_PORT \
		-c unix_socket_directories='$dir/pgsock' -c fsync=on" \
		start >/dev/null; then
		cat "$dir/postgres.log" >&2
		servers_die "postgres did not start"
	fi
}

servers_start_pg() {
	local dir=$1 bindir
	bindir=$(servers_pg_bindir)
	mkdir -p "$dir/pg" "$dir/pgsock"
	touch "$dir/postgres.log"
	if [[ "$(id -u)" -eq 0 ]]; then
		id postgres >/dev/null 2>&1 ||
			servers_die "no 'postgres' system user (run: scripts/deps.sh test)"
		chown postgres: "$dir/pg" "$dir/pgsock" "$dir/postgres.log"
		# mktemp -d makes DIR 0700; the postgres user must get through it.
		chmod 0711 "$dir"
		runuser -u postgres -- test -w "$dir/pg" ||
			servers_die "user postgres cannot reach $dir: a parent directory is closed to it"
	fi
	chmod 0700 "$dir/pg"

	echo "servers.sh: initdb in $dir/pg" >&2
	servers_as_pg "$bindir/initdb" -D "$dir/pg" -U postgres -A trust \
		-E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 ||
		{
			cat "$dir/initdb.log" >&2
			servers_die "initdb failed"
		}
	# Trust, but only over the socket in DIR and from 127.0.0.1.
	printf '%s\n' 'local all all trust' 'host all all 127.0.0.1/32 trust' |
		servers_as_pg tee "$dir/pg/pg_hba.conf" >/dev/null

	echo "servers.sh: postgres on 127.0.0.1:$PG_PORT" >&2
	servers_pg_ctl_start "$dir"
	echo "$PG_PORT" >"$dir/pg.port"
	servers_psql -d postgres -c 'CREATE DATABASE chatd_test' >&2 ||
		servers_die "cannot create database chatd_test"
}

servers_start_redis() {
	local dir=$1 i
	command -v redis-server >/dev/null 2>&1 ||
		servers_die "redis-server is not installed (run: scripts/deps.sh test)"
	echo "servers.sh: redis on 127.0.0.1:$REDIS_PORT" >&2
	redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
		--save '' --appendonly no --dir "$dir" \
		--daemonize yes --pidfile "$dir/redis.pid" \
		--logfile "$dir/redis.log" ||
		servers_die "redis-server did not start"
	echo "$REDIS_PORT" >"$dir/redis.port"
	for ((i = 0; i < 100; i++)); do
		if [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; then
			return 0
		fi
		sleep 0.1
	done
	cat "$dir/redis.log" >&2 || true
	servers_die "redis does not answer PING on port $REDIS_PORT"
}

servers_start() {
	local dir=$1 ports
	[[ -d "$dir" ]] || servers_die "$dir is not a directory"
	[[ ! -e "$dir/pg" ]] || servers_die "$dir/pg exists: already started? (stop first)"
	command -v psql >/dev/null 2>&1 ||
		servers_die "psql is not installed (run: scripts/deps.sh test)"
	ports=$(servers_free_ports)
	read -r PG_PORT REDIS_PORT <<<"$ports"
	[[ -n "$PG_PORT" && -n "$REDIS_PORT" ]] || servers_die "no free ports"

	servers_start_pg "$dir"
	servers_start_redis "$dir"

	# Both must answer before anyone is told they exist.
	[[ "$(servers_psql -d chatd_test -A -t -c 'select 1')" == 1 ]] ||
		servers_die "postgres does not answer on port $PG_PORT"

	{
		echo "export CHATD_TEST_PG_URL=postgresql://postgres@127.0.0.1:$PG_PORT/chatd_test"
		echo "export CHATD_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
	} >"$dir/env"
	cat "$dir/env"
}

# Gives the next test run empty servers: a new chatd_test, no Redis keys.
servers_reset() {
	local dir=$1
	servers_load_ports "$dir"
	[[ -n "$PG_PORT" && -n "$REDIS_PORT" ]] || servers_die "$dir: not started"
	servers_psql -d postgres \
		-c 'DROP DATABASE IF EXISTS chatd_test WITH (FORCE)' \
		-c 'CREATE DATABASE chatd_test' >&2 ||
		servers_die "cannot recreate database chatd_test"
	[[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" flushall)" == OK ]] ||
		servers_die "redis FLUSHALL failed"
}

# True if PID is a live process whose command name contains WORD, so that a
# stale pid file never makes us signal an unrelated process.
servers_pid_is() {
	local pid=$1 word=$2 comm
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[[ "$comm" == *"$word"* ]]
}

servers_stop_pg() {
	local dir=$1 bindir pid i
	[[ -f "$dir/pg/postmaster.pid" ]] || return 0
	bindir=$(servers_pg_bindir)
	if servers_as_pg "$bindir/pg_ctl" -D "$dir/pg" -m fast -w -t 30 \
		stop >/dev/null 2>&1; then
		return 0
	fi
	pid=$(head -n 1 "$dir/pg/postmaster.pid" 2>/dev/null || true)
	if servers_pid_is "$pid" postgres; then
		echo "servers.sh: pg_ctl stop failed, killing postgres $pid" >&2
		kill -QUIT "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			servers_pid_is "$pid" postgres || break
			sleep 0.1
		done
	fi
	rm -f "$dir/pg/postmaster.pid"
}

servers_stop_redis() {
	local dir=$1 pid i
	[[ -f "$dir/redis.pid" ]] || return 0
	pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
	if servers_pid_is "$pid" redis; then
		if [[ -n "$REDIS_PORT" ]]; then
			redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave \
				>/dev/null 2>&1 || true
		fi
		for ((i = 0; i < 50; i++)); do
			servers_pid_is "$pid" redis || break
			if ((i == 20)); then
				kill "$pid" 2>/dev/null || true
			fi
			sleep 0.1
		done
		if servers_pid_is "$pid" redis; then
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$dir/redis.pid"
}

# Stops Postgres alone (the outage tests), in pg_ctl's MODE.
servers_pg_stop() {
	local dir=$1 mode=$2 bindir
	case "$mode" in
	smart | fast | immediate) ;;
	*) servers_die "pg-stop: unknown mode '$mode' (smart, fast, immediate)" ;;
	esac
	[[ -f "$dir/pg/postmaster.pid" ]] || servers_die "$dir: postgres is not running"
	bindir=$(servers_pg_bindir)
	servers_as_pg "$bindir/pg_ctl" -D "$dir/pg" -m "$mode" -w -t 30 \
		stop >/dev/null || servers_die "pg_ctl stop -m $mode failed"
}

servers_pg_start() {
	local dir=$1
	servers_load_ports "$dir"
	[[ -n "$PG_PORT" ]] || servers_die "$dir: not started"
	[[ ! -f "$dir/pg/postmaster.pid" ]] || servers_die "$dir: postgres is running"
	servers_pg_ctl_start "$dir"
}

# Stops Redis alone (the outage tests): SHUTDOWN NOSAVE, or SIGKILL.
servers_redis_stop() {
	local dir=$1 mode=$2 pid i
	case "$mode" in
	shutdown | kill) ;;
	*) servers_die "redis-stop: unknown mode '$mode' (shutdown, kill)" ;;
	esac
	servers_load_ports "$dir"
	pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
	servers_pid_is "$pid" redis || servers_die "$dir: redis is not running"
	if [[ "$mode" == kill ]]; then
		kill -KILL "$pid" 2>/dev/null || true
	else
		redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave \
			>/dev/null 2>&1 || true
	fi
	for ((i = 0; i < 100; i++)); do
		servers_pid_is "$pid" redis || break
		sleep 0.1
	done
	servers_pid_is "$pid" redis && servers_die "redis $pid did not stop"
	# SIGKILL leaves the pid file behind; `stop` and `redis-start` read it.
	rm -f "$dir/redis.pid"
}

servers_redis_start() {
	local dir=$1 pid
	servers_load_ports "$dir"
	[[ -n "$REDIS_PORT" ]] || servers_die "$dir: not started"
	pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
	! servers_pid_is "$pid" redis || servers_die "$dir: redis is running"
	servers_start_redis "$dir"
}

servers_stop() {
	local dir=$1
	[[ -d "$dir" ]] || return 0
	servers_load_ports "$dir"
	servers_stop_redis "$dir"
	servers_stop_pg "$dir"
}

[[ $# -eq 2 || ($# -eq 3 && ("$1" == pg-stop || "$1" == redis-stop)) ]] ||
	servers_usage
servers_dir=$(cd "$2" 2>/dev/null && pwd) || {
	[[ "$1" == stop ]] && exit 0
	servers_die "$2 is not a directory"
}
case "$1" in
start) servers_start "$servers_dir" ;;
reset) servers_reset "$servers_dir" ;;
stop) servers_stop "$servers_dir" ;;
pg-stop) servers_pg_stop "$servers_dir" "${3:-fast}" ;;
pg-start) servers_pg_start "$servers_dir" ;;
redis-stop) servers_redis_stop "$servers_dir" "${3:-shutdown}" ;;
redis-start) servers_redis_start "$servers_dir" ;;
*) servers_usage ;;
esac
