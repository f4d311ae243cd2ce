"""WebSocket handshake and authentication: the chat.v1 subprotocol, the
Origin allow-list, the auth frame and the session cookie, close 4401 for a
bad token or a socket that never authenticates, and logout closing that
session's sockets. Also the log lines these produce."""

import asyncio
import time

import pytest
import websockets

from chatd_client import wait_for
from conftest import ChatdProcess
from ws_client import (FRAME_TIMEOUT, RawWs, SUBPROTOCOL, check_error,
                       connect, run)


# -- the handshake ------------------------------------------------------------

def test_auth_frame_gets_ready_with_ids(client, server):
    alice = client.new_user("wsa")

    async def go():
        s = await connect(server)
        assert s.conn.subprotocol == SUBPROTOCOL
        await s.send({"type": "auth", "token": alice.token})
        f = await s.expect("ready")
        assert set(f) == {"type", "user_id", "session_id"}, f
        assert f["user_id"] == alice.user_id
        assert isinstance(f["session_id"], int) and f["session_id"] > 0
        # the socket is served after ready
        await s.ping()
        await s.close()
        return f["session_id"]

    first = run(go())
    # another login is another session
    r = client.login(alice.username, alice.password)
    assert r.status == 200, r
    alice.token = r.json["token"]
    assert run(go()) != first


def test_cookie_at_handshake_gets_ready_without_auth_frame(client, server):
    bob = client.new_user("wsb")

    async def go():
        s = await connect(server, cookie=bob.token)
        # connect() waited for the ready the server sent by itself
        assert s.user_id == bob.user_id
        assert isinstance(s.session_id, int)
        await s.ping()
        await s.close()

    run(go())


def test_bad_token_closes_4401(client, server):
    carol = client.new_user("wsc")
    gone = client.login(carol.username, carol.password).json["token"]
    assert client.post("/api/logout", token=gone).status == 204
    for token in ("Z" * 43, "", "not a token at all", gone):
        async def go():
            s = await connect(server)
            await s.send({"type": "auth", "token": token})
            code = await s.expect_close()
            assert code == 4401, (token, code)
            assert not any(f.get("type") == "ready" for f in s.backlog), \
                s.backlog
        run(go())


def test_no_auth_within_5s_closes_4401(client, server):
    async def go():
        s = await connect(server)
        start = time.monotonic()
        code = await s.expect_close(timeout=10.0)
        elapsed = time.monotonic() - start
        assert code == 4401, code
        assert 4.0 <= elapsed <= 7.0, elapsed
        assert not s.backlog, s.backlog

    run(go(), timeout=20)


def test_frames_before_ready_answer_unauthorized(client, server):
    dave = client.new_user("wsd")

    async def go():
        s = await connect(server)
        # ten of them: they are not "bad frames" and do not close it
        for _ in range(10):
            await s.send({"type": "ping"})
            check_error(await s.expect("error"), "unauthorized", ref="ping")
        await s.send({"type": "send", "conversation_id": 1, "body": "x",
                      "client_msg_id": "early-1"})
        check_error(await s.expect("error"), "unauthorized")
        assert not any(f.get("type") == "pong" for f in s.backlog)
        f = await s.auth(dave.token)
        assert f["user_id"] == dave.user_id
        await s.ping()
        await s.close()

    run(go())


def test_auth_after_ready_is_already_authenticated(client, server):
    erin = client.new_user("wse")

    async def go():
        s = await connect(server, erin.token)
        await s.send({"type": "auth", "token": erin.token})
        check_error(await s.expect("error"), "already_authenticated",
                    ref="auth")
        # even a bad token now does not close the socket
        await s.send({"type": "auth", "token": "Z" * 43})
        check_error(await s.expect("error"), "already_authenticated")
        await s.ping()
        await s.close()

    run(go())


def test_handshake_needs_the_chat_v1_subprotocol(server):
    # Without any subprotocol: an HTTP 400 and no socket.
    ws = RawWs.to(server)
    try:
        resp = ws.handshake(protocols=())
        assert resp.status == 400, resp
        assert resp.header("Sec-WebSocket-Accept") is None, resp
    finally:
        ws.close()
    # Offering only others: libwebsockets 4.1 refuses the upgrade before any
    # code of ours runs, by closing the connection without a response (it
    # gives no hook to answer 400 there). Either way no socket opens.
    for protocols in (("chat.v2",), ("chat",), ("CHAT.V1x",)):
        ws = RawWs.to(server)
        try:
            try:
                resp = ws.handshake(protocols=protocols)
            except AssertionError as exc:
                assert "no handshake response" in str(exc), exc
            else:
                assert resp.status == 400, (protocols, resp)
                assert resp.header("Sec-WebSocket-Accept") is None, resp
        finally:
            ws.close()
    # offered among others, chat.v1 is chosen
    ws = RawWs.to(server)
    try:
        resp = ws.handshake(protocols=("chat.v0", SUBPROTOCOL, "other"))
        assert resp.status == 101, resp
        assert resp.header("Sec-WebSocket-Protocol") == SUBPROTOCOL, resp
    finally:
        ws.close()


def test_library_without_subprotocol_is_refused(server):
    async def go():
        # (the status itself is checked with the raw client above; the
        # library may also refuse the response's form)
        with pytest.raises((websockets.InvalidHandshake, ValueError)):
            await connect(server, subprotocols=())

    run(go())


def refused_origins(port):
    return ["http://evil.example",
            "http://127.0.0.1:%d" % (port + 1),
            "https://127.0.0.1:%d" % port,
            "http://127.0.0.1:%d.evil.example" % port,
            "http://localhost:%d.evil.example" % port,
            "http://127.0.0.1",
            "null"]


def test_refused_origin_gets_403_and_no_socket(client, server):
    user = client.new_user("wso")
    for origin in refused_origins(server.port):
        ws = RawWs.to(server)
        try:
            resp = ws.handshake(origin=origin)
            assert resp.status == 403, (origin, resp)
            assert resp.header("Sec-WebSocket-Accept") is None, resp
            assert (resp.header("Upgrade") or "").lower() != "websocket", resp
        finally:
            ws.close()

    async def go():
        with pytest.raises((websockets.InvalidHandshake, ValueError)):
            await connect(server, user.token, origin="http://evil.example")

    run(go())


def test_default_origins_and_no_origin_are_allowed(client, server):
    user = client.new_user("wsp")
    for origin in ("http://127.0.0.1:%d" % server.port,
                   "http://localhost:%d" % server.port, None):
        ws = RawWs.to(server)
        try:
            ws.open(user.token, origin=origin)
            assert ws.user_id == user.user_id
            ws.ping()
        finally:
            ws.close()


def test_allowed_origin_flag_replaces_the_default(tmp_dir):
    proc = ChatdProcess(tmp_dir, args=["--allowed-origin",
                                       "https://chat.example.com"])
    proc.start()
    user = proc.client().new_user("wsq")
    ws = RawWs.to(proc)
    try:
        ws.open(user.token, origin="https://chat.example.com")
        ws.ping()
    finally:
        ws.close()
    for origin in ("http://127.0.0.1:%d" % proc.port,
                   "http://localhost:%d" % proc.port,
                   "https://chat.example.com:443",
                   "https://chat.example.co"):
        ws = RawWs.to(proc)
        try:
            assert ws.handshake(origin=origin).status == 403, origin
        finally:
            ws.close()
    assert proc.stop() == 0


# -- logout -------------------------------------------------------------------

def test_logout_closes_that_sessions_sockets_with_1008(client, server):
    frank = client.new_user("wsf")
    other = client.login(frank.username, frank.password).json["token"]

    async def go():
        a1 = await connect(server, frank.token)
        a2 = await connect(server, cookie=frank.token)
        b = await connect(server, other)
        assert a1.session_id == a2.session_id != b.session_id
        r = await asyncio.to_thread(client.post, "/api/logout",
                                    token=frank.token)
        assert r.status == 204, r
        assert await a1.expect_close() == 1008
        assert await a2.expect_close() == 1008
        # the other session goes on
        await b.ping()
        # the ended token cannot open a socket any more
        c = await connect(server)
        await c.send({"type": "auth", "token": frank.token})
        assert await c.expect_close() == 4401
        await b.close()

    run(go())


# -- logs ---------------------------------------------------------------------

def _code_in(e, code):
    return any(v == code for k, v in e.items() if "code" in k)


def test_logs_connect_close_and_security_events(client, server):
    user = client.new_user("wsl")

    async def go():
        s = await connect(server, user.token)
        await s.close()
        bad = await connect(server)
        await bad.send({"type": "auth", "token": "Y" * 43})
        assert await bad.expect_close() == 4401

    run(go())
    ws = RawWs.to(server)
    try:
        assert ws.handshake(origin="http://refused.example").status == 403
    finally:
        ws.close()

    def ev(kind, pred=lambda e: True):
        return server.wait_event(
            lambda e: e.get("event_type") == kind and pred(e), FRAME_TIMEOUT)

    # a connection may be logged before it authenticates: no user to match
    connected = ev("ws_connect")
    assert connected is not None
    assert connected["level"] == "info"
    closed = ev("ws_close", lambda e: e.get("user_id") == user.user_id)
    assert closed is not None
    assert closed["level"] == "info"
    # the client closed normally: 1000 (or 1005, no code in its frame)
    assert _code_in(closed, 1000) or _code_in(closed, 1005), closed
    assert ev("security_event", lambda e: e.get("kind") == "bad_token")
    assert ev("security_event", lambda e: e.get("kind") == "origin_refused")
    # no token ever reaches the log
    assert wait_for(lambda: user.token.encode() not in server.stdout_bytes(),
                    timeout=0.1)
