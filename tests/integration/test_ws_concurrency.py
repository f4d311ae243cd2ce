"""Concurrent senders into one conversation: 20 users, each on its own
socket, send 50 messages each at once. The acked seqs are exactly
1..1000 with no duplicate, history agrees with every ack, and every member
receives every message it did not send, in seq order."""

import asyncio

from ws_client import (check_ack, connect, drain,
                       new_cmid, run)

SENDERS = 20
EACH = 50
TOTAL = SENDERS * EACH


def all_history(client, user, cid):
    out, after = [], 0
    while True:
        r = client.history(user, cid, "limit=200&after_seq=%d" % after)
        assert r.status == 200, r
        out += r.json["messages"]
        if not r.json["has_more"]:
            return out
        after = out[-1]["seq"]


def test_20_senders_50_messages_each(client, server):
    receiver = client.new_user("crecv")
    senders = [client.new_user("csnd") for _ in range(SENDERS)]
    r = client.conversation(receiver, *senders, title="load")
    assert r.status == 201, r
    cid = r.json["conversation_id"]
    assert len(r.json["members"]) == SENDERS + 1

    async def sender(i, session, start):
        await start.wait()
        cmids = ["c%02d-%03d-%s" % (i, n, new_cmid()) for n in range(EACH)]
        # all 50 at once, without waiting for acks in between
        for n, cmid in enumerate(cmids):
            await session.send({"type": "send", "conversation_id": cid,
                                "body": "from %d number %d" % (i, n),
                                "client_msg_id": cmid})
        acks, msgs = await drain(session, EACH, TOTAL - EACH)
        for a, cmid in zip(acks, cmids):
            check_ack(a)
        assert sorted(a["client_msg_id"] for a in acks) == sorted(cmids)
        return acks, msgs

    async def go():
        recv = await connect(server, receiver.token)
        socks = await asyncio.gather(*(connect(server, u.token)
                                       for u in senders))
        start = asyncio.Event()
        tasks = [asyncio.create_task(sender(i, s, start))
                 for i, s in enumerate(socks)]
        listen = asyncio.create_task(drain(recv, 0, TOTAL))
        start.set()
        results = await asyncio.gather(*tasks)
        _, received = await listen
        await asyncio.gather(recv.close(), *(s.close() for s in socks))
        return results, received

    results, received = run(go(), timeout=180)

    acks = [a for acks, _ in results for a in acks]
    seqs = sorted(a["seq"] for a in acks)
    assert seqs == list(range(1, TOTAL + 1)), "seqs not exactly 1..1000"
    assert len({a["message_id"] for a in acks}) == TOTAL
    # the receiver got all 1000, in seq order, matching the acks
    assert [m["seq"] for m in received] == list(range(1, TOTAL + 1))
    by_cmid = {a["client_msg_id"]: a for a in acks}
    for m in received:
        a = by_cmid[m["client_msg_id"]]
        assert (m["message_id"], m["seq"], m["created_at"]) == (
            a["message_id"], a["seq"], a["created_at"]), (m, a)
        assert m["conversation_id"] == cid

    # every sender got everyone else's, in seq order, and none of its own
    for i, (own, msgs) in enumerate(results):
        own_seqs = {a["seq"] for a in own}
        got = [m["seq"] for m in msgs]
        assert got == sorted(set(range(1, TOTAL + 1)) - own_seqs), i
        for m in msgs:
            assert m["sender_id"] == senders[int(m["body"].split()[1])].user_id

    # history agrees with every ack
    hist = all_history(client, receiver, cid)
    assert [m["seq"] for m in hist] == list(range(1, TOTAL + 1))
    for m in hist:
        a = by_cmid[m["client_msg_id"]]
        assert (m["message_id"], m["seq"], m["created_at"]) == (
            a["message_id"], a["seq"], a["created_at"])
    # sending moved each sender's marker to its own newest message
    for i in (0, SENDERS - 1):
        own_last = max(a["seq"] for a in results[i][0])
        e = client.conversation_entry(senders[i], cid)
        assert e["unread"] == TOTAL - own_last, (e, own_last)
    assert client.conversation_entry(receiver, cid)["unread"] == TOTAL
