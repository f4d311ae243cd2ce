"""Bad input over HTTP: oversized, malformed and hostile request bodies and
headers. Each answer is a JSON error with the documented code, the server
keeps serving afterwards, and nothing of a rejected request was stored."""

import json
import os

import pytest

from chatd_client import assert_error, unique_name


@pytest.fixture(autouse=True)
def still_serving(client):
    """After every test here the server still answers /health."""
    yield
    assert client.health_ok(), "the server stopped answering /health"


def assert_not_registered(client, name, password):
    """A rejected register left no account behind: the name is free."""
    assert client.login(name, password).status in (400, 401)
    r = client.register(name, password)
    assert r.status == 201, r


def post_raw(client, path, data, token=None, content_type="application/json"):
    headers = [("Content-Type", content_type)]
    if token:
        headers.append(("Authorization", "Bearer " + token))
    return client.raw_request("POST", path, body=data, headers=headers)


def test_body_over_64k_is_413(client):
    name = unique_name("big")
    doc = {"username": name, "password": "password1", "pad": "x" * 65536}
    data = json.dumps(doc).encode()
    assert len(data) > 65536
    r = post_raw(client, "/api/register", data)
    assert_error(r, 413, "payload_too_large")
    assert_not_registered(client, name, "password1")


def test_body_of_exactly_64k_is_read(client):
    name = unique_name("edge")
    doc = json.dumps({"username": name, "password": "password1"}).encode()
    data = doc + b" " * (65536 - len(doc))
    assert len(data) == 65536
    r = post_raw(client, "/api/register", data)
    assert r.status == 201, r
    assert r.json["username"] == name


def test_body_of_65537_bytes_is_413(client):
    name = unique_name("edge")
    doc = json.dumps({"username": name, "password": "password1"}).encode()
    data = doc + b" " * (65537 - len(doc))
    r = post_raw(client, "/api/register", data)
    assert_error(r, 413, "payload_too_large")
    assert_not_registered(client, name, "password1")


def test_huge_declared_length_is_413(client):
    # the client claims a huge body and sends only a little of it
    head = ("POST /api/register HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Content-Type: application/json\r\n"
            "Content-Length: 1000000000\r\n\r\n").encode()
    r = client.raw(head + b'{"username":')
    assert_error(r, 413, "payload_too_large")


def test_message_route_body_over_64k(client):
    u = client.new_user("bigmsg")
    other = client.new_user("bigmsg")
    cid = client.conversation(u, other).json["conversation_id"]
    data = json.dumps({"body": "x" * 70000, "client_msg_id": "b1"}).encode()
    r = post_raw(client, "/api/conversations/%d/messages" % cid, data,
                 token=u.token)
    assert_error(r, 413, "payload_too_large")
    assert client.history(u, cid).json["messages"] == []


@pytest.mark.parametrize("data", [
    b"{",
    b"{\"username\": \"abc\", }",
    b"not json",
    b"{'username': 'abc'}",
    b"{\"username\": \"abc\" \"password\": \"x\"}",
    b"\xff\xfe{}",
])
def test_malformed_json(client, data):
    r = post_raw(client, "/api/register", data)
    assert_error(r, 400, "invalid_json")


@pytest.mark.parametrize("data", [
    b"[]",
    b"[{\"username\": \"abc\", \"password\": \"password1\"}]",
    b"42",
    b"\"username\"",
    b"null",
    b"true",
])
def test_json_that_is_not_an_object(client, data):
    r = post_raw(client, "/api/register", data)
    assert_error(r, 400, "invalid_json")
    r = post_raw(client, "/api/login", data)
    assert_error(r, 400, "invalid_json")


def test_missing_body(client):
    r = client.raw_request("POST", "/api/register", body=b"")
    assert_error(r, 400, "invalid_json")
    r = client.raw_request("POST", "/api/login", body=b"",
                           content_length=False)
    assert_error(r, 400, "invalid_json")


def test_wrong_types_and_missing_fields(client):
    name = unique_name("wt")
    cases = [
        {"username": 123, "password": "password1"},
        {"username": name, "password": 12345678},
        {"username": [name], "password": "password1"},
        {"username": name, "password": None},
        {"username": name, "password": {"p": "password1"}},
        {"username": name},
        {"password": "password1"},
        {},
    ]
    for doc in cases:
        r = client.post("/api/register", doc)
        assert_error(r, 400, "invalid_field")
    r = client.post("/api/register", {"password": "password1"})
    assert "username" in r.json["error"]["message"]
    r = client.post("/api/register", {"username": name})
    assert "password" in r.json["error"]["message"]
    assert_not_registered(client, name, "password1")


def test_unknown_fields_are_ignored(client):
    name = unique_name("extra")
    r = client.post("/api/register", {"username": name,
                                      "password": "password1",
                                      "nickname": {"a": [1, 2, 3]}})
    assert r.status == 201, r


def test_nesting_100_deep(client):
    name = unique_name("deep")
    deep = "[" * 100 + "]" * 100
    data = ('{"username": "%s", "password": "password1", "x": %s}'
            % (name, deep)).encode()
    r = post_raw(client, "/api/register", data)
    assert_error(r, 400, "invalid_json")
    deep_obj = '{"a":' * 100 + "1" + "}" * 100
    r = post_raw(client, "/api/register", deep_obj.encode())
    assert_error(r, 400, "invalid_json")
    assert_not_registered(client, name, "password1")


def test_raw_nul_byte(client):
    name = unique_name("nul")
    data = ('{"username": "%s", "password": "pass\x00word1"}' % name).encode()
    r = post_raw(client, "/api/register", data)
    assert_error(r, 400, "invalid_json")
    data = ('{"username": "%s", "password": "password1"}\x00' % name).encode()
    r = post_raw(client, "/api/register", data)
    assert_error(r, 400, "invalid_json")
    assert_not_registered(client, name, "password1")


def test_escaped_nul(client):
    name = unique_name("esc")
    data = ('{"username": "%s", "password": "pass\\u0000word1"}'
            % name).encode()
    r = post_raw(client, "/api/register", data)
    assert_error(r, 400, "invalid_json")
    data = ('{"username": "%s\\u0000x", "password": "password1"}'
            % name).encode()
    r = post_raw(client, "/api/register", data)
    assert_error(r, 400, "invalid_json")
    assert_not_registered(client, name, "password1")


def test_escaped_nul_in_message_body(client):
    u = client.new_user("nulmsg")
    other = client.new_user("nulmsg")
    cid = client.conversation(u, other).json["conversation_id"]
    data = b'{"body": "a\\u0000b", "client_msg_id": "n1"}'
    r = post_raw(client, "/api/conversations/%d/messages" % cid, data,
                 token=u.token)
    assert_error(r, 400, "invalid_json")
    assert client.history(u, cid).json["messages"] == []


def test_content_length_with_transfer_encoding(client):
    name = unique_name("smug")
    body = json.dumps({"username": name, "password": "password1"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    r = client.raw_request("POST", "/api/register", body=chunked,
                           content_length=False,
                           headers=[("Content-Type", "application/json"),
                                    ("Content-Length", str(len(chunked))),
                                    ("Transfer-Encoding", "chunked")])
    assert_error(r, 400, "bad_request")
    assert_not_registered(client, name, "password1")


def test_invalid_utf8_in_username(client):
    data = b'{"username": "ab\xc3\x28c", "password": "password1"}'
    r = post_raw(client, "/api/register", data)
    assert r.status == 400, r
    assert r.error_code() in ("invalid_json", "invalid_username"), r


def test_many_bad_requests_in_a_row(client):
    for i in range(50):
        r = post_raw(client, "/api/login", os.urandom(64))
        assert r.status == 400, r
    assert client.health_ok()
