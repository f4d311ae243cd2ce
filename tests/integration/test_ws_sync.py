"""sync after a reconnect: exactly the missed messages of the named
conversations, in seq order, then `synced`; more than 500 missed sends
the newest 500 and names the conversation in `truncated`."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ws_client import (check_error, check_message_frame, connect, is_type,
                       run)


def all_history(client, user, cid):
    """Every message of a conversation, paged over HTTP."""
    out, after = [], 0
    while True:
        r = client.history(user, cid, "limit=200&after_seq=%d" % after)
        assert r.status == 200, r
        out += r.json["messages"]
        if not r.json["has_more"]:
            return out
        after = out[-1]["seq"]


def send_many(client, user, cid, n, stem="bulk"):
    """n messages over HTTP, a few at a time; returns them."""
    def one(i):
        r = client.send(user, cid, "%s %d" % (stem, i))
        assert r.status == 201, r
        return r.json
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(n)))


async def sync(session, since, count=None, timeout=10.0):
    """Sends sync and reads up to `synced`; returns (message frames,
    synced frame). Frames that are not about the sync stay in the backlog."""
    await session.send({"type": "sync", "since": {str(k): v for k, v
                                                  in since.items()}})
    msgs, errors = [], []
    while True:
        f = await session.expect(
            lambda f: f.get("type") in ("message", "synced")
            or (f.get("type") == "error" and f.get("ref") == "sync"),
            timeout)
        if f["type"] == "synced":
            # the errors are left for the caller to look at
            session.backlog += errors
            return msgs, f
        if f["type"] == "error":
            errors.append(f)
            continue
        msgs.append(check_message_frame(f))


def test_sync_after_reconnect_returns_exactly_the_missed(client, server):
    alice = client.new_user("sal")
    bob = client.new_user("sbo")
    carol = client.new_user("sca")
    cid = client.conversation(alice, bob).json["conversation_id"]
    group = client.conversation(alice, bob, carol).json["conversation_id"]
    unnamed = client.conversation(carol, bob).json["conversation_id"]

    async def go():
        b1 = await connect(server, bob.token)
        a1 = await connect(server, alice.token)
        for i in range(3):
            await a1.send_message(cid, "before %d" % i)
        await a1.send_message(group, "group before")
        seen = await b1.collect("message", 4)
        last = {cid: 0, group: 0}
        for f in seen:
            m = f["message"]
            last[m["conversation_id"]] = max(last[m["conversation_id"]],
                                             m["seq"])
        assert last == {cid: 3, group: 1}
        await b1.close()

        # while bob is away: five in one conversation (socket and HTTP),
        # none in the group, one in a conversation bob will not name
        for i in range(3):
            await a1.send_message(cid, "missed %d" % i)
        for i in range(2):
            r = await asyncio.to_thread(client.send, alice, cid,
                                        "missed http %d" % i)
            assert r.status == 201, r
        r = await asyncio.to_thread(client.send, carol, unnamed, "elsewhere")
        assert r.status == 201

        b2 = await connect(server, bob.token)
        msgs, synced = await sync(b2, last)
        assert synced == {"type": "synced", "truncated": []}, synced
        assert [m["seq"] for m in msgs] == [4, 5, 6, 7, 8]
        assert all(m["conversation_id"] == cid for m in msgs), msgs
        hist = await asyncio.to_thread(all_history, client, bob, cid)
        assert msgs == hist[3:]
        # nothing after synced either
        await b2.expect_quiet("message")

        # up to date: an empty sync
        msgs, synced = await sync(b2, {cid: 8, group: 1})
        assert msgs == [] and synced["truncated"] == []
        await asyncio.gather(a1.close(), b2.close())

    run(go())


def test_sync_of_several_conversations_keeps_seq_order_in_each(client,
                                                                server):
    alice = client.new_user("sml")
    bob = client.new_user("smb")
    carol = client.new_user("smc")
    c1 = client.conversation(alice, bob).json["conversation_id"]
    c2 = client.conversation(alice, bob, carol).json["conversation_id"]
    send_many(client, alice, c1, 6, "one")
    send_many(client, carol, c2, 4, "two")

    async def go():
        b = await connect(server, bob.token)
        msgs, synced = await sync(b, {c1: 2, c2: 0})
        assert synced["truncated"] == []
        per = {c1: [], c2: []}
        for m in msgs:
            per[m["conversation_id"]].append(m["seq"])
        assert per == {c1: [3, 4, 5, 6], c2: [1, 2, 3, 4]}
        await b.close()

    run(go())


def test_sync_errors_skip_the_conversation(client, server):
    alice = client.new_user("sel")
    bob = client.new_user("seb")
    carol = client.new_user("sec")
    cid = client.conversation(alice, bob).json["conversation_id"]
    foreign = client.conversation(alice, carol).json["conversation_id"]
    send_many(client, alice, cid, 2)
    send_many(client, alice, foreign, 2)

    async def go():
        b = await connect(server, bob.token)
        msgs, synced = await sync(b, {foreign: 0, 987654321: 0, cid: 0})
        assert [(m["conversation_id"], m["seq"]) for m in msgs] == [
            (cid, 1), (cid, 2)]
        assert synced["truncated"] == []
        errors = [f for f in b.backlog if f.get("type") == "error"]
        codes = sorted(f["code"] for f in errors)
        assert codes == ["not_a_member", "not_found"], errors
        for f in errors:
            check_error(f, f["code"], ref="sync")
        b.backlog.clear()

        # a malformed since is an error, and the socket stays
        for since in ("x", [1], 5, None):
            await b.send({"type": "sync", "since": since})
            check_error(await b.expect("error"), "invalid_field", ref="sync")
        await b.send({"type": "sync"})
        check_error(await b.expect("error"), "invalid_field", ref="sync")
        # a seq that is not a non-negative integer
        for seq in (-1, "1", 1.5):
            await b.send({"type": "sync", "since": {str(cid): seq}})
            f = await b.expect("error")
            assert f["code"] in ("invalid_field", "invalid_seq"), f
            assert f["ref"] == "sync", f
            # (a synced may follow; no message may)
            await b.ping()
            assert not any(x.get("type") == "message" for x in b.backlog)
            b.backlog.clear()
        await b.ping()
        await b.close()

    run(go())


def test_sync_names_at_most_1000_conversations(client, server):
    bob = client.new_user("stm")

    async def go():
        b = await connect(server, bob.token)
        since = {str(900000 + i): 0 for i in range(1001)}
        await b.send({"type": "sync", "since": since})
        check_error(await b.expect("error"), "too_many_conversations",
                    ref="sync")
        # 1000 is allowed: each unknown id is its own not_found
        since = {str(900000 + i): 0 for i in range(1000)}
        await b.send({"type": "sync", "since": since})
        synced = await b.expect("synced", timeout=15.0)
        assert synced["truncated"] == []
        errs = [f for f in b.backlog if f.get("type") == "error"]
        assert len(errs) == 1000 and all(f["code"] == "not_found"
                                         for f in errs), errs[:3]
        await b.ping()
        await b.close()

    run(go())


def test_sync_truncates_above_500(client, server):
    alice = client.new_user("str")
    bob = client.new_user("stb")
    cid = client.conversation(alice, bob).json["conversation_id"]
    send_many(client, alice, cid, 500)

    async def go():
        b = await connect(server, bob.token)
        # exactly 500 missed: all of them, not truncated
        msgs, synced = await sync(b, {cid: 0}, timeout=15.0)
        assert [m["seq"] for m in msgs] == list(range(1, 501))
        assert synced == {"type": "synced", "truncated": []}
        await b.close()

        r = await asyncio.to_thread(client.send, alice, cid, "the 501st")
        assert r.status == 201, r
        b = await connect(server, bob.token)
        # 501 missed: the newest 500, and the conversation named
        msgs, synced = await sync(b, {cid: 0}, timeout=15.0)
        assert [m["seq"] for m in msgs] == list(range(2, 502))
        assert synced == {"type": "synced", "truncated": [cid]}
        assert msgs[-1]["body"] == "the 501st"
        # 500 missed again once one is known
        msgs, synced = await sync(b, {cid: 1}, timeout=15.0)
        assert [m["seq"] for m in msgs] == list(range(2, 502))
        assert synced["truncated"] == []
        await b.close()

    run(go(), timeout=120)
    # the client pages the rest over HTTP
    assert [m["seq"] for m in client.history(bob, cid, "before_seq=2")
            .json["messages"]] == [1]


def test_sync_frames_come_in_order_with_synced_last(client, server):
    alice = client.new_user("sol")
    bob = client.new_user("sob")
    cid = client.conversation(alice, bob).json["conversation_id"]
    send_many(client, alice, cid, 30)

    async def go():
        b = await connect(server, bob.token)
        await b.send({"type": "sync", "since": {str(cid): 10}})
        frames = []
        while True:
            f = await b.recv()
            if f["type"] == "presence":
                continue
            frames.append(f)
            if f["type"] == "synced":
                break
        assert [f["type"] for f in frames] == ["message"] * 20 + ["synced"]
        assert [f["message"]["seq"] for f in frames[:-1]] == list(
            range(11, 31))
        assert all(is_type("message")(f) for f in frames[:-1])
        await b.close()

    run(go())


def test_sync_larger_than_one_chunk_arrives_whole_and_in_order(client,
                                                               server):
    """A sync of more than a MiB of messages is sent in chunks; every
    message arrives once, in seq order per conversation, then one synced."""
    alice = client.new_user("sbig")
    others = [client.new_user("sbo%d" % i) for i in range(3)]
    body = "x" * 1000
    cids = []
    for o in others:
        cid = client.conversation(alice, o).json["conversation_id"]
        cids.append(cid)

        def one(i, cid=cid, o=o):
            r = client.send(o, cid, "%s %d" % (body, i))
            assert r.status == 201, r
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, range(450)))

    async def go():
        s = await connect(server, alice.token)
        msgs, done = await sync(s, {cid: 0 for cid in cids}, timeout=30.0)
        await s.close()
        return msgs, done

    msgs, done = run(go(), timeout=120)
    assert done["truncated"] == []
    assert len(msgs) == 3 * 450
    for cid in cids:
        seqs = [m["seq"] for m in msgs if m["conversation_id"] == cid]
        assert seqs == list(range(1, 451)), cid


def test_live_messages_during_a_big_sync_do_not_close_the_socket(client,
                                                                 server):
    """Live frames that arrive while a large sync is being sent are queued
    behind it: the socket is not taken for a slow reader, and the client
    ends up with every message (sync and live may overlap; seqs dedupe)."""
    alice = client.new_user("slive")
    bob = client.new_user("slbob")
    cid = client.conversation(alice, bob).json["conversation_id"]
    body = "y" * 4000

    def one(i):
        r = client.send(bob, cid, "%s %d" % (body, i))
        assert r.status == 201, r
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(480)))     # about 2 MB: several chunks

    async def go():
        s = await connect(server, alice.token)
        loop = asyncio.get_running_loop()
        live = loop.run_in_executor(None, lambda: [one(480 + i)
                                                   for i in range(40)])
        msgs, done = await sync(s, {cid: 0}, timeout=30.0)
        await live
        seqs = {m["seq"] for m in msgs}
        # what was committed after the sync read it comes live
        while len(seqs) < 520:
            f = await s.expect(is_type("message"), timeout=10.0)
            seqs.add(check_message_frame(f)["seq"])
        await s.ping()                      # still open and answering
        await s.close()
        return seqs, done

    seqs, done = run(go(), timeout=120)
    assert seqs == set(range(1, 521))


def test_frames_written_together_arrive_exact(client, server):
    """chatd writes several queued frames in one write, framing them
    itself: a sync of messages whose frames need each size of header (under
    126 bytes, 16-bit and near the body limit) and add up to more than one
    write must arrive as the same bodies, byte for byte, in order, then
    `synced` (a short frame), with nothing in between or after."""
    alice = client.new_user("scoal")
    bob = client.new_user("scoalb")
    cid = client.conversation(alice, bob).json["conversation_id"]
    sizes = [1, 7, 60, 125, 126, 127, 1000, 16384, 16384, 16384, 16384,
             16384, 3, 16383, 2, 65, 4000]
    bodies = []
    for i, n in enumerate(sizes):
        stem = "x%dé-" % i                  # multi-byte UTF-8 too
        body = (stem * n)[:n]
        while len(body.encode()) > n:      # n bytes, whole characters
            body = body[:-1]
        bodies.append(body)
        r = client.send(bob, cid, body)
        assert r.status == 201, r

    async def go():
        s = await connect(server, alice.token)
        msgs, done = await sync(s, {cid: 0}, timeout=30.0)
        await s.ping()                     # the stream is still in step
        extra = list(s.backlog)
        await s.close()
        return msgs, done, extra

    msgs, done, extra = run(go(), timeout=60)
    assert done["truncated"] == []
    assert [m["seq"] for m in msgs] == list(range(1, len(sizes) + 1))
    assert [m["body"] for m in msgs] == bodies
    assert [f for f in extra if f.get("type") != "presence"] == []
