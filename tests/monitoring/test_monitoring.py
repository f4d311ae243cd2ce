"""The monitoring stack, verified against real servers.

tests/monitoring/run.sh starts Postgres, Redis, chatd, the exporters and
Prometheus, runs a workload, and then runs this file with their addresses
in MONITORING_* environment variables. Grafana and Loki are not installed
on test machines: every query they would run is run here instead, against
the Prometheus and Postgres they would ask, with Grafana's variables and
macros expanded as Grafana expands them.
"""

import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

ROOT = os.environ.get("MONITORING_ROOT",
                      os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
PROM = os.environ.get("MONITORING_PROM_URL")
PG_SUPER = os.environ.get("MONITORING_PG_SUPER_URL")
PG_READER = os.environ.get("MONITORING_PG_READER_URL")
CHATD_LOG = os.environ.get("MONITORING_CHATD_LOG")

DASHBOARD_FILES = sorted(glob.glob(os.path.join(ROOT, "grafana/dashboards/*.json")))
RULE_FILES = sorted(glob.glob(os.path.join(ROOT, "prometheus/rules/*.yml")))
DATASOURCES_FILE = os.path.join(ROOT, "grafana/provisioning/datasources/chatd.yml")

# Grafana's time range for the test: the last 6 hours.
RANGE_TO = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
RANGE_FROM = RANGE_TO - datetime.timedelta(hours=6)


def need_live():
    """The live tests run only under run.sh; run by hand, they fail."""
    assert PROM and PG_SUPER and PG_READER, \
        "run this file through tests/monitoring/run.sh (no servers given)"


def rel(path):
    return os.path.relpath(path, ROOT)


# ------------------------------------------------------------ dashboards

def load_dashboards():
    out = []
    for path in DASHBOARD_FILES:
        with open(path, encoding="utf-8") as f:
            out.append((path, json.load(f)))
    return out


def all_panels(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []):   # panels inside collapsed rows
            yield q


def panel_targets(dash):
    """(panel, target, datasource uid) for every query of a dashboard."""
    for p in all_panels(dash):
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource") or {}
            yield p, t, ds.get("uid")


def datasource_uids():
    with open(DATASOURCES_FILE, encoding="utf-8") as f:
        prov = yaml.safe_load(f)
    return {d["uid"]: d for d in prov["datasources"]}


def test_dashboards_exist_parse_and_have_unique_uids():
    dashes = load_dashboards()
    assert len(dashes) >= 6, [rel(p) for p, _ in dashes]
    uids = [d["uid"] for _, d in dashes]
    titles = [d["title"] for _, d in dashes]
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles
    for path, d in dashes:
        assert d.get("id") is None, "%s: a provisioned dashboard has no id" % rel(path)
        ids = [p["id"] for p in all_panels(d)]
        assert len(set(ids)) == len(ids), "%s: panel ids repeat" % rel(path)


def test_the_guide_dashboards_are_there():
    titles = {d["title"] for _, d in load_dashboards()}
    for want in ["Chat Platform Overview", "System Resources", "Database Performance",
                 "Cache Performance", "Application Metrics", "Chat Activity"]:
        assert want in titles, titles


def test_overview_has_the_guide_seven_panels():
    d = next(d for _, d in load_dashboards() if d["title"] == "Chat Platform Overview")
    titles = [p["title"] for p in all_panels(d)]
    assert titles == ["HTTP Request Rate", "HTTP Response Time", "Business Metrics",
                      "Cache Performance", "Redis Memory Usage", "PostgreSQL Connections",
                      "System Resources"]


def test_every_datasource_is_a_pinned_provisioned_uid():
    uids = datasource_uids()
    assert set(uids) == {"chatd-prometheus", "chatd-loki", "chatd-postgres"}
    assert uids["chatd-postgres"]["type"] == "grafana-postgresql-datasource"
    text_seen = 0
    for path, d in load_dashboards():
        raw = open(path, encoding="utf-8").read()
        assert "${DS_" not in raw and "__inputs" not in d, rel(path)
        for p in all_panels(d):
            if p.get("type") == "row":
                continue
            ds = p.get("datasource")
            assert isinstance(ds, dict) and ds.get("uid") in uids, \
                "%s: panel %r datasource %r" % (rel(path), p.get("title"), ds)
            assert ds["type"] == uids[ds["uid"]]["type"], (rel(path), p["title"])
        for p, t, uid in panel_targets(d):
            assert uid in uids, "%s: %r target datasource %r" % (rel(path), p["title"], uid)
            text_seen += 1
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query":
                assert v["datasource"]["uid"] in uids, (rel(path), v["name"])
    assert text_seen > 50


def test_datasource_secrets_come_from_the_environment():
    uids = datasource_uids()
    pg = uids["chatd-postgres"]
    assert pg["secureJsonData"]["password"].startswith("$"), "password must not be in the file"
    assert pg["user"].startswith("$")


# ------------------------------------------------------------ PromQL

def prom_query(expr):
    url = PROM + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


PROM_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
             "$instance": ".*", "$node": ".*"}


def expand_promql(expr):
    for k in sorted(PROM_VARS, key=len, reverse=True):
        expr = expr.replace(k, PROM_VARS[k])
    assert "$" not in expr, "an unexpanded variable in " + expr
    return expr


def promql_expressions():
    """(where, expression) for every PromQL query of the dashboards,
    their query variables, and the rules."""
    out = []
    for path, d in load_dashboards():
        for p, t, uid in panel_targets(d):
            if uid == "chatd-prometheus":
                out.append(("%s: %s/%s" % (rel(path), p["title"], t["refId"]),
                            expand_promql(t["expr"])))
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") == "query" and v["datasource"]["uid"] == "chatd-prometheus":
                m = re.match(r"label_values\((.*),\s*(\w+)\)$", v["definition"])
                assert m, v["definition"]
                out.append(("%s: variable %s" % (rel(path), v["name"]), m.group(1)))
    for path in RULE_FILES:
        with open(path, encoding="utf-8") as f:
            for g in yaml.safe_load(f)["groups"]:
                for r in g["rules"]:
                    out.append(("%s: %s" % (rel(path), r.get("alert") or r.get("record")),
                                r["expr"]))
    return out


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right",
                "bool", "offset", "and", "or", "unless", "le", "inf", "nan"}
# Families that exist but have no samples on a test machine, and why.
ABSENT_HERE = {
    "container_cpu_usage_seconds_total": "cAdvisor needs Docker",
    "container_memory_working_set_bytes": "cAdvisor needs Docker",
    "chat_ws_frames_rejected_total": "the workload sends no bad frame",
    "chat_errors_total": "labelled: exists once an error was answered",
}


def metric_names(expr):
    s = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)              # strings
    s = re.sub(r"\{[^}]*\}", " ", s)                          # matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                         # ranges
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", s)       # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            continue                                          # a function
        if m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def test_every_promql_expression_evaluates():
    need_live()
    exprs = promql_expressions()
    assert len(exprs) > 80
    failures = []
    for where, expr in exprs:
        r = prom_query(expr)
        if r.get("status") != "success" or r.get("warnings"):
            failures.append("%s: %s -> %s %s" % (where, expr, r.get("error"), r.get("warnings")))
    assert not failures, "\n".join(failures)


def test_every_metric_an_expression_names_exists():
    """A typo in a metric name evaluates fine and shows nothing: catch it."""
    need_live()
    with urllib.request.urlopen(PROM + "/api/v1/label/__name__/values", timeout=10) as r:
        known = set(json.load(r)["data"])
    recorded = set()
    for path in RULE_FILES:
        with open(path, encoding="utf-8") as f:
            for g in yaml.safe_load(f)["groups"]:
                recorded |= {r["record"] for r in g["rules"] if "record" in r}
    missing = []
    for where, expr in promql_expressions():
        for name in metric_names(expr):
            if name in known or name in recorded or name in ABSENT_HERE:
                continue
            missing.append("%s: %s" % (where, name))
    assert not missing, "\n".join(missing)


def first_value(expr):
    r = prom_query(expr)
    assert r["status"] == "success", r
    res = r["data"]["result"]
    return float(res[0]["value"][1]) if res else None


@pytest.mark.parametrize("expr", [
    # The Chat Platform Overview panels, after the workload.
    'sum by (method, route) (rate(http_requests_total{job="chatd"}[1m])) > 0',
    'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="chatd"}[1m])))',
    'sum(rate(chat_messages_created_total{job="chatd"}[1m])) > 0',
    'sum(rate(chat_users_registered_total{job="chatd"}[1m])) > 0',
    'instance:redis_keyspace_hit:ratio_rate5m',
    'redis_memory_used_bytes{job="redis"} > 0',
    'sum by (instance) (pg_stat_database_numbackends{job="postgres"}) > 0',
    'max by (instance) (pg_settings_max_connections{job="postgres"}) > 0',
    'instance:node_memory_usage:ratio > 0',
    'instance:node_cpu_usage:ratio_rate5m',
    # Recording rules and the collector's gauges.
    'job:http_requests:rate5m > 0',
    'job:chat_messages_created:rate5m > 0',
    'operation:chat_database_queries:rate5m > 0',
    'instance:pg_connections:usage_ratio > 0',
    'max(chat_users{job="chatd"}) >= 12',
    'max(chat_active_users{job="chatd"}) >= 1',
    'time() - max(chat_collector_last_success_timestamp_seconds{job="chatd"}) < 60',
])
def test_key_panels_return_data(expr):
    need_live()
    assert first_value(expr) is not None, expr + " returned nothing"


def test_redis_hit_rate_is_what_the_workload_did():
    need_live()
    v = first_value("instance:redis_keyspace_hit:ratio_rate5m")
    assert v is not None and 0.5 < v < 1.0, v


def test_error_ratio_is_zero_without_any_5xx():
    need_live()
    # The workload had no 5xx, so no 5xx series exists: the ratio is 0,
    # not absent (the promtool tests show it absent without traffic).
    v = first_value("job:http_requests_5xx:ratio_rate5m")
    assert v == 0.0, v


def test_every_target_is_up():
    need_live()
    r = prom_query("up")
    jobs = {s["metric"]["job"]: s["value"][1] for s in r["data"]["result"]}
    assert jobs == {"chatd": "1", "postgres": "1", "redis": "1", "node": "1",
                    "prometheus": "1"}, jobs
    assert first_value('pg_up{job="postgres"}') == 1
    assert first_value('redis_up{job="redis"}') == 1


def test_prometheus_evaluates_every_rule_without_error():
    need_live()
    with urllib.request.urlopen(PROM + "/api/v1/rules", timeout=10) as r:
        groups = json.load(r)["data"]["groups"]
    rules = [ru for g in groups for ru in g["rules"]]
    names = {ru["name"] for ru in rules}
    for alert in ["ChatAppDown", "PostgreSQLDown", "RedisDown", "HighErrorRate",
                  "HighResponseTime", "HighMemoryUsage", "LowCacheHitRate",
                  "HighMessageVolume", "HighUserRegistration", "ChatCollectorStale"]:
        assert alert in names
    bad = [(ru["name"], ru.get("lastError")) for ru in rules
           if ru.get("health") != "ok" or ru.get("lastError")]
    assert not bad, bad
    firing = [ru["name"] for ru in rules if ru.get("type") == "alerting"
              and ru["name"] in ("ChatAppDown", "PostgreSQLDown", "RedisDown")
              and ru.get("state") != "inactive"]
    assert not firing, firing


def test_alert_rules_say_what_to_do():
    for path in RULE_FILES:
        with open(path, encoding="utf-8") as f:
            for g in yaml.safe_load(f)["groups"]:
                for r in g["rules"]:
                    if "alert" not in r:
                        continue
                    assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
                    for k in ("summary", "description", "action"):
                        assert r["annotations"].get(k), (r["alert"], k)


def test_the_guide_thresholds():
    rules = {}
    for path in RULE_FILES:
        with open(path, encoding="utf-8") as f:
            for g in yaml.safe_load(f)["groups"]:
                rules.update({r["alert"]: r for r in g["rules"] if "alert" in r})
    want = {"ChatAppDown": ("1m", "critical"), "PostgreSQLDown": ("1m", "critical"),
            "RedisDown": ("1m", "critical"), "HighErrorRate": ("2m", "warning"),
            "HighResponseTime": ("5m", "warning"), "HighMemoryUsage": ("5m", "warning"),
            "LowCacheHitRate": ("10m", "warning"), "HighMessageVolume": ("5m", "info"),
            "HighUserRegistration": ("5m", "info")}
    for name, (for_, sev) in want.items():
        assert rules[name]["for"] == for_, name
        assert rules[name]["labels"]["severity"] == sev, name
    assert re.search(r">\s*0\.10?\b", rules["HighErrorRate"]["expr"])
    assert re.search(r">\s*1\b", rules["HighResponseTime"]["expr"])
    assert re.search(r">\s*0\.85\b", rules["HighMemoryUsage"]["expr"])
    assert re.search(r"<\s*0\.80?\b", rules["LowCacheHitRate"]["expr"])
    assert re.search(r">\s*100\b", rules["HighMessageVolume"]["expr"])
    assert re.search(r">\s*10\b", rules["HighUserRegistration"]["expr"])


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)


def test_promtool_check_config_and_rules():
    r = run(["promtool", "check", "config", "prometheus/prometheus.yml"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["promtool", "check", "rules"] + RULE_FILES)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules():
    tests = sorted(glob.glob(os.path.join(ROOT, "prometheus/tests/*.yml")))
    assert tests
    r = run(["promtool", "test", "rules"] + tests)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_promtool_test_rules_can_fail():
    """The rule tests are not vacuous: with one threshold moved they fail."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(os.path.join(ROOT, "prometheus"), os.path.join(tmp, "prometheus"))
        alerts = os.path.join(tmp, "prometheus/rules/chatd-alerts.yml")
        text = open(alerts).read()
        assert "> 0.85" in text
        open(alerts, "w").write(text.replace("> 0.85", "> 0.95"))
        r = subprocess.run(["promtool", "test", "rules", "prometheus/tests/alerts_test.yml"],
                           capture_output=True, text=True, cwd=tmp)
        assert r.returncode != 0 and "HighMemoryUsage" in r.stdout + r.stderr, r.stdout


# ------------------------------------------------------------ SQL

def psql(url, sql):
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                           url, "-c", sql], capture_output=True, text=True)


def ts(t):
    return "'" + t.strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def interval_seconds(s):
    m = re.fullmatch(r"(\d+)(s|m|h|d)", s.strip().strip("'"))
    assert m, "bad interval " + s
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def expand_macros(sql):
    """Grafana's PostgreSQL macros, expanded the way its backend does."""
    def args(m):
        return [a.strip() for a in m.group(1).split(",")]

    def time_group(m, alias):
        a = args(m)
        sec = interval_seconds(a[1])
        out = "floor(extract(epoch from %s)/%d)*%d" % (a[0], sec, sec)
        return out + (' AS "time"' if alias else "")

    sql = re.sub(r"\$__timeGroupAlias\(([^)]*)\)", lambda m: time_group(m, True), sql)
    sql = re.sub(r"\$__timeGroup\(([^)]*)\)", lambda m: time_group(m, False), sql)
    sql = re.sub(r"\$__timeFilter\(([^)]*)\)",
                 lambda m: "%s BETWEEN %s AND %s" % (args(m)[0], ts(RANGE_FROM), ts(RANGE_TO)), sql)
    sql = re.sub(r"\$__time\(([^)]*)\)", lambda m: '%s AS "time"' % args(m)[0], sql)
    sql = sql.replace("$__timeFrom()", ts(RANGE_FROM)).replace("$__timeTo()", ts(RANGE_TO))
    assert "$__" not in sql, "an unknown macro in " + sql
    return sql


def sql_variable_choices(dash):
    """Every value of each variable, others at their default; Grafana
    quotes multi-value variables in SQL as 'a','b'."""
    variables = dash.get("templating", {}).get("list", [])
    def values(v):
        opts = [o["value"] for o in v.get("options", []) if o["value"] != "$__all"]
        if v.get("multi"):
            return [",".join("'%s'" % o for o in opts)] + ["'%s'" % o for o in opts]
        return opts
    defaults = {v["name"]: values(v)[0] if not v.get("multi") else values(v)[0]
                for v in variables}
    for v in variables:
        dv = v["current"]["value"]
        if not v.get("multi"):
            defaults[v["name"]] = dv
    yield dict(defaults)
    for v in variables:
        for val in values(v):
            c = dict(defaults)
            c[v["name"]] = val
            yield c


def sql_queries():
    out = []
    for path, d in load_dashboards():
        for p, t, uid in panel_targets(d):
            if uid == "chatd-postgres":
                out.append(("%s: %s" % (rel(path), p["title"]), d, t["rawSql"]))
    return out


def expand_sql(sql, choice):
    for k in sorted(choice, key=len, reverse=True):
        sql = sql.replace("$" + k, choice[k])
    return expand_macros(sql)


def test_every_sql_panel_runs_as_the_read_only_role():
    need_live()
    queries = sql_queries()
    assert len(queries) >= 8
    failures = []
    runs = 0
    for where, dash, raw in queries:
        for choice in sql_variable_choices(dash):
            sql = expand_sql(raw, choice)
            r = psql(PG_READER, sql)
            runs += 1
            if r.returncode != 0:
                failures.append("%s %r:\n%s\n%s" % (where, choice, sql, r.stderr))
    assert not failures, "\n".join(failures)
    assert runs > len(queries)


@pytest.mark.parametrize("title,minimum", [
    ("Messages per minute", 80), ("Registrations and logins", 24),
    ("Busiest conversations", 2), ("Active users over time", 1),
])
def test_activity_panels_show_the_workload(title, minimum):
    need_live()
    where, dash, raw = next(q for q in sql_queries() if q[0].endswith(": " + title))
    sql = expand_sql(raw, next(sql_variable_choices(dash)))
    r = psql(PG_READER, sql)
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.splitlines() if line]
    numbers = [float(c) for row in rows for c in row[1:] if re.fullmatch(r"\d+", c)]
    assert rows and sum(numbers) >= minimum, (title, r.stdout)


@pytest.mark.parametrize("sql", [
    "SELECT body FROM public.messages LIMIT 1",
    "SELECT password_hash FROM public.users LIMIT 1",
    "SELECT token_hash FROM public.sessions LIMIT 1",
    "SELECT detail FROM public.events LIMIT 1",
    "SELECT count(*) FROM public.messages",
])
def test_read_only_role_is_refused_the_tables(sql):
    need_live()
    r = psql(PG_READER, sql)
    assert r.returncode != 0 and "permission denied" in r.stderr, (sql, r.stdout, r.stderr)
    # The same query as the owner works: the refusal is the role's.
    assert psql(PG_SUPER, sql).returncode == 0


def test_read_only_role_cannot_write_and_has_limits():
    need_live()
    r = psql(PG_READER, "SHOW default_transaction_read_only; SHOW statement_timeout")
    assert r.stdout.split() == ["on", "10s"], r.stdout
    r = psql(PG_READER, "CREATE TABLE grafana.x (i int)")
    assert r.returncode != 0
    r = psql(PG_READER, "SET default_transaction_read_only = off; "
                        "DELETE FROM grafana.events")
    assert r.returncode != 0
    r = psql(PG_READER, "SELECT pg_sleep(11)")
    assert r.returncode != 0 and "statement timeout" in r.stderr, r.stderr


def test_views_show_no_secret_column():
    need_live()
    r = psql(PG_SUPER, "SELECT table_name || '.' || column_name FROM information_schema.columns "
                       "WHERE table_schema = 'grafana'")
    assert r.returncode == 0, r.stderr
    cols = r.stdout.split()
    assert len(cols) > 20
    for c in cols:
        assert c.split(".")[1] not in ("body", "password_hash", "token_hash", "detail",
                                       "title", "client_msg_id", "username"), c
    # Whatever it can select, none of it is a secret: every view, every row.
    views = sorted({c.split(".")[0] for c in cols})
    for v in views:
        r = psql(PG_READER, "SELECT * FROM grafana.%s" % v)
        assert r.returncode == 0, (v, r.stderr)
        assert "message " not in r.stdout and "$y$" not in r.stdout, v


# ------------------------------------------------------------ logs

def test_chatd_log_lines_carry_the_loki_labels():
    need_live()
    lines = [json.loads(line) for line in open(CHATD_LOG, encoding="utf-8")
             if line.startswith("{")]
    assert len(lines) > 50
    for e in lines:
        assert e["service"] == "chatd"
        assert e["level"] in ("debug", "info", "warn", "error")
        assert re.fullmatch(r"[a-z_]{1,64}", e["event_type"]), e
    types = {e["event_type"] for e in lines}
    assert {"user_registration", "user_login", "api_request"} <= types, types


def yaml_files():
    pats = ["prometheus/**/*.yml", "grafana/**/*.yml", "loki/**/*.yml", "loki/**/*.yaml",
            "exporters/**/*.yml", "docker-compose.yml"]
    return sorted({f for p in pats for f in glob.glob(os.path.join(ROOT, p), recursive=True)})


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; the tools may not: refuse."""


def _unique_mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise yaml.constructor.ConstructorError(
            None, None, "repeated keys %r" % sorted(map(str, dup)), node.start_mark)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                _unique_mapping)


def test_every_yaml_file_parses():
    files = yaml_files()
    want = {"prometheus/prometheus.yml", "prometheus/rules/chatd-alerts.yml",
            "prometheus/rules/chatd-recording.yml", "prometheus/tests/alerts_test.yml",
            "grafana/provisioning/datasources/chatd.yml",
            "grafana/provisioning/dashboards/chatd.yml", "loki/loki.yml",
            "loki/promtail.yml", "docker-compose.yml"}
    assert want <= {rel(f) for f in files}, files
    for f in files:
        with open(f, encoding="utf-8") as fh:
            assert yaml.load(fh, Loader=UniqueKeyLoader) is not None, rel(f)


def test_yaml_duplicate_keys_are_caught():
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.load("a: 1\nb: 2\na: 3\n", Loader=UniqueKeyLoader)


def test_loki_configuration():
    with open(os.path.join(ROOT, "loki/loki.yml")) as f:
        cfg = yaml.safe_load(f)
    schema = cfg["schema_config"]["configs"][-1]
    assert schema["store"] == "tsdb" and schema["schema"] == "v13"
    # ${LOKI_RETENTION:-168h}: .env may change it, 7 days by default.
    assert cfg["limits_config"]["retention_period"] in ("168h", "${LOKI_RETENTION:-168h}")
    assert cfg["compactor"]["retention_enabled"] is True


def test_promtail_labels_only_bounded_fields():
    with open(os.path.join(ROOT, "loki/promtail.yml")) as f:
        cfg = yaml.safe_load(f)
    labels = set()
    for sc in cfg["scrape_configs"]:
        for st in sc.get("pipeline_stages", []):
            if "labels" in st:
                labels |= set(st["labels"])
        for st in sc.get("static_configs", []):
            labels |= set(st.get("labels", {})) - {"__path__"}
    assert labels <= {"service", "level", "event_type", "job"}, labels
    assert {"service", "level", "event_type"} <= labels


def test_alloy_labels_only_bounded_fields():
    text = open(os.path.join(ROOT, "loki/config.alloy"), encoding="utf-8").read()
    m = re.search(r"stage\.labels\s*\{\s*values\s*=\s*\{([^}]*)\}", text)
    assert m, "no stage.labels in config.alloy"
    labels = set(re.findall(r"(\w+)\s*=", m.group(1)))
    assert labels == {"service", "level", "event_type"}, labels
    assert "loki.write" in text


# ------------------------------------------------------------ compose and scripts

def compose_env(tmp):
    env = os.path.join(tmp, ".env")
    shutil.copy(os.path.join(ROOT, ".env.example"), env)
    return env


def test_docker_compose_config_validates():
    with tempfile.TemporaryDirectory() as tmp:
        env = compose_env(tmp)
        r = run(["docker-compose", "--env-file", env, "-f", "docker-compose.yml",
                 "--profile", "monitoring", "config", "--quiet"])
        assert r.returncode == 0, r.stderr
        r = run(["docker-compose", "--env-file", env, "-f", "docker-compose.yml",
                 "--profile", "monitoring", "config", "--services"])
        services = set(r.stdout.split())
    assert {"chatd", "postgres", "redis", "prometheus", "grafana", "loki", "alloy",
            "postgres-exporter", "redis-exporter", "node-exporter", "cadvisor"} <= services, services


def test_compose_monitoring_is_a_profile_and_uses_the_repo_configs():
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        c = yaml.safe_load(f)
    s = c["services"]
    for core in ("chatd", "postgres", "redis"):
        assert "profiles" not in s[core], core
    for mon in ("prometheus", "grafana", "loki", "alloy", "postgres-exporter",
                "redis-exporter", "node-exporter", "cadvisor"):
        assert "monitoring" in s[mon]["profiles"], mon
    cmd = " ".join(s["prometheus"]["command"])
    assert "--storage.tsdb.retention.time=${PROMETHEUS_RETENTION" in cmd
    assert "--storage.tsdb.retention.size=" in cmd
    vols = " ".join(s["grafana"]["volumes"])
    assert "./grafana/provisioning" in vols and "./grafana/dashboards" in vols
    assert "GF_SECURITY_ADMIN_PASSWORD" in s["grafana"]["environment"]


def test_env_example_names_the_settings():
    text = open(os.path.join(ROOT, ".env.example")).read()
    for k in ("GRAFANA_PASSWORD", "PROMETHEUS_RETENTION", "LOKI_RETENTION", "LOG_LEVEL",
              "POSTGRES_PASSWORD", "GRAFANA_DB_PASSWORD"):
        assert re.search(r"^%s=" % k, text, re.M), k


def test_docker_manage_is_shellcheck_clean():
    r = run(["shellcheck", "scripts/docker-manage.sh"])
    assert r.returncode == 0, r.stdout


def test_docker_manage_refuses_the_example_passwords():
    with tempfile.TemporaryDirectory() as tmp:
        env = compose_env(tmp)
        r = run(["scripts/docker-manage.sh", "start", "monitoring"],
                env=dict(os.environ, CHATD_ENV_FILE=env, PATH="/usr/bin:/bin"))
        assert r.returncode != 0
        assert "example" in r.stderr and "GRAFANA_PASSWORD" in r.stderr, r.stderr
        # With real passwords it gets past the check (and then needs docker).
        text = open(env).read()
        text = re.sub(r"(?m)^(\w*PASSWORD)=.*$",
                      lambda m: "%s=%s" % (m.group(1), os.urandom(12).hex()), text)
        open(env, "w").write(text)
        r = run(["scripts/docker-manage.sh", "check"],
                env=dict(os.environ, CHATD_ENV_FILE=env))
        assert r.returncode == 0, r.stderr
