"""Accounts over HTTP: register, login (with its throttle), logout, me and
the user search, as a client sees them."""

import datetime
import os
import statistics
import time

from chatd_client import RFC3339_MS, assert_error, unique_name
from conftest import ChatdProcess


def parse_time(s):
    assert RFC3339_MS.match(s), s
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


# -- register ---------------------------------------------------------------

def test_register_returns_201_with_id_and_name(client):
    name = unique_name("reg")
    r = client.register(name, "password1")
    assert r.status == 201, r
    assert r.header("Content-Type", "").startswith("application/json")
    doc = r.json
    assert set(doc) == {"user_id", "username"}
    assert isinstance(doc["user_id"], int) and not isinstance(
        doc["user_id"], bool)
    assert doc["user_id"] > 0
    assert doc["username"] == name


def test_register_gives_distinct_ids(client):
    a = client.register(unique_name("ida"), "password1").json["user_id"]
    b = client.register(unique_name("idb"), "password1").json["user_id"]
    assert a != b


def _name_of_length(n):
    base = "n" + os.urandom(16).hex()
    return base[:n]


def test_username_length_bounds(client):
    ok3 = _name_of_length(3)
    ok32 = _name_of_length(32)
    r = client.register(ok3, "password1")
    # a 3-character random name could collide with an earlier run's user in
    # the same database only if the database were reused; it is fresh
    assert r.status == 201, r
    assert r.json["username"] == ok3
    r = client.register(ok32, "password1")
    assert r.status == 201, r
    assert r.json["username"] == ok32
    assert_error(client.register(_name_of_length(2), "password1"),
                 400, "invalid_username")
    assert_error(client.register(_name_of_length(33), "password1"),
                 400, "invalid_username")
    assert_error(client.register("", "password1"), 400, "invalid_username")


def test_username_allowed_characters(client):
    name = "A-z.0_" + os.urandom(3).hex()
    r = client.register(name, "password1")
    assert r.status == 201, r
    assert r.json["username"] == name


def test_username_bad_characters(client):
    stem = os.urandom(3).hex()
    for bad in ["al ice" + stem, "al@ce" + stem, "al/ce" + stem,
                "al'ce" + stem, "al\"ce" + stem, "al+ce" + stem,
                "\u00e9l" + stem, "al\tce" + stem, "al\nce" + stem]:
        r = client.register(bad, "password1")
        assert_error(r, 400, "invalid_username")
        # nothing was created: logging in with it is a plain failure
        assert client.login(bad, "password1").status in (400, 401)


def test_username_multibyte_counts_as_invalid_not_as_length(client):
    # three letters outside A-Z: invalid however its length is counted
    assert_error(client.register("\u00e4\u00f6\u00fc", "password1"),
                 400, "invalid_username")


def test_password_length_bounds_in_bytes(client):
    assert_error(client.register(unique_name("pw"), "1234567"),
                 400, "weak_password")
    r = client.register(unique_name("pw"), "12345678")
    assert r.status == 201, r
    r = client.register(unique_name("pw"), "p" * 256)
    assert r.status == 201, r
    assert_error(client.register(unique_name("pw"), "p" * 257),
                 400, "weak_password")
    assert_error(client.register(unique_name("pw"), ""), 400, "weak_password")


def test_password_multibyte_counted_in_bytes(client):
    # 4 characters of 2 bytes each = 8 bytes: long enough
    name = unique_name("mb")
    r = client.register(name, "\u00e9\u00e9\u00e9\u00e9")
    assert r.status == 201, r
    assert client.login(name, "\u00e9\u00e9\u00e9\u00e9").status == 200
    # 3 characters of 2 bytes = 6 bytes (plus one ASCII = 7): too short
    assert_error(client.register(unique_name("mb"), "\u00e9\u00e9\u00e9x"),
                 400, "weak_password")
    # 128 two-byte characters = 256 bytes: fine; one more byte is not
    r = client.register(unique_name("mb"), "\u00e9" * 128)
    assert r.status == 201, r
    assert_error(client.register(unique_name("mb"), "\u00e9" * 128 + "x"),
                 400, "weak_password")
    # 64 four-byte characters = 256 bytes but only 64 characters
    r = client.register(unique_name("mb"), "\U0001F600" * 64)
    assert r.status == 201, r
    assert_error(client.register(unique_name("mb"), "\U0001F600" * 65),
                 400, "weak_password")


def test_username_taken_case_insensitively(client):
    name = unique_name("Taken")
    assert client.register(name, "password1").status == 201
    assert_error(client.register(name, "password2"), 409, "username_taken")
    assert_error(client.register(name.upper(), "password2"),
                 409, "username_taken")
    assert_error(client.register(name.lower(), "password2"),
                 409, "username_taken")
    # the first registration still holds, with its own password
    assert client.login(name, "password1").status == 200
    assert client.login(name, "password2").status == 401


def test_username_kept_as_registered(client):
    name = "MiXeD" + unique_name("Case")
    name = name[:32]
    password = "password1"
    r = client.register(name, password)
    assert r.status == 201, r
    assert r.json["username"] == name
    # login under another case finds the same account, spelled as registered
    r = client.login(name.lower(), password)
    assert r.status == 200, r
    assert r.json["username"] == name
    me = client.get("/api/me", token=r.json["token"])
    assert me.status == 200
    assert me.json["username"] == name


# -- login -------------------------------------------------------------------

def test_login_shape_and_cookie(client):
    name = unique_name("login")
    reg = client.register(name, "password1").json
    before = datetime.datetime.now(datetime.timezone.utc)
    r = client.login(name, "password1")
    assert r.status == 200, r
    assert r.header("Content-Type", "").startswith("application/json")
    doc = r.json
    assert set(doc) == {"token", "user_id", "username", "expires_at"}
    assert doc["user_id"] == reg["user_id"]
    assert doc["username"] == name
    token = doc["token"]
    assert isinstance(token, str)
    # 32 random bytes, encoded: at least 32 characters, cookie-safe
    assert len(token) >= 32
    assert not any(c in token for c in " ;,\"\\\t\r\n"), token
    expires = parse_time(doc["expires_at"])
    # the default session lifetime is 604800 s (7 days)
    delta = (expires - before).total_seconds()
    assert 604800 - 60 <= delta <= 604800 + 60, delta

    cookies = r.headers_named("Set-Cookie")
    assert len(cookies) == 1, cookies
    parts = [p.strip() for p in cookies[0].split(";")]
    assert parts[0] == "chat_session=" + token
    attrs = {p.split("=", 1)[0].lower(): (p.split("=", 1)[1]
                                         if "=" in p else None)
             for p in parts[1:]}
    assert attrs.get("path") == "/"
    assert attrs.get("max-age") == "604800"
    assert "httponly" in attrs
    assert attrs.get("samesite", "").lower() == "strict"


def test_each_login_gets_its_own_token(client):
    name = unique_name("twice")
    client.register(name, "password1")
    t1 = client.login(name, "password1").json["token"]
    t2 = client.login(name, "password1").json["token"]
    assert t1 != t2


def test_wrong_password_and_unknown_user_look_the_same(client):
    name = unique_name("same")
    client.register(name, "password1")
    wrong = client.login(name, "password2")
    unknown = client.login(unique_name("nobody"), "password2")
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.body == unknown.body
    assert wrong.header("Set-Cookie") is None
    assert unknown.header("Set-Cookie") is None


def test_wrong_password_and_unknown_user_take_similar_time(client):
    name = unique_name("timing")
    client.register(name, "password1")
    wrong_times, unknown_times = [], []
    for _ in range(5):
        t = time.monotonic()
        assert client.login(name, "password2").status == 401
        wrong_times.append(time.monotonic() - t)
        # a success resets the failure count, so the throttle never starts
        assert client.login(name, "password1").status == 200
        t = time.monotonic()
        assert client.login(unique_name("ghost"), "password2").status == 401
        unknown_times.append(time.monotonic() - t)
    wrong = statistics.median(wrong_times)
    unknown = statistics.median(unknown_times)
    # generous: an unknown name must cost about what a password check costs
    # (a server that skips the hash answers many times faster)
    assert unknown >= wrong * 0.4, (wrong_times, unknown_times)
    assert wrong >= unknown * 0.4, (wrong_times, unknown_times)


def test_login_missing_fields(client):
    r = client.post("/api/login", {"username": unique_name("mf")})
    assert_error(r, 400, "invalid_field")
    r = client.post("/api/login", {"password": "password1"})
    assert_error(r, 400, "invalid_field")
    r = client.post("/api/login", {"username": 5, "password": "password1"})
    assert_error(r, 400, "invalid_field")


# -- throttle ----------------------------------------------------------------

def test_throttle_after_five_failures(client):
    name = unique_name("thr")
    client.register(name, "password1")
    for i in range(5):
        assert_error(client.login(name, "wrongpass%d" % i),
                     401, "invalid_credentials")
    # locked: even the right password is refused, with a delay to wait
    r = client.login(name, "password1")
    assert_error(r, 429, "too_many_attempts")
    retry = r.header("Retry-After")
    assert retry is not None, r.header_list
    assert retry.isdigit(), retry
    assert 1 <= int(retry) <= 30, retry
    assert r.header("Set-Cookie") is None
    assert "token" not in r.json
    # a wrong password while locked is refused the same way
    r = client.login(name, "wrongpass")
    assert_error(r, 429, "too_many_attempts")
    assert r.header("Retry-After") is not None
    # the lock is the account's, whatever case the name is typed in
    assert_error(client.login(name.upper(), "password1"),
                 429, "too_many_attempts")


def test_throttle_does_not_touch_other_accounts(client):
    locked = unique_name("lk")
    other = unique_name("ok")
    client.register(locked, "password1")
    client.register(other, "password1")
    for i in range(5):
        client.login(locked, "nope%d" % i)
    assert client.login(locked, "password1").status == 429
    assert client.login(other, "password1").status == 200


def test_success_before_fifth_failure_resets_count(client):
    name = unique_name("rst")
    client.register(name, "password1")
    for i in range(4):
        assert client.login(name, "bad%d" % i).status == 401
    assert client.login(name, "password1").status == 200
    for i in range(4):
        assert client.login(name, "bad%d" % i).status == 401
    # eight failures in all, but never five in a row
    r = client.login(name, "password1")
    assert r.status == 200, r


# -- authentication, logout, me ----------------------------------------------

def test_me_with_bearer(client):
    u = client.new_user("me")
    r = client.get("/api/me", token=u.token)
    assert r.status == 200, r
    assert r.json == {"user_id": u.user_id, "username": u.username}


def test_cookie_alone_authenticates(client):
    u = client.new_user("ck")
    r = client.get("/api/me", headers={"Cookie": "chat_session=" + u.token})
    assert r.status == 200, r
    assert r.json["user_id"] == u.user_id
    # among other cookies too
    r = client.get("/api/me", headers={
        "Cookie": "theme=dark; chat_session=%s; x=1" % u.token})
    assert r.status == 200, r


def test_missing_or_bad_credentials_are_401(client):
    u = client.new_user("bad")
    cases = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "A" * 43},
        {"Authorization": "Bearer " + u.token + "x"},
        {"Authorization": "Bearer not a token"},
        {"Cookie": "chat_session=" + "B" * 43},
        {"Cookie": "other=" + u.token},
    ]
    for hdrs in cases:
        r = client.get("/api/me", headers=hdrs)
        assert_error(r, 401, "unauthorized")
        assert r.header("WWW-Authenticate", "").startswith("Bearer"), hdrs


def test_logout_ends_only_that_token(client):
    u = client.new_user("lo")
    second = client.login(u.username, u.password).json["token"]
    r = client.post("/api/logout", token=u.token)
    assert r.status == 204, r
    assert r.body == b""
    cookies = r.headers_named("Set-Cookie")
    assert len(cookies) == 1, cookies
    parts = [p.strip() for p in cookies[0].split(";")]
    assert parts[0].startswith("chat_session=")
    assert "max-age=0" in [p.lower() for p in parts]
    # the logged-out token is dead ...
    r = client.get("/api/me", token=u.token)
    assert_error(r, 401, "unauthorized")
    assert r.header("WWW-Authenticate", "").startswith("Bearer")
    assert_error(client.post("/api/logout", token=u.token),
                 401, "unauthorized")
    # ... as a cookie too
    assert client.get("/api/me", headers={
        "Cookie": "chat_session=" + u.token}).status == 401
    # ... and the other session lives on
    r = client.get("/api/me", token=second)
    assert r.status == 200, r
    assert r.json["user_id"] == u.user_id


def test_logout_by_cookie(client):
    u = client.new_user("lc")
    r = client.post("/api/logout", headers={
        "Cookie": "chat_session=" + u.token})
    assert r.status == 204, r
    assert client.get("/api/me", token=u.token).status == 401


def test_logout_without_token_is_401(client):
    r = client.post("/api/logout")
    assert_error(r, 401, "unauthorized")
    assert r.header("WWW-Authenticate", "").startswith("Bearer")


# -- users -------------------------------------------------------------------

def test_users_prefix_search_case_insensitive_and_ordered(client):
    me = client.new_user("srch")
    h = os.urandom(3).hex()
    tag = "Qx" + h
    # three spellings of one prefix, so that byte order and
    # case-insensitive order agree
    names = ["Qx" + h + "_a", "qX" + h + "_b", "qx" + h + "_c"]
    ids = []
    for n in names:
        r = client.register(n, "password1")
        assert r.status == 201, r
        ids.append(r.json["user_id"])
    for prefix in (tag, tag.lower(), tag.upper()):
        r = client.get("/api/users?prefix=" + prefix, token=me.token)
        assert r.status == 200, r
        users = r.json["users"]
        assert [u["username"] for u in users] == names, users
        assert [u["user_id"] for u in users] == ids
        for u in users:
            assert set(u) == {"user_id", "username", "online"}
            assert u["online"] is False
    r = client.get("/api/users?prefix=" + tag.upper() + "_B", token=me.token)
    assert r.status == 200, r
    assert [u["username"] for u in r.json["users"]] == [names[1]]


def test_users_at_most_fifty(client):
    me = client.new_user("many")
    tag = "Mz" + os.urandom(3).hex()
    for i in range(55):
        r = client.register("%s_%02d" % (tag, i), "password1")
        assert r.status == 201, r
    r = client.get("/api/users?prefix=" + tag, token=me.token)
    assert r.status == 200, r
    users = r.json["users"]
    assert len(users) == 50
    # the first fifty by name
    assert [u["username"] for u in users] == [
        "%s_%02d" % (tag, i) for i in range(50)]
    r = client.get("/api/users?prefix=", token=me.token)
    assert r.status == 200, r
    assert 1 <= len(r.json["users"]) <= 50
    r = client.get("/api/users", token=me.token)
    assert r.status == 200, r
    assert 1 <= len(r.json["users"]) <= 50


def test_users_no_match(client):
    me = client.new_user("none")
    r = client.get("/api/users?prefix=zzzz" + os.urandom(4).hex(),
                   token=me.token)
    assert r.status == 200
    assert r.json == {"users": []}


def test_users_needs_auth(client):
    r = client.get("/api/users?prefix=a")
    assert_error(r, 401, "unauthorized")


def test_session_ttl_flag(tmp_dir):
    # the lifetime of a session follows --session-ttl, in the body and in
    # the cookie (waiting out a real expiry would take a minute at least)
    proc = ChatdProcess(tmp_dir, args=["--session-ttl", "3600"])
    proc.start()
    c = proc.client()
    name = unique_name("ttl")
    assert c.register(name, "password1").status == 201
    before = datetime.datetime.now(datetime.timezone.utc)
    r = c.login(name, "password1")
    assert r.status == 200, r
    delta = (parse_time(r.json["expires_at"]) - before).total_seconds()
    assert 3600 - 5 <= delta <= 3600 + 5, delta
    cookie = [p.strip().lower() for p in r.header("Set-Cookie", "").split(";")]
    assert "max-age=3600" in cookie, cookie
    assert c.get("/api/me", token=r.json["token"]).status == 200
    assert proc.stop() == 0, proc.stderr_text()
