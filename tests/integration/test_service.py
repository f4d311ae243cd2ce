"""The service routes and what every response carries: /health, /ready,
/metrics, the browser client at /, unknown routes and methods, and the
X-Request-Id header that ties a response to its log lines."""

import os

import pytest

from chatd_client import HEX32, assert_error

# /ready of a node in Redis mode also names its "redis" check: test_ready
# holds the body of a chatd without Redis (test_cluster.py checks that one).
pytestmark = pytest.mark.single_node("/ready without Redis")


def test_health(client):
    r = client.get("/health")
    assert r.status == 200, r
    assert r.header("Content-Type", "").startswith("application/json")
    assert r.json == {"status": "ok"}


def test_ready(client):
    r = client.get("/ready")
    assert r.status == 200, r
    assert r.header("Content-Type", "").startswith("application/json")
    assert r.json == {"status": "ok", "checks": {"database": "ok"}}


def test_metrics_text_format(client):
    r = client.get("/metrics")
    assert r.status == 200, r
    ctype = r.header("Content-Type", "")
    assert ctype.startswith("text/plain"), ctype
    assert "version=0.0.4" in ctype, ctype
    text = r.text
    assert "# TYPE " in text
    for line in text.splitlines():
        assert line == "" or line.startswith("#") or " " in line, line


def test_root_serves_the_browser_client(client):
    r = client.get("/")
    assert r.status == 200, r
    assert r.header("Content-Type", "").startswith("text/html")
    assert b"<html" in r.body.lower() or b"<!doctype html" in r.body.lower()


def test_unknown_route_is_json_404(client):
    for path in ("/api/nope", "/nope", "/api", "/api/conversations/1/nope",
                 "/api/users/1"):
        r = client.get(path)
        assert_error(r, 404, "not_found")
    r = client.post("/api/nope", {"a": 1})
    assert_error(r, 404, "not_found")


def allow_set(r):
    allow = r.header("Allow")
    assert allow is not None, r.header_list
    return {m.strip().upper() for m in allow.split(",")}


def test_wrong_method_is_405_with_allow(client):
    cases = [
        ("GET", "/api/register", {"POST"}),
        ("GET", "/api/login", {"POST"}),
        ("GET", "/api/logout", {"POST"}),
        ("POST", "/api/me", {"GET"}),
        ("DELETE", "/api/conversations", {"GET", "POST"}),
        ("PUT", "/api/conversations/1/messages", {"GET", "POST"}),
        ("GET", "/api/conversations/1/read", {"POST"}),
        ("POST", "/health", {"GET"}),
        ("POST", "/ready", {"GET"}),
    ]
    for method, path, allowed in cases:
        r = client.request(method, path)
        assert_error(r, 405, "method_not_allowed")
        got = allow_set(r)
        assert allowed <= got, (method, path, got)
        assert method not in got, (method, path, got)


# -- X-Request-Id --------------------------------------------------------------

def test_request_id_on_every_response(client):
    u = client.new_user("rid")
    responses = [
        client.get("/health"),
        client.get("/ready"),
        client.get("/"),
        client.get("/api/me", token=u.token),
        client.get("/api/me"),
        client.get("/api/nope"),
        client.request("GET", "/api/register"),
        client.post("/api/register", {"username": 1}),
        client.login(u.username, "wrong-password"),
        client.post("/api/logout", token=u.token),
        client.raw_request("POST", "/api/login", body=b"{",
                           headers=[("Content-Type", "application/json")]),
    ]
    seen = set()
    for r in responses:
        rid = r.header("X-Request-Id")
        assert rid is not None, r
        assert HEX32.match(rid), rid
        seen.add(rid)
    # a new id each time
    assert len(seen) == len(responses)


def test_valid_request_id_is_echoed(client):
    for rid in ("abc", "A-Z_a.z-0.9", "x" * 64, "1"):
        r = client.get("/health", headers={"X-Request-Id": rid})
        assert r.status == 200
        assert r.header("X-Request-Id") == rid
    r = client.post("/api/login", {"username": "x"},
                    headers={"X-Request-Id": "err-echo-1"})
    assert r.status == 400
    assert r.header("X-Request-Id") == "err-echo-1"


def test_invalid_request_id_is_replaced(client):
    for rid in ("x" * 65, "has space", "semi;colon", "slash/no",
                "quote\"d", "\u00e9t\u00e9".encode().decode("latin-1")):
        r = client.get("/health", headers={"X-Request-Id": rid})
        assert r.status == 200, r
        got = r.header("X-Request-Id")
        assert got != rid
        assert HEX32.match(got), got


def test_request_id_is_the_trace_id_of_the_log_line(server, client):
    rid = "trace-" + os.urandom(8).hex()
    r = client.get("/health", headers={"X-Request-Id": rid})
    assert r.header("X-Request-Id") == rid
    ev = server.wait_event(lambda e: e.get("event_type") == "api_request"
                           and e.get("trace_id") == rid)
    assert ev is not None, "no api_request line with trace_id %s" % rid
    assert ev["method"] == "GET"
    assert ev["route"] == "/health"
    assert ev["status"] == 200

    # a generated id too, for an authenticated route with a path id
    u = client.new_user("trc")
    v = client.new_user("trc")
    cid = client.conversation(u, v).json["conversation_id"]
    r = client.history(u, cid, "limit=5")
    gen = r.header("X-Request-Id")
    assert HEX32.match(gen), gen
    ev = server.wait_event(lambda e: e.get("event_type") == "api_request"
                           and e.get("trace_id") == gen)
    assert ev is not None, "no api_request line with trace_id %s" % gen
    assert ev["method"] == "GET"
    assert ev["route"] == "/api/conversations/{id}/messages"
    assert ev["status"] == 200
    # one request, one api_request line
    lines = [e for e in server.log_events()
             if e.get("event_type") == "api_request"
             and e.get("trace_id") == gen]
    assert len(lines) == 1, lines

    # an error's api_error line shares it
    r = client.history(u, 999999999)
    gen = r.header("X-Request-Id")
    ev = server.wait_event(lambda e: e.get("event_type") == "api_error"
                           and e.get("trace_id") == gen)
    assert ev is not None, "no api_error line with trace_id %s" % gen
    assert ev["status"] == 404
    assert ev["code"] == "not_found"
