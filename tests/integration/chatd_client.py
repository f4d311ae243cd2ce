"""A tiny HTTP client for the integration tests.

It speaks to a running chatd the way any client would: http.client for
well-formed requests, a raw socket for the malformed ones that http.client
refuses to send. Every call opens a fresh connection, so one test's broken
request never leaves a half-read socket behind for the next.
"""

import http.client
import itertools
import json
import os
import re
import socket
import time

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")

_name_counter = itertools.count(1)


def unique_name(stem="u"):
    """A username that no other test uses: stem + counter + random suffix.

    Kept within the 3..32 characters usernames allow."""
    n = next(_name_counter)
    suffix = os.urandom(4).hex()
    name = "%s%d_%s" % (stem, n, suffix)
    assert len(name) <= 32, name
    return name


class Response:
    """What a client saw: status, headers (case-insensitive), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        # headers: list of (name, value); the lookup helpers ignore case
        self.header_list = headers
        self.body = body

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.header_list:
            if k.lower() == name:
                return v
        return default

    def headers_named(self, name):
        name = name.lower()
        return [v for k, v in self.header_list if k.lower() == name]

    @property
    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def error_code(self):
        """The `code` of a JSON error body, or None when it is not one."""
        try:
            doc = self.json
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            return doc["error"].get("code")
        return None

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


class Client:
    """Requests against one chatd at host:port."""

    def __init__(self, host, port, timeout=30.0):
        self.host = host
        self.port = port
        self.timeout = timeout

    # -- plain requests -------------------------------------------------

    def request(self, method, path, body=None, token=None, headers=None,
                raw=None):
        """Sends one request. body is JSON-encoded; raw is sent as is."""
        hdrs = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        if raw is not None:
            data = raw
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if headers:
            hdrs.update(headers)
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            return Response(resp.status, resp.getheaders(), payload)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    # -- raw requests ---------------------------------------------------

    def raw(self, data, timeout=None):
        """Sends raw bytes and parses whatever response comes back.

        The server may answer and close before it has read everything (an
        oversized body); a reset while sending is then not an error, the
        answer is still read."""
        sock = socket.create_connection((self.host, self.port),
                                        timeout=timeout or self.timeout)
        try:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                if _raw_complete(b"".join(chunks)):
                    break
            return _raw_parse(b"".join(chunks))
        finally:
            sock.close()

    def raw_request(self, method, path, body=b"", headers=None,
                    content_length=True):
        """Builds a request by hand (e.g. with conflicting headers)."""
        lines = ["%s %s HTTP/1.1" % (method, path),
                 "Host: %s:%d" % (self.host, self.port),
                 "Connection: close"]
        if content_length:
            lines.append("Content-Length: %d" % len(body))
        for k, v in (headers or []):
            lines.append("%s: %s" % (k, v))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return self.raw(head + body)

    # -- the API, for brevity in tests -----------------------------------

    def register(self, username, password):
        return self.post("/api/register",
                         {"username": username, "password": password})

    def login(self, username, password):
        return self.post("/api/login",
                         {"username": username, "password": password})

    def new_user(self, stem="u", password=None):
        """Registers and logs in a fresh user; returns a User."""
        name = unique_name(stem)
        password = password or ("pw-" + os.urandom(8).hex())
        r = self.register(name, password)
        assert r.status == 201, r
        r2 = self.login(name, password)
        assert r2.status == 200, r2
        doc = r2.json
        return User(doc["user_id"], name, password, doc["token"])

    def conversation(self, user, *others, title=None):
        body = {"members": [o if isinstance(o, str) else o.username
                            for o in others]}
        if title is not None:
            body["title"] = title
        return self.post("/api/conversations", body, token=user.token)

    def send(self, user, conversation_id, body, client_msg_id=None):
        if client_msg_id is None:
            client_msg_id = "c-" + os.urandom(8).hex()
        return self.post("/api/conversations/%d/messages" % conversation_id,
                         {"body": body, "client_msg_id": client_msg_id},
                         token=user.token)

    def history(self, user, conversation_id, query=""):
        path = "/api/conversations/%d/messages" % conversation_id
        if query:
            path += "?" + query
        return self.get(path, token=user.token)

    def read(self, user, conversation_id, seq):
        return self.post("/api/conversations/%d/read" % conversation_id,
                         {"seq": seq}, token=user.token)

    def conversations(self, user):
        r = self.get("/api/conversations", token=user.token)
        assert r.status == 200, r
        return r.json["conversations"]

    def conversation_entry(self, user, conversation_id):
        for c in self.conversations(user):
            if c["conversation_id"] == conversation_id:
                return c
        return None

    def health_ok(self):
        r = self.get("/health")
        return r.status == 200 and r.json == {"status": "ok"}


class User:
    def __init__(self, user_id, username, password, token):
        self.user_id = user_id
        self.username = username
        self.password = password
        self.token = token

    def __repr__(self):
        return "<User %s #%s>" % (self.username, self.user_id)


def _split_head(data):
    idx = data.find(b"\r\n\r\n")
    if idx < 0:
        return None, None
    return data[:idx], data[idx + 4:]


def _raw_complete(data):
    head, rest = _split_head(data)
    if head is None:
        return False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(rest) >= int(v.strip())
    return False


def _raw_parse(data):
    head, rest = _split_head(data)
    if head is None:
        raise AssertionError("no HTTP response, got %r" % data[:200])
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = []
    length = None
    chunked = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
        if k.strip().lower() == "content-length":
            length = int(v.strip())
        if (k.strip().lower() == "transfer-encoding"
                and "chunked" in v.lower()):
            chunked = True
    if length is not None:
        body = rest[:length]
    elif chunked:
        body = _dechunk(rest)
    else:
        body = rest
    return Response(status, headers, body)


def _dechunk(data):
    out = b""
    while data:
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


def wait_for(predicate, timeout=10.0, interval=0.05):
    """Polls predicate until it returns a true value or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def assert_error(r, status, code):
    """The response is the JSON error {"error":{"code","message"}} with
    this status and code."""
    assert r.status == status, r
    assert r.header("Content-Type", "").startswith("application/json"), r
    doc = r.json
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert doc["error"]["code"] == code, doc
    assert isinstance(doc["error"]["message"], str), doc
    assert doc["error"]["message"], doc


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)
