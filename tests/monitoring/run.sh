#!/usr/bin/env bash
# The monitoring stack's verification suite.
#
#   tests/monitoring/run.sh [CHATD_BIN]     (default: build/chatd, else ./chatd)
#
# Grafana and Loki are not installed on the test machines, so what they
# would ask is asked for real of what is: in a mktemp -d, on loopback only,
#  1. throwaway Postgres and Redis (tests/servers.sh); chatd's schema by
#     `chatd migrate up`; the views, the read-only role chatd_grafana with
#     a login member, and the exporter's monitoring role, from the repo's SQL;
#  2. chatd on that Postgres, prometheus-postgres-exporter,
#     prometheus-redis-exporter and prometheus-node-exporter;
#  3. Prometheus with the repo's rule files and a scrape configuration made
#     from prometheus/prometheus.yml (same jobs, loopback targets, 1 s
#     intervals so the test does not wait);
#  4. a scripted chat workload (workload.py) once every target is up;
#  5. pytest (test_monitoring.py): promtool checks, every PromQL expression
#     of every dashboard and rule against that Prometheus, every SQL panel
#     as the read-only role, the role's refusals, dashboards, provisioning,
#     Loki and compose files, scripts/docker-manage.sh.
# Everything is stopped and removed on exit. A skipped test fails the run.
# The last line is `run.sh: N passed, M failed`; the exit status is 0 only
# when every test passed.
set -uo pipefail

run_root=$(cd "$(dirname "$0")/../.." && pwd)
run_chatd=${1:-}
if [[ -z "$run_chatd" ]]; then
	for run_c in "$run_root/build/chatd" "$run_root/chatd"; do
		[[ -x "$run_c" ]] && run_chatd=$run_c && break
	done
fi
run_pids=()
run_dir=""
run_srv_started=0

run_die() {
	echo "run.sh: $*" >&2
	echo "run.sh: 0 passed, 1 failed"
	exit 1
}

# shellcheck disable=SC2317 # reached through the EXIT trap
run_cleanup() {
	local pid
	for pid in "${run_pids[@]}"; do
		kill "$pid" 2>/dev/null
	done
	for pid in "${run_pids[@]}"; do
		wait "$pid" 2>/dev/null
	done
	if [[ -n "$run_dir" ]]; then
		((run_srv_started)) && "$run_root/tests/servers.sh" stop "$run_dir/srv" >/dev/null 2>&1
		if [[ -n "${CHATD_MONITORING_KEEP:-}" ]]; then
			echo "run.sh: kept $run_dir" >&2
		else
			rm -rf "$run_dir"
		fi
	fi
}
trap run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ -n "$run_chatd" && -x "$run_chatd" ]] || run_die "no built chatd (give its path, or build first)"
run_chatd=$(cd "$(dirname "$run_chatd")" && pwd)/$(basename "$run_chatd")
for run_tool in prometheus promtool prometheus-postgres-exporter \
	prometheus-redis-exporter prometheus-node-exporter psql redis-cli \
	docker-compose shellcheck curl; do
	command -v "$run_tool" >/dev/null 2>&1 ||
		run_die "$run_tool is missing: run scripts/deps.sh test"
done
/usr/bin/python3 -c 'import pytest, yaml' 2>/dev/null ||
	run_die "python3 with pytest and yaml is missing: run scripts/deps.sh test"

run_dir=$(mktemp -d) || run_die "mktemp failed"
# The postgres system user must reach the server's directory under it.
chmod 755 "$run_dir"
mkdir -p "$run_dir/srv" "$run_dir/prometheus"
chmod 755 "$run_dir/srv"

# Free loopback ports, one per service.
read -r run_p_chatd run_p_prom run_p_pgx run_p_redx run_p_node < <(
	/usr/bin/python3 - <<'PY'
import socket
socks = []
for _ in range(5):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

echo "run.sh: starting Postgres and Redis" >&2
run_env=$("$run_root/tests/servers.sh" start "$run_dir/srv") || run_die "tests/servers.sh start failed"
run_srv_started=1
eval "$run_env"
run_pg_super=$CHATD_TEST_PG_URL
run_pg_hostport=${run_pg_super#postgresql://postgres@}
run_pg_hostport=${run_pg_hostport%%/*}
run_pg_db=${run_pg_super##*/}
run_redis_hostport=${CHATD_TEST_REDIS_URL#redis://}
run_redis_hostport=${run_redis_hostport%%/*}

run_psql() {
	psql -X -q -v ON_ERROR_STOP=1 "$run_pg_super" "$@" >>"$run_dir/psql.log" 2>&1 ||
		{
			cat "$run_dir/psql.log" >&2
			run_die "psql $* failed"
		}
}

echo "run.sh: schema, views and roles" >&2
"$run_chatd" migrate up --database "$run_pg_super" --data-dir "$run_root" \
	>"$run_dir/migrate.log" 2>&1 || {
	cat "$run_dir/migrate.log" >&2
	run_die "chatd migrate up failed"
}
run_psql -f "$run_root/sql/grafana/role.sql"
run_psql -f "$run_root/sql/grafana/views.sql"
run_psql -v user=grafana_reader -v password=test-only-reader \
	-f "$run_root/sql/grafana/login.sql"
run_psql -v user=chatd_monitor -v password=test-only-monitor \
	-f "$run_root/exporters/postgres-monitor.sql"

# run_start NAME COMMAND...: starts a background process, its output in
# DIR/NAME.log, and remembers its pid for the cleanup.
run_start() {
	local name=$1
	shift
	"$@" >"$run_dir/$name.log" 2>&1 &
	run_pids+=($!)
}

echo "run.sh: chatd, exporters and Prometheus" >&2
# chatd as deployed: on Postgres and Redis (bus, presence, cache), so the
# Redis-side series (chat_redis_up, chat_cache_*) exist for the rules.
run_start chatd "$run_chatd" --listen "127.0.0.1:$run_p_chatd" \
	--database "$run_pg_super" --redis "$CHATD_TEST_REDIS_URL" \
	--data-dir "$run_root" --log-level info --collect-interval-ms 1000
run_start postgres-exporter env \
	DATA_SOURCE_NAME="postgresql://chatd_monitor@$run_pg_hostport/$run_pg_db?sslmode=disable" \
	prometheus-postgres-exporter --web.listen-address="127.0.0.1:$run_p_pgx"
run_start redis-exporter prometheus-redis-exporter \
	--redis.addr="redis://$run_redis_hostport" \
	--web.listen-address="127.0.0.1:$run_p_redx"
run_start node-exporter prometheus-node-exporter \
	--web.listen-address="127.0.0.1:$run_p_node"

# The scrape configuration: prometheus/prometheus.yml with its targets on
# loopback and 1 s intervals; the rule files are the repository's.
/usr/bin/python3 - "$run_root" "$run_dir/prometheus/prometheus.yml" \
	"chatd=127.0.0.1:$run_p_chatd" "postgres=127.0.0.1:$run_p_pgx" \
	"redis=127.0.0.1:$run_p_redx" "node=127.0.0.1:$run_p_node" \
	"prometheus=127.0.0.1:$run_p_prom" <<'PY' || run_die "could not write the test Prometheus configuration"
import sys, yaml
root, out, *pairs = sys.argv[1:]
targets = dict(p.split("=", 1) for p in pairs)
with open(root + "/prometheus/prometheus.yml") as f:
    cfg = yaml.safe_load(f)
cfg["global"].update(scrape_interval="1s", scrape_timeout="1s",
                     evaluation_interval="1s")
cfg["rule_files"] = [root + "/prometheus/rules/*.yml"]
kept = []
for sc in cfg["scrape_configs"]:
    job = sc["job_name"]
    if job not in targets:   # cAdvisor needs Docker: not on a test machine
        continue
    for st in sc["static_configs"]:
        st["targets"] = [targets[job]]
    kept.append(sc)
missing = set(targets) - {sc["job_name"] for sc in kept}
if missing:
    sys.exit("prometheus.yml has no job " + ", ".join(sorted(missing)))
cfg["scrape_configs"] = kept
with open(out, "w") as f:
    yaml.safe_dump(cfg, f)
PY
run_start prometheus prometheus \
	--config.file="$run_dir/prometheus/prometheus.yml" \
	--storage.tsdb.path="$run_dir/prometheus/data" \
	--storage.tsdb.retention.time=200h --storage.tsdb.retention.size=1GB \
	--web.listen-address="127.0.0.1:$run_p_prom"

run_prom="http://127.0.0.1:$run_p_prom"
run_chatd_url="http://127.0.0.1:$run_p_chatd"

# Waits until Prometheus has scraped every job successfully.
run_wait_up() {
	local n
	for _ in $(seq 1 60); do
		n=$(curl -sf "$run_prom/api/v1/query" --data-urlencode 'query=count(up == 1)' |
			/usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null)
		[[ "$n" == 5 ]] && return 0
		sleep 0.5
	done
	return 1
}
if ! run_wait_up; then
	for run_f in chatd postgres-exporter redis-exporter node-exporter prometheus; do
		echo "--- $run_f.log" >&2
		tail -n 20 "$run_dir/$run_f.log" >&2
	done
	curl -s "$run_prom/api/v1/targets" >&2
	run_die "not every target came up in Prometheus within 30 s"
fi

echo "run.sh: workload" >&2
# Twice, scrapes apart: a labelled series (a route, an operation) appears
# at its first use, so only its second round shows as a rate.
for run_round in 1 2; do
	/usr/bin/python3 "$run_root/tests/monitoring/workload.py" "$run_chatd_url" \
		"$CHATD_TEST_REDIS_URL" || run_die "the workload failed (round $run_round)"
	sleep 2.5
done
# Counters must move between two scrapes, the collector must run again,
# and the rules must evaluate on the new samples: a few 1 s rounds.
sleep 4

echo "run.sh: pytest" >&2
export MONITORING_PROM_URL=$run_prom
export MONITORING_CHATD_URL=$run_chatd_url
export MONITORING_PG_SUPER_URL=$run_pg_super
export MONITORING_PG_READER_URL="postgresql://grafana_reader@$run_pg_hostport/$run_pg_db"
export MONITORING_CHATD_LOG=$run_dir/chatd.log
export MONITORING_ROOT=$run_root
export PYTHONDONTWRITEBYTECODE=1
(cd "$run_dir" && /usr/bin/python3 -m pytest -q -p no:cacheprovider -rfEs \
	"$run_root/tests/monitoring/test_monitoring.py" 2>&1) | tee "$run_dir/pytest.out"
run_rc=${PIPESTATUS[0]}
run_count() {
	grep -oE "[0-9]+ $1" "$run_dir/pytest.out" | tail -n 1 | cut -d' ' -f1
}
run_passed=$(run_count passed)
run_failed=$(run_count failed)
run_skipped=$(run_count skipped)
run_errors=$(run_count 'errors?')
run_bad=$((${run_failed:-0} + ${run_skipped:-0} + ${run_errors:-0}))
if ((run_rc != 0 && run_bad == 0)); then
	run_bad=1
fi
echo "run.sh: ${run_passed:-0} passed, $run_bad failed"
((run_rc == 0 && run_bad == 0 && ${run_passed:-0} > 0))
