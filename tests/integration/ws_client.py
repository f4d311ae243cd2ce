"""WebSocket clients for the integration tests.

Two clients, both speaking to a running chatd the way real clients do:

- `WsSession`, on top of the `websockets` library (asyncio): for
  everything a well-behaved client does. It keeps a backlog of the frames
  it has read but not yet handed out, so a test can wait for one kind of
  frame (an ack) without losing the others (a presence that came first).
- `RawWs`, a blocking socket with a hand-written handshake and framing:
  for what the library refuses to send (invalid UTF-8, oversized or
  fragmented frames, a refused Origin, no subprotocol) and for a client
  that stops reading.

Every wait has a timeout, so a server that does not answer fails the test
instead of hanging it. The async helpers are driven from plain (sync)
test functions with `run()`, which bounds the whole coroutine as well.
"""

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import time

import websockets

from chatd_client import RFC3339_MS, is_int

SUBPROTOCOL = "chat.v1"
FRAME_TIMEOUT = 5.0       # one expected frame
QUIET_WINDOW = 0.6        # how long "nothing arrives" is watched
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

ACK_FIELDS = {"type", "client_msg_id", "message_id", "seq", "created_at"}
MESSAGE_FIELDS = {"message_id", "conversation_id", "seq", "sender_id",
                  "sender", "body", "client_msg_id", "created_at"}
ERROR_FIELDS = {"type", "code", "message", "ref"}


def run(coro, timeout=60.0):
    """Runs one coroutine to completion from a sync test, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_uri(server, path="/ws"):
    return "ws://%s:%d%s" % (server.host, server.port, path)


def new_cmid(stem="w"):
    return "%s-%s" % (stem, os.urandom(8).hex())


# -- frame checks -------------------------------------------------------------

def check_ack(a, client_msg_id=None):
    assert a.get("type") == "ack", a
    # the protocol's fields (a server may add more, e.g. conversation_id)
    assert ACK_FIELDS <= set(a), a
    assert is_int(a["message_id"]) and a["message_id"] > 0, a
    assert is_int(a["seq"]) and a["seq"] >= 1, a
    assert isinstance(a["created_at"], str), a
    assert RFC3339_MS.match(a["created_at"]), a
    if client_msg_id is not None:
        assert a["client_msg_id"] == client_msg_id, a


def check_message_frame(f, conversation_id=None, sender=None):
    assert f.get("type") == "message", f
    assert set(f) == {"type", "message"}, f
    m = f["message"]
    assert isinstance(m, dict) and set(m) == MESSAGE_FIELDS, m
    assert is_int(m["message_id"]) and is_int(m["seq"]), m
    assert RFC3339_MS.match(m["created_at"]), m
    if conversation_id is not None:
        assert m["conversation_id"] == conversation_id, m
    if sender is not None:
        assert m["sender_id"] == sender.user_id, m
        assert m["sender"] == sender.username, m
    return m


def check_error(f, code, ref=None):
    assert f.get("type") == "error", f
    assert ERROR_FIELDS <= set(f), f
    assert f["code"] == code, f
    assert isinstance(f["message"], str) and f["message"], f
    if ref is not None:
        assert f["ref"] == ref, f


def is_type(t):
    return lambda f: f.get("type") == t


# -- the library client -------------------------------------------------------

class Closed(Exception):
    """The connection closed while a frame was awaited."""

    def __init__(self, code, reason=""):
        super().__init__("connection closed with %s %r" % (code, reason))
        self.code = code
        self.reason = reason


class WsSession:
    """One WebSocket connection with a backlog of unread frames."""

    def __init__(self, conn):
        self.conn = conn
        self.backlog = []
        self.user_id = None
        self.session_id = None

    # sending

    async def send(self, obj):
        await self.conn.send(json.dumps(obj))

    async def send_text(self, text):
        await self.conn.send(text)

    async def send_bytes(self, data):
        await self.conn.send(data)

    # receiving

    async def _read(self, timeout):
        try:
            data = await asyncio.wait_for(self.conn.recv(), timeout)
        except websockets.ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else 1006
            reason = e.rcvd.reason if e.rcvd is not None else ""
            raise Closed(code, reason) from None
        assert isinstance(data, str), "binary frame from the server: %r" % (
            data[:100],)
        frame = json.loads(data)
        assert isinstance(frame, dict), frame
        assert isinstance(frame.get("type"), str), frame
        return frame

    async def recv(self, timeout=FRAME_TIMEOUT):
        """The next frame (the backlog first)."""
        if self.backlog:
            return self.backlog.pop(0)
        try:
            return await self._read(timeout)
        except asyncio.TimeoutError:
            raise AssertionError("no frame within %.1f s" % timeout) from None

    async def expect(self, pred, timeout=FRAME_TIMEOUT, what=None):
        """The first frame for which pred (a function, or a type name) is
        true; the frames before it stay in the backlog, in order."""
        if isinstance(pred, str):
            what = what or pred
            pred = is_type(pred)
        for i, f in enumerate(self.backlog):
            if pred(f):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s frame within %.1f s; got %r"
                                     % (what or "matching", timeout,
                                        self.backlog[-10:]))
            try:
                f = await self._read(left)
            except asyncio.TimeoutError:
                continue
            except Closed as e:
                raise AssertionError("closed (%s) while waiting for %s; "
                                     "frames before: %r"
                                     % (e.code, what or "a frame",
                                        self.backlog[-10:])) from None
            if pred(f):
                return f
            self.backlog.append(f)

    async def expect_quiet(self, pred=None, window=QUIET_WINDOW):
        """Asserts that no frame matching pred (any frame when None)
        arrives within window; frames that do not match are kept."""
        if isinstance(pred, str):
            pred = is_type(pred)
        pred = pred or (lambda f: True)
        for f in self.backlog:
            assert not pred(f), "unexpected frame %r" % (f,)
        deadline = time.monotonic() + window
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                f = await self._read(left)
            except asyncio.TimeoutError:
                return
            assert not pred(f), "unexpected frame %r" % (f,)
            self.backlog.append(f)

    async def collect(self, pred, count, timeout=FRAME_TIMEOUT):
        """count frames matching pred, in arrival order; other frames are
        kept. The timeout is reset by every matching frame."""
        if isinstance(pred, str):
            pred = is_type(pred)
        got = []
        while len(got) < count:
            got.append(await self.expect(
                pred, timeout,
                what="matching (%d of %d so far)" % (len(got), count)))
        return got

    async def expect_close(self, timeout=FRAME_TIMEOUT):
        """Reads (and keeps) frames until the server closes; returns the
        close code it sent (1006 when it sent none)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("still open after %.1f s; frames: %r"
                                     % (timeout, self.backlog[-10:]))
            try:
                self.backlog.append(await self._read(left))
            except asyncio.TimeoutError:
                continue
            except Closed as e:
                return e.code

    async def ping(self, timeout=FRAME_TIMEOUT):
        """A protocol ping, answered by a pong: proves the socket is open
        and served."""
        await self.send({"type": "ping"})
        f = await self.expect("pong", timeout)
        assert f == {"type": "pong"}, f

    async def auth(self, token, timeout=FRAME_TIMEOUT):
        await self.send({"type": "auth", "token": token})
        return await self._ready(timeout)

    async def _ready(self, timeout):
        f = await self.expect("ready", timeout)
        assert set(f) == {"type", "user_id", "session_id"}, f
        assert is_int(f["user_id"]) and is_int(f["session_id"]), f
        self.user_id = f["user_id"]
        self.session_id = f["session_id"]
        return f

    async def send_message(self, conversation_id, body, client_msg_id=None,
                           timeout=FRAME_TIMEOUT):
        """Sends and waits for the ack; returns it."""
        client_msg_id = client_msg_id or new_cmid()
        await self.send({"type": "send", "conversation_id": conversation_id,
                         "body": body, "client_msg_id": client_msg_id})
        f = await self.expect(
            lambda f: (f.get("type") in ("ack", "error")
                       and (f.get("client_msg_id") == client_msg_id
                            or f.get("ref") == client_msg_id)),
            timeout, what="ack of %s" % client_msg_id)
        assert f["type"] == "ack", f
        check_ack(f, client_msg_id)
        return f

    async def close(self):
        try:
            await asyncio.wait_for(self.conn.close(), 3.0)
        except (asyncio.TimeoutError, OSError):
            pass

    @property
    def close_code(self):
        return self.conn.close_code


async def connect(server, token=None, *, cookie=None, origin=None,
                  subprotocols=(SUBPROTOCOL,), extra_headers=None,
                  wait_ready=None, max_size=2 ** 24):
    """Opens a WebSocket to server's /ws. With token, sends the auth frame
    and waits for ready; with cookie (a token), sends it at the handshake
    and waits for the ready the server sends by itself."""
    headers = list(extra_headers or [])
    if cookie is not None:
        headers.append(("Cookie", "chat_session=" + cookie))
    conn = await asyncio.wait_for(websockets.connect(
        ws_uri(server), subprotocols=list(subprotocols) or None,
        origin=origin, extra_headers=headers, max_size=max_size,
        max_queue=None, compression=None, ping_interval=None,
        close_timeout=2, open_timeout=FRAME_TIMEOUT), FRAME_TIMEOUT + 1)
    s = WsSession(conn)
    if token is not None:
        await s.auth(token)
    elif cookie is not None and wait_ready is not False:
        await s._ready(FRAME_TIMEOUT)
    return s


async def drain(session, want_acks, want_messages, timeout=60.0):
    """Reads until want_acks acks and want_messages message frames came;
    returns (acks, message list) in arrival order."""
    acks, msgs = [], []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(acks) < want_acks or len(msgs) < want_messages:
        left = deadline - loop.time()
        assert left > 0, ("timed out: %d/%d acks, %d/%d messages"
                          % (len(acks), want_acks, len(msgs), want_messages))
        try:
            f = await session.recv(timeout=left)
        except Closed as e:
            raise AssertionError("closed (%s) after %d acks, %d messages"
                                 % (e.code, len(acks), len(msgs))) from None
        t = f["type"]
        if t == "ack":
            acks.append(f)
        elif t == "message":
            msgs.append(check_message_frame(f))
        elif t == "error":
            raise AssertionError("error frame under load: %r" % (f,))
    return acks, msgs


async def close_all(*sessions):
    await asyncio.gather(*(s.close() for s in sessions))


# -- the raw client -----------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class RawResponse:
    def __init__(self, status, headers):
        self.status = status
        self.headers = headers

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def __repr__(self):
        return "<RawResponse %d %r>" % (self.status, self.headers)


class RawWs:
    """A WebSocket client on a plain blocking socket.

    rcvbuf, when given, shrinks the socket's receive buffer before it
    connects, so a client that stops reading pushes back quickly."""

    def __init__(self, host, port, timeout=FRAME_TIMEOUT, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.host = host
        self.port = port
        self.buf = b""
        self.user_id = None
        self.session_id = None

    @classmethod
    def to(cls, server, **kw):
        return cls(server.host, server.port, **kw)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # handshake

    def handshake(self, protocols=(SUBPROTOCOL,), origin=None, headers=(),
                  path="/ws"):
        """Sends the upgrade request; returns the response status line and
        headers. The key's accept value is checked on a 101."""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path,
                 "Host: %s:%d" % (self.host, self.port),
                 "Upgrade: websocket",
                 "Connection: Upgrade",
                 "Sec-WebSocket-Key: " + key,
                 "Sec-WebSocket-Version: 13"]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        if origin is not None:
            lines.append("Origin: " + origin)
        for k, v in headers:
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while b"\r\n\r\n" not in self.buf:
            chunk = self._recv_some()
            if not chunk:
                raise AssertionError("no handshake response; got %r"
                                     % self.buf[:300])
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        text = head.decode("latin-1").split("\r\n")
        status = int(text[0].split(" ")[1])
        hdrs = []
        for ln in text[1:]:
            k, _, v = ln.partition(":")
            hdrs.append((k.strip(), v.strip()))
        resp = RawResponse(status, hdrs)
        if status == 101:
            want = base64.b64encode(hashlib.sha1(
                (key + WS_GUID).encode()).digest()).decode()
            assert resp.header("Sec-WebSocket-Accept") == want, resp
        return resp

    def open(self, token=None, **kw):
        """Handshake that must succeed, then (with token) auth and ready."""
        resp = self.handshake(**kw)
        assert resp.status == 101, resp
        assert resp.header("Sec-WebSocket-Protocol") == SUBPROTOCOL, resp
        if token is not None:
            self.send_json({"type": "auth", "token": token})
            f = self.expect(lambda f: f.get("type") == "ready")
            self.user_id = f["user_id"]
            self.session_id = f["session_id"]
        return self

    # frames

    @staticmethod
    def encode(opcode, payload, fin=True, mask=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        # XOR in one go through int arithmetic: fast enough for megabytes
        reps = key * (n // 4 + 1)
        masked = (int.from_bytes(payload, "big")
                  ^ int.from_bytes(reps[:n], "big")).to_bytes(n, "big") \
            if n else b""
        return head + key + masked

    def send_frame(self, opcode, payload, fin=True):
        self.sock.sendall(self.encode(opcode, payload, fin))

    def send_text(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.send_frame(OP_TEXT, data)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def _recv_some(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise
        except ConnectionResetError:
            chunk = b""
        self.buf += chunk
        return chunk

    def _need(self, n):
        while len(self.buf) < n:
            if not self._recv_some():
                return False
        return True

    def recv_frame(self):
        """(fin, opcode, payload), or None at end of stream (EOF or reset).
        Raises socket.timeout when nothing comes."""
        if not self._need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            if not self._need(4):
                return None
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            if not self._need(10):
                return None
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        assert not (b1 & 0x80), "the server masked a frame"
        if not self._need(off + n):
            return None
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_json(self):
        """The next text frame as JSON (answering pings on the way)."""
        while True:
            fr = self.recv_frame()
            if fr is None:
                raise AssertionError("connection ended while a frame was "
                                     "awaited")
            fin, op, payload = fr
            if op == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                raise Closed(close_code(payload))
            assert op == OP_TEXT and fin, (op, fin, payload[:100])
            return json.loads(payload.decode("utf-8"))

    def expect(self, pred, timeout=FRAME_TIMEOUT):
        if isinstance(pred, str):
            pred = is_type(pred)
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                f = self.recv_json()
            except socket.timeout:
                raise AssertionError("no matching frame within %.1f s"
                                     % timeout) from None
            if pred(f):
                return f

    def ping(self):
        self.send_json({"type": "ping"})
        assert self.expect("pong") == {"type": "pong"}

    def expect_close(self, timeout=FRAME_TIMEOUT):
        """Reads until the server closes. Returns (code, frames): the code
        of its close frame, or None when the stream ended (EOF, reset)
        without one; frames are the text frames read on the way."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("still open after %.1f s (%d frames "
                                     "read)" % (timeout, len(frames)))
            self.sock.settimeout(left)
            try:
                fr = self.recv_frame()
            except socket.timeout:
                continue
            if fr is None:
                return None, frames
            fin, op, payload = fr
            if op == OP_CLOSE:
                return close_code(payload), frames
            if op == OP_TEXT:
                frames.append(payload)


def close_code(payload):
    if len(payload) >= 2:
        return struct.unpack("!H", payload[:2])[0]
    return 1005
