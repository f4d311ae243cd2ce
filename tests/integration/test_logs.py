"""The JSON log on stdout: its line format, the events a run produces with
their fields, and that no password or token ever reaches stdout or stderr.

The module runs one scenario on its own chatd, stops it, and then reads
everything the process wrote."""

import json
import os
import shutil
import tempfile

import pytest

from chatd_client import HEX32, RFC3339_MS, is_int, unique_name
from conftest import ChatdProcess

LEVELS = {"debug", "info", "warn", "error"}


class Run:
    pass


@pytest.fixture(scope="module")
def run():
    tmpdir = tempfile.mkdtemp(prefix="chatd-it-")
    try:
        yield from _scenario(tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _scenario(tmpdir):
    proc = ChatdProcess(tmpdir)
    proc.start()
    c = proc.client()
    rec = Run()
    rec.secrets = []
    try:
        # a registration and two logins
        rec.alice_pw = "alice-secret-" + os.urandom(6).hex()
        rec.alice = unique_name("logalice")
        r = c.register(rec.alice, rec.alice_pw)
        assert r.status == 201, r
        rec.alice_id = r.json["user_id"]
        login = c.login(rec.alice, rec.alice_pw)
        assert login.status == 200, login
        rec.token = login.json["token"]
        rec.token2 = c.login(rec.alice, rec.alice_pw).json["token"]
        bob = c.new_user("logbob", password="bob-secret-" + os.urandom(6).hex())
        rec.bob = bob
        # a conversation and a message
        cid = c.conversation(bob, rec.alice).json["conversation_id"]
        rec.cid = cid
        r = c.send(bob, cid, "log body " + os.urandom(4).hex())
        assert r.status == 201, r
        # failures: wrong password, unknown user, a name that needs escaping
        rec.wrong_pw = "wrong-secret-" + os.urandom(6).hex()
        assert c.login(rec.alice, rec.wrong_pw).status == 401
        rec.ghost = unique_name("ghost")
        assert c.login(rec.ghost, rec.wrong_pw).status == 401
        rec.evil = 'ev"il\\na\nme\u2028'
        c.login(rec.evil, rec.wrong_pw)
        # the throttle
        rec.locked = unique_name("loglock")
        rec.locked_pw = "locked-secret-" + os.urandom(6).hex()
        c.register(rec.locked, rec.locked_pw)
        for i in range(5):
            c.login(rec.locked, rec.wrong_pw + str(i))
        assert c.login(rec.locked, rec.locked_pw).status == 429
        # a bad token
        rec.bad_token = "Z" * 43
        assert c.get("/api/me", token=rec.bad_token).status == 401
        # logout
        r = c.post("/api/logout", token=rec.token)
        assert r.status == 204, r
        # a 404 for api_error
        assert c.get("/api/nope").status == 404
        rec.secrets = [rec.alice_pw, rec.token, rec.token2, bob.password,
                       bob.token, rec.wrong_pw, rec.locked_pw]
        # secrets inside JSON strings would be escaped the same way: they
        # hold only characters that JSON does not escape
    finally:
        rec.exit_code = proc.stop()
    rec.stdout = proc.stdout_bytes()
    rec.stderr = proc.stderr_text()
    rec.lines = [ln for ln in rec.stdout.decode("utf-8").split("\n")
                 if ln.strip()]
    rec.events = []
    rec.bad_lines = []
    for ln in rec.lines:
        try:
            rec.events.append(json.loads(ln))
        except ValueError:
            rec.bad_lines.append(ln)
    rec.port = proc.port
    yield rec


def events(run, kind):
    return [e for e in run.events if e.get("event_type") == kind]


def test_sigterm_exits_zero(run):
    assert run.exit_code == 0, run.stderr


def test_every_line_is_a_json_object(run):
    assert run.lines, "no log output"
    assert run.bad_lines == []
    for e in run.events:
        assert isinstance(e, dict), e
        for key in ("timestamp", "level", "service", "event_type",
                    "trace_id"):
            assert key in e, e
        assert RFC3339_MS.match(e["timestamp"]), e
        assert e["level"] in LEVELS, e
        assert e["service"] == "chatd", e
        assert isinstance(e["event_type"], str) and e["event_type"], e
        assert e["trace_id"] is None or isinstance(e["trace_id"], str), e


def test_field_order_starts_with_the_common_keys(run):
    for ln in run.lines[:20]:
        assert ln.startswith('{"timestamp":'), ln


def test_server_start_and_stop(run):
    assert len(events(run, "server_start")) == 1
    assert len(events(run, "server_stop")) == 1
    kinds = [e["event_type"] for e in run.events]
    start, stop = kinds.index("server_start"), kinds.index("server_stop")
    requests = [i for i, k in enumerate(kinds) if k == "api_request"]
    assert start < min(requests) and max(requests) < stop


def test_startup_line_on_stderr(run):
    lines = [ln for ln in run.stderr.splitlines() if "serving" in ln]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("chatd: serving http://127.0.0.1:%d/ "
                               "(database sqlite:" % run.port), lines
    assert lines[0].endswith("chat.db)"), lines


def test_stderr_speaks_only_in_chatd_lines(run):
    # stderr is for people: the one startup line (and errors), each
    # starting with "chatd: "; everything else goes to the JSON log
    for ln in run.stderr.splitlines():
        assert ln.startswith("chatd: "), run.stderr


def test_user_registration(run):
    evs = [e for e in events(run, "user_registration")
           if e.get("username") == run.alice]
    assert len(evs) == 1, events(run, "user_registration")
    assert evs[0]["user_id"] == run.alice_id
    assert evs[0]["level"] == "info"


def test_user_login(run):
    evs = [e for e in events(run, "user_login")
           if e.get("username") == run.alice]
    assert len(evs) == 2, evs
    for e in evs:
        assert e["user_id"] == run.alice_id
        assert is_int(e["session_id"])
    assert evs[0]["session_id"] != evs[1]["session_id"]


def test_user_logout(run):
    evs = events(run, "user_logout")
    assert len(evs) == 1, evs
    assert evs[0]["user_id"] == run.alice_id
    # the first login's session ended
    first = [e for e in events(run, "user_login")
             if e.get("username") == run.alice][0]
    assert evs[0]["session_id"] == first["session_id"]


def _security(run, kind):
    return [e for e in events(run, "security_event") if e.get("kind") == kind]


def _mentions_address(e):
    return any(v == "127.0.0.1" or (isinstance(v, str)
                                    and v.startswith("127.0.0.1"))
               for v in e.values())


def test_security_login_failed(run):
    evs = _security(run, "login_failed")
    names = [e.get("username") for e in evs]
    assert run.alice in names
    assert run.ghost in names
    # a name with quotes, backslashes and newlines stays inside its string
    assert run.evil in names
    for e in evs:
        assert _mentions_address(e), e
        assert e["level"] in ("info", "warn")


def test_security_login_throttled(run):
    evs = _security(run, "login_throttled")
    assert any(e.get("username") == run.locked for e in evs), evs
    for e in evs:
        assert _mentions_address(e), e


def test_security_bad_token(run):
    evs = _security(run, "bad_token")
    assert evs, events(run, "security_event")
    for e in evs:
        assert _mentions_address(e), e


def test_api_request_lines(run):
    evs = events(run, "api_request")
    assert evs
    for e in evs:
        assert e["method"] in ("GET", "POST", "PUT", "DELETE", "PATCH",
                               "HEAD", "OPTIONS"), e
        assert isinstance(e["route"], str) and e["route"], e
        # an unmatched path is logged under a fixed name, never raw
        assert e["route"].startswith("/") or e["status"] == 404, e
        assert e["route"] != "/api/nope", e
        assert is_int(e["status"]), e
        assert isinstance(e["duration_ms"], (int, float)), e
        assert e["duration_ms"] >= 0
        assert isinstance(e["trace_id"], str) and e["trace_id"], e
        # no raw ids in routes: templates only
        assert str(run.cid) not in e["route"].split("/"), e
    routes = {(e["method"], e["route"], e["status"]) for e in evs}
    assert ("POST", "/api/register", 201) in routes
    assert ("POST", "/api/login", 200) in routes
    assert ("POST", "/api/login", 401) in routes
    assert ("POST", "/api/login", 429) in routes
    assert ("POST", "/api/logout", 204) in routes
    assert ("POST", "/api/conversations", 201) in routes
    assert ("POST", "/api/conversations/{id}/messages", 201) in routes
    assert ("GET", "/health", 200) in routes
    # each response's X-Request-Id was a generated 32-hex id here
    assert all(HEX32.match(e["trace_id"]) for e in evs
               if e["route"] != "/health")


def test_api_error_lines(run):
    evs = events(run, "api_error")
    codes = {(e["status"], e["code"]) for e in evs}
    assert (401, "invalid_credentials") in codes
    assert (429, "too_many_attempts") in codes
    assert (401, "unauthorized") in codes
    assert (404, "not_found") in codes
    for e in evs:
        assert e["status"] >= 400
        assert "method" in e and "route" in e


def test_no_secrets_in_output(run):
    assert len(run.secrets) == 7
    out = run.stdout.decode("utf-8", "replace")
    for s in run.secrets:
        assert s not in out, "a secret appears on stdout"
        assert s not in run.stderr, "a secret appears on stderr"
    # the bad token presented is not echoed either
    assert run.bad_token not in out
    # nor any cookie header
    assert "chat_session=" not in out


def test_slow_queries_are_logged(tmp_dir):
    # with a threshold of 0 ms every query is slow enough to be logged
    proc = ChatdProcess(tmp_dir, args=["--slow-query-ms", "0"])
    proc.start()
    c = proc.client()
    password = "slow-secret-" + os.urandom(6).hex()
    u = c.new_user("slow", password=password)
    assert c.get("/api/me", token=u.token).status == 200
    assert proc.stop() == 0, proc.stderr_text()
    evs = [e for e in proc.log_events()
           if e.get("event_type") == "database_query"]
    assert evs, "no database_query events with --slow-query-ms 0"
    for e in evs:
        assert isinstance(e["operation"], str) and e["operation"], e
        assert isinstance(e["duration_ms"], (int, float)), e
        assert e["duration_ms"] >= 0
    out = proc.stdout_bytes().decode("utf-8", "replace")
    assert password not in out and u.token not in out


def test_default_threshold_logs_no_fast_queries(run):
    # the default threshold is 100 ms; this small run has no such query
    slow = [e for e in events(run, "database_query")
            if e.get("duration_ms", 0) < 100]
    assert slow == []
