#!/usr/bin/env bash
# Runs chatd and its monitoring stack with Docker Compose.
#
#   scripts/docker-manage.sh start [monitoring]  migrate, then start chatd,
#                                     postgres, redis (and the monitoring
#                                     profile: Prometheus, Grafana, Loki,
#                                     Alloy, exporters)
#   scripts/docker-manage.sh stop     stop every service (data volumes stay)
#   scripts/docker-manage.sh status   the services, and the health of each
#                                     monitoring endpoint that answers
#   scripts/docker-manage.sh logs [SERVICE...]   follow their logs
#   scripts/docker-manage.sh migrate  `chatd migrate up`, then the Grafana
#                                     views and the read-only and exporter
#                                     roles (safe to run again)
#   scripts/docker-manage.sh backup [DIR]  Grafana's database and dashboards,
#                                     the Prometheus configuration and a
#                                     TSDB snapshot, Loki's data (default
#                                     DIR: backups/DATE)
#   scripts/docker-manage.sh update   pull images, rebuild chatd, migrate,
#                                     restart what changed
#   scripts/docker-manage.sh check    only check the settings in .env
#
# Settings come from .env (CHATD_ENV_FILE overrides; see .env.example). It
# refuses to do anything while a password is empty, shorter than 12
# characters, or still one of the examples of .env.example.
set -euo pipefail

cd "$(dirname "$0")/.."
manage_env=${CHATD_ENV_FILE:-.env}
manage_profiles=()

manage_die() {
	echo "docker-manage.sh: $*" >&2
	exit 1
}

manage_usage() {
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# The value of NAME in the env file (last assignment wins, quotes removed).
manage_get() {
	local line value=""
	while IFS= read -r line || [[ -n "$line" ]]; do
		if [[ "$line" == "$1="* ]]; then
			value=${line#"$1="}
		fi
	done <"$manage_env"
	value=${value%\"}
	value=${value#\"}
	value=${value%\'}
	value=${value#\'}
	printf '%s' "$value"
}

# Refuses example, empty and short passwords: no default password may
# survive into a running stack.
manage_check_env() {
	local name value bad=0 example
	[[ -f "$manage_env" ]] ||
		manage_die "no $manage_env: cp .env.example .env, then set every password"
	for name in POSTGRES_PASSWORD GRAFANA_PASSWORD GRAFANA_DB_PASSWORD \
		POSTGRES_EXPORTER_PASSWORD; do
		value=$(manage_get "$name")
		example=""
		if [[ -f .env.example ]]; then
			example=$(manage_env=.env.example manage_get "$name")
		fi
		if [[ -z "$value" ]]; then
			echo "docker-manage.sh: $name is not set in $manage_env" >&2
			bad=1
		elif [[ "$value" == "$example" || "$value" == change-me* ||
			"$value" == admin || "$value" == admin_password ||
			"$value" == password ]]; then
			echo "docker-manage.sh: $name in $manage_env is the example password; set your own" >&2
			bad=1
		elif ((${#value} < 12)); then
			echo "docker-manage.sh: $name in $manage_env is shorter than 12 characters" >&2
			bad=1
		fi
	done
	((bad == 0)) || manage_die "refusing to continue (generate passwords with: openssl rand -base64 24)"
}

# Docker Compose v2 (`docker compose`) when there is one, else docker-compose.
manage_compose() {
	if docker compose version >/dev/null 2>&1; then
		docker compose --env-file "$manage_env" "${manage_profiles[@]}" "$@"
	elif command -v docker-compose >/dev/null 2>&1; then
		docker-compose --env-file "$manage_env" "${manage_profiles[@]}" "$@"
	else
		manage_die "neither 'docker compose' nor docker-compose is installed"
	fi
}

manage_wait_postgres() {
	local i
	for i in $(seq 1 60); do
		if manage_compose exec -T postgres pg_isready -q \
			-U "$(manage_get POSTGRES_USER)" >/dev/null 2>&1; then
			return 0
		fi
		((i % 10 == 0)) && echo "docker-manage.sh: waiting for postgres..." >&2
		sleep 1
	done
	manage_die "postgres did not become ready in 60 s (scripts/docker-manage.sh logs postgres)"
}

# psql inside the postgres container as the owner role; extra arguments
# are psql's. Role passwords travel as psql variables, never through a
# file; the SQL files quote them (:'password').
manage_psql() {
	manage_compose exec -T postgres psql -X -q -v ON_ERROR_STOP=1 \
		-U "$(manage_get POSTGRES_USER)" -d "$(manage_get POSTGRES_DB)" "$@"
}

manage_migrate() {
	manage_compose up -d postgres redis
	manage_wait_postgres
	echo "docker-manage.sh: chatd migrate up" >&2
	manage_compose run --rm --no-deps chatd migrate up
	echo "docker-manage.sh: Grafana views and roles" >&2
	manage_psql -f /chatd/sql/grafana/role.sql
	manage_psql -f /chatd/sql/grafana/views.sql
	manage_psql -v user="$(manage_get GRAFANA_DB_USER)" \
		-v password="$(manage_get GRAFANA_DB_PASSWORD)" \
		-f /chatd/sql/grafana/login.sql
	manage_psql -v user=chatd_monitor \
		-v password="$(manage_get POSTGRES_EXPORTER_PASSWORD)" \
		-f /chatd/exporters/postgres-monitor.sql
}

manage_start() {
	case "${1:-}" in
	"") ;;
	monitoring) manage_profiles=(--profile monitoring) ;;
	*) manage_usage ;;
	esac
	manage_compose build chatd
	manage_migrate
	manage_compose up -d
	manage_status
}

# Prints an endpoint's answer, or that it does not answer.
manage_probe() {
	local name=$1 url=$2
	if curl -fsS --max-time 3 "$url" >/dev/null 2>&1; then
		printf '%-12s ok    %s\n' "$name" "$url"
	else
		printf '%-12s DOWN  %s\n' "$name" "$url"
	fi
}

manage_status() {
	manage_profiles=(--profile monitoring)
	manage_compose ps
	echo
	manage_probe chatd "http://127.0.0.1:$(manage_get CHATD_PORT)/ready"
	manage_probe prometheus http://127.0.0.1:9090/-/ready
	manage_probe grafana http://127.0.0.1:3000/api/health
	manage_probe loki http://127.0.0.1:3100/ready
}

manage_backup() {
	local dir=${1:-backups/$(date -u +%Y%m%dT%H%M%SZ)} snap
	manage_profiles=(--profile monitoring)
	mkdir -p "$dir"
	echo "docker-manage.sh: backing up into $dir" >&2
	# Provisioned dashboards and configuration are files of this tree;
	# Grafana's own database holds users, folders and any dashboard made
	# in the UI.
	tar -czf "$dir/monitoring-config.tar.gz" prometheus grafana loki exporters sql/grafana
	manage_compose exec -T grafana tar -C /var/lib/grafana -czf - grafana.db \
		>"$dir/grafana-db.tar.gz"
	# A consistent TSDB snapshot (the admin API is on, loopback only).
	snap=$(curl -fsS -X POST http://127.0.0.1:9090/api/v1/admin/tsdb/snapshot |
		sed -n 's/.*"name":"\([^"]*\)".*/\1/p')
	[[ -n "$snap" ]] || manage_die "Prometheus did not make a snapshot"
	manage_compose exec -T prometheus tar -C /prometheus/snapshots -czf - "$snap" \
		>"$dir/prometheus-snapshot.tar.gz"
	manage_compose exec -T prometheus rm -rf "/prometheus/snapshots/$snap"
	manage_compose exec -T loki tar -C /loki -czf - . >"$dir/loki-data.tar.gz"
	ls -l "$dir"
}

manage_update() {
	manage_profiles=(--profile monitoring)
	manage_compose pull --ignore-pull-failures
	manage_compose build --pull chatd
	manage_migrate
	manage_compose up -d
}

[[ $# -ge 1 ]] || manage_usage
manage_cmd=$1
shift
manage_check_env
case "$manage_cmd" in
start) manage_start "$@" ;;
stop)
	manage_profiles=(--profile monitoring --profile promtail)
	manage_compose stop
	;;
status) manage_status ;;
logs)
	manage_profiles=(--profile monitoring --profile promtail)
	manage_compose logs -f --tail=100 "$@"
	;;
migrate) manage_migrate ;;
backup) manage_backup "$@" ;;
update) manage_update ;;
check) echo "docker-manage.sh: $manage_env is fine" ;;
*) manage_usage ;;
esac
