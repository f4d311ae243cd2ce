"""Messages, reads and typing over the WebSocket: send and its ack after
commit, the same client_msg_id over a new connection, the send errors,
fan-out of `message` to every other session of every member, `read`
frames, `typing` with its 2 s throttle, ping, and error frames that leave
the connection open."""

import asyncio
import time

from ws_client import (check_ack, check_error, check_message_frame, connect,
                       new_cmid, run)


def trio(client):
    """alice and bob share a direct conversation; carol is a stranger."""
    alice = client.new_user("mal")
    bob = client.new_user("mbo")
    carol = client.new_user("mca")
    r = client.conversation(alice, bob)
    assert r.status == 201, r
    return alice, bob, carol, r.json["conversation_id"]


def history(client, user, cid):
    r = client.history(user, cid, "limit=200")
    assert r.status == 200, r
    return r.json["messages"]


async def http(fn, *args, **kw):
    """A blocking HTTP call from a coroutine, without stopping the loop
    that reads the sockets."""
    return await asyncio.to_thread(fn, *args, **kw)


# -- send and ack -------------------------------------------------------------

def test_send_is_acked_after_commit_and_history_has_it(client, server):
    alice, bob, _, cid = trio(client)

    async def go():
        s = await connect(server, alice.token)
        cmid = new_cmid("ack")
        await s.send({"type": "send", "conversation_id": cid,
                      "body": "h\u00e9llo \U0001F600", "client_msg_id": cmid})
        ack = await s.expect("ack")
        check_ack(ack, cmid)
        assert ack["seq"] == 1
        # right after the ack, a history read (by the other member) has it
        msgs = await http(history, client, bob, cid)
        assert len(msgs) == 1, msgs
        m = msgs[0]
        assert (m["message_id"], m["seq"], m["created_at"],
                m["client_msg_id"]) == (ack["message_id"], ack["seq"],
                                        ack["created_at"], cmid)
        assert m["body"] == "h\u00e9llo \U0001F600"
        assert m["sender_id"] == alice.user_id
        assert m["sender"] == alice.username
        ack2 = await s.send_message(cid, "second")
        assert ack2["seq"] == 2
        assert ack2["message_id"] != ack["message_id"]
        # the sending socket gets the ack, not a message frame
        await s.expect_quiet("message")
        await s.close()

    run(go())
    # sending moved the sender's read marker
    assert client.conversation_entry(alice, cid)["unread"] == 0
    assert client.conversation_entry(bob, cid)["unread"] == 2


def test_same_client_msg_id_over_a_new_connection_same_ids(client, server):
    alice, bob, _, cid = trio(client)
    other = client.conversation(alice, client.new_user("mot")).json[
        "conversation_id"]
    cmid = new_cmid("idem")

    async def go():
        s1 = await connect(server, alice.token)
        first = await s1.send_message(cid, "only once", cmid)
        await s1.close()
        # a new connection (as after a reconnect) retries it: another body,
        # even another conversation, gets the ids first stored
        s2 = await connect(server, alice.token)
        again = await s2.send_message(cid, "only once", cmid)
        assert again == first
        moved = await s2.send_message(other, "changed body", cmid)
        assert moved == first
        await s2.close()
        return first

    first = run(go())
    msgs = history(client, bob, cid)
    assert [m["client_msg_id"] for m in msgs] == [cmid]
    assert msgs[0]["body"] == "only once"
    assert msgs[0]["message_id"] == first["message_id"]
    assert history(client, alice, other) == []
    # and over HTTP the same client_msg_id is the same message
    r = client.send(alice, cid, "http retry", cmid)
    assert r.status == 200, r
    assert r.json["message_id"] == first["message_id"]


def test_client_msg_id_first_used_over_http(client, server):
    alice, bob, _, cid = trio(client)
    cmid = new_cmid("fromhttp")
    r = client.send(alice, cid, "posted", cmid)
    assert r.status == 201, r
    m = r.json

    async def go():
        s = await connect(server, alice.token)
        ack = await s.send_message(cid, "posted", cmid)
        assert (ack["message_id"], ack["seq"], ack["created_at"]) == (
            m["message_id"], m["seq"], m["created_at"])
        await s.close()

    run(go())
    assert len(history(client, bob, cid)) == 1


def test_send_errors_store_nothing_and_keep_the_socket(client, server):
    alice, bob, carol, cid = trio(client)
    foreign = client.conversation(bob, carol).json["conversation_id"]
    exact = "\u00e9" * 8192          # 16,384 bytes
    cases = [
        # (frame fields, code, ref is the client_msg_id)
        ({"conversation_id": cid, "body": ""}, "empty_message", True),
        ({"conversation_id": cid, "body": exact + "a"}, "message_too_large",
         True),
        ({"conversation_id": cid, "body": "x" * 20000}, "message_too_large",
         True),
        ({"conversation_id": cid}, "invalid_field", True),
        ({"conversation_id": cid, "body": 5}, "invalid_field", True),
        ({"conversation_id": "one", "body": "x"}, "invalid_field", True),
        ({"body": "x"}, "invalid_field", True),
        ({"conversation_id": 987654321, "body": "x"}, "not_found", True),
        ({"conversation_id": foreign, "body": "x"}, "not_a_member", True),
        ({"conversation_id": cid, "body": "x", "client_msg_id": ""},
         "invalid_client_msg_id", False),
        ({"conversation_id": cid, "body": "x", "client_msg_id": "k" * 65},
         "invalid_client_msg_id", False),
        ({"conversation_id": cid, "body": "x", "client_msg_id": 17},
         "invalid_client_msg_id", False),
        ({"conversation_id": cid, "body": "x"}, "invalid_client_msg_id",
         False),
    ]

    async def go():
        s = await connect(server, alice.token)
        for fields, code, has_ref in cases:
            frame = {"type": "send"}
            frame.update(fields)
            if has_ref:
                frame["client_msg_id"] = new_cmid("err")
            await s.send(frame)
            f = await s.expect(lambda f: f.get("type") in ("error", "ack"))
            check_error(f, code, ref=frame["client_msg_id"] if has_ref
                        else None)
        # the socket is still served, and the limit is in bytes: 16,384
        # bytes of two-byte characters are accepted
        await s.ping()
        ack = await s.send_message(cid, exact)
        assert ack["seq"] == 1
        await s.close()

    run(go())
    msgs = history(client, bob, cid)
    assert [m["body"] for m in msgs] == [exact]
    assert history(client, bob, foreign) == []


# -- fan-out ------------------------------------------------------------------

def test_message_fans_out_to_other_sessions_and_members(client, server):
    alice, bob, carol, cid = trio(client)
    alice2 = client.login(alice.username, alice.password).json["token"]

    async def go():
        c1 = await connect(server, carol.token)
        b1 = await connect(server, bob.token)
        b2 = await connect(server, cookie=bob.token)
        a1 = await connect(server, alice.token)
        a2 = await connect(server, alice.token)       # same session
        a3 = await connect(server, alice2)            # another session
        ack = await a1.send_message(cid, "to everyone but me")
        msgs = await http(history, client, alice, cid)
        assert len(msgs) == 1
        for s in (a2, a3, b1, b2):
            m = check_message_frame(await s.expect("message"), cid, alice)
            assert m == msgs[0]
            assert m["message_id"] == ack["message_id"]
            assert m["seq"] == ack["seq"]
        await a1.expect_quiet("message")
        # carol shares nothing with alice or bob: she gets nothing at all
        await c1.expect_quiet()
        for s in (a2, a3, b1, b2):
            await s.expect_quiet("message", window=0.1)
        await asyncio.gather(*(s.close() for s in (a1, a2, a3, b1, b2, c1)))

    run(go())


def test_http_send_fans_out_to_every_session(client, server):
    alice, bob, carol, cid = trio(client)

    async def go():
        a1 = await connect(server, alice.token)
        b1 = await connect(server, bob.token)
        c1 = await connect(server, carol.token)
        r = await http(client.send, alice, cid, "over http")
        assert r.status == 201, r
        for s in (a1, b1):
            m = check_message_frame(await s.expect("message"), cid, alice)
            assert m == r.json
        await c1.expect_quiet()
        # the same client_msg_id again stores nothing and sends nothing
        r2 = await http(client.send, alice, cid, "over http",
                        r.json["client_msg_id"])
        assert r2.status == 200, r2
        await b1.expect_quiet("message")
        await asyncio.gather(a1.close(), b1.close(), c1.close())

    run(go())


def test_group_fan_out_reaches_every_member(client, server):
    users = [client.new_user("mg") for _ in range(5)]
    r = client.conversation(users[0], *users[1:], title="five")
    assert r.status == 201, r
    cid = r.json["conversation_id"]

    async def go():
        socks = [await connect(server, u.token) for u in users]
        acks = []
        for i, (u, s) in enumerate(zip(users, socks)):
            acks.append(await s.send_message(cid, "from %d" % i))
        assert [a["seq"] for a in acks] == [1, 2, 3, 4, 5]
        for i, s in enumerate(socks):
            got = await s.collect("message", 4)
            seqs = [check_message_frame(f, cid)["seq"] for f in got]
            assert seqs == [n for n in range(1, 6) if n != i + 1], seqs
        await asyncio.gather(*(s.close() for s in socks))

    run(go())


# -- read ---------------------------------------------------------------------

def read_frame(cid, user, seq):
    return {"type": "read", "conversation_id": cid, "user_id": user.user_id,
            "seq": seq}


def test_read_moves_forward_only_and_tells_the_others(client, server):
    alice, bob, carol, cid = trio(client)
    for i in range(3):
        assert client.send(alice, cid, "m%d" % i).status == 201

    async def go():
        a1 = await connect(server, alice.token)
        b1 = await connect(server, bob.token)
        b2 = await connect(server, bob.token)
        c1 = await connect(server, carol.token)
        await b1.send({"type": "read", "conversation_id": cid, "seq": 2})
        for s in (a1, b2):
            assert await s.expect("read") == read_frame(cid, bob, 2)
        # the reading socket gets nothing back on success
        await b1.expect_quiet("read")
        await c1.expect_quiet()
        e = await http(client.conversation_entry, bob, cid)
        assert e["unread"] == 1

        # a lower seq, or the same one, does not move it: nothing is sent
        await b1.send({"type": "read", "conversation_id": cid, "seq": 1})
        await b1.send({"type": "read", "conversation_id": cid, "seq": 2})
        await b1.ping()
        for s in (a1, b2, b1):
            await s.expect_quiet("read")
        e = await http(client.conversation_entry, bob, cid)
        assert e["unread"] == 1

        # beyond the last seq: clamped to it
        await b1.send({"type": "read", "conversation_id": cid, "seq": 99})
        for s in (a1, b2):
            assert await s.expect("read") == read_frame(cid, bob, 3)
        e = await http(client.conversation_entry, bob, cid)
        assert e["unread"] == 0
        # a later message is unread again: the marker was not set to 99
        r = await http(client.send, alice, cid, "later")
        assert r.status == 201
        for s in (b1, b2):
            await s.expect("message")
        e = await http(client.conversation_entry, bob, cid)
        assert e["unread"] == 1
        await asyncio.gather(*(s.close() for s in (a1, b1, b2, c1)))

    run(go())


def test_read_over_http_sends_read_frames(client, server):
    alice, bob, _, cid = trio(client)
    assert client.send(alice, cid, "one").status == 201

    async def go():
        a1 = await connect(server, alice.token)
        b1 = await connect(server, bob.token)
        r = await http(client.read, bob, cid, 1)
        assert r.status == 204, r
        for s in (a1, b1):
            assert await s.expect("read") == read_frame(cid, bob, 1)
        await asyncio.gather(a1.close(), b1.close())

    run(go())


def test_read_errors(client, server):
    alice, bob, carol, cid = trio(client)
    assert client.send(alice, cid, "one").status == 201

    async def go():
        b1 = await connect(server, bob.token)
        a1 = await connect(server, alice.token)
        c1 = await connect(server, carol.token)
        for seq in (-1, "2", 1.5, None):
            await b1.send({"type": "read", "conversation_id": cid,
                           "seq": seq})
            check_error(await b1.expect("error"), "invalid_seq", ref="read")
        await b1.send({"type": "read", "conversation_id": cid})
        check_error(await b1.expect("error"), "invalid_seq", ref="read")
        await c1.send({"type": "read", "conversation_id": cid, "seq": 1})
        check_error(await c1.expect("error"), "not_a_member", ref="read")
        await c1.send({"type": "read", "conversation_id": 987654321,
                       "seq": 1})
        check_error(await c1.expect("error"), "not_found", ref="read")
        await a1.expect_quiet("read")
        await b1.ping()
        await c1.ping()
        await asyncio.gather(a1.close(), b1.close(), c1.close())

    run(go())
    assert client.conversation_entry(bob, cid)["unread"] == 1


# -- typing -------------------------------------------------------------------

def test_typing_reaches_the_other_members_once_per_2s(client, server):
    alice, bob, carol, _ = trio(client)
    dave = client.new_user("mda")
    r = client.conversation(alice, bob, dave)
    assert r.status == 201, r
    cid = r.json["conversation_id"]
    typing = {"type": "typing", "conversation_id": cid,
              "user_id": alice.user_id}

    async def go():
        a1 = await connect(server, alice.token)
        a2 = await connect(server, alice.token)
        b1 = await connect(server, bob.token)
        d1 = await connect(server, dave.token)
        c1 = await connect(server, carol.token)
        start = time.monotonic()
        await a1.send({"type": "typing", "conversation_id": cid})
        assert await b1.expect("typing") == typing
        assert await d1.expect("typing") == typing
        # not the typer's own sessions, not a stranger
        await a1.expect_quiet("typing", window=0.3)
        await a2.expect_quiet("typing", window=0.1)
        await c1.expect_quiet(window=0.1)
        # a second one within 2 s is dropped silently
        await a2.send({"type": "typing", "conversation_id": cid})
        await a1.send({"type": "typing", "conversation_id": cid})
        await b1.expect_quiet("typing", window=0.4)
        await d1.expect_quiet("typing", window=0.1)
        await a1.expect_quiet("error", window=0.1)
        assert time.monotonic() - start < 2.0, "too slow to test the throttle"
        # after 2 s it goes through again
        await asyncio.sleep(max(0.0, start + 2.2 - time.monotonic()))
        await a1.send({"type": "typing", "conversation_id": cid})
        assert await b1.expect("typing") == typing
        # typing is not stored
        msgs = await http(history, client, bob, cid)
        assert msgs == []
        await asyncio.gather(*(s.close() for s in (a1, a2, b1, d1, c1)))

    run(go())


def test_typing_by_a_non_member_is_an_error(client, server):
    alice, bob, carol, cid = trio(client)

    async def go():
        a1 = await connect(server, alice.token)
        c1 = await connect(server, carol.token)
        await c1.send({"type": "typing", "conversation_id": cid})
        check_error(await c1.expect("error"), "not_a_member", ref="typing")
        await c1.send({"type": "typing", "conversation_id": 987654321})
        check_error(await c1.expect("error"), "not_found", ref="typing")
        await a1.expect_quiet("typing")
        await c1.ping()
        await asyncio.gather(a1.close(), c1.close())

    run(go())


# -- ping and error frames ----------------------------------------------------

def test_ping_gets_pong(client, server):
    user = client.new_user("mpi")

    async def go():
        s = await connect(server, user.token)
        for _ in range(3):
            await s.send({"type": "ping"})
            assert await s.recv() == {"type": "pong"}
        await s.close()

    run(go())


def test_error_frames_keep_the_connection_open(client, server):
    user = client.new_user("mer")
    cases = [
        ("{", "invalid_json"),
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ("42", "invalid_json"),
        ('"ping"', "invalid_json"),
        ("{}", "unknown_type"),
        ('{"type": "nope"}', "unknown_type"),
        ('{"type": 5}', "unknown_type"),
    ]

    async def go():
        s = await connect(server, user.token)
        for text, code in cases:
            await s.send_text(text)
            check_error(await s.expect("error"), code)
            await s.ping()
        await s.close()

    run(go())


def test_binary_frame_is_invalid_json(client, server):
    user = client.new_user("mbi")

    async def go():
        s = await connect(server, user.token)
        await s.send_bytes(b'{"type":"ping"}')
        check_error(await s.expect("error"), "invalid_json")
        assert not any(f.get("type") == "pong" for f in s.backlog)
        await s.ping()
        await s.close()

    run(go())
