"""An ack means stored: chatd killed with SIGKILL in the middle of a load
loses no acked message, and a retry of the unacked ones stores each once;
SIGTERM closes sockets with 1001, acks what it took in, and exits 0."""

import asyncio
import signal
import time

import websockets

from conftest import ChatdProcess
from ws_client import Closed, check_ack, connect, new_cmid, run

SENDERS = 8
WINDOW = 8          # sends in flight per socket


def all_history(client, user, cid):
    out, after = [], 0
    while True:
        r = client.history(user, cid, "limit=200&after_seq=%d" % after)
        assert r.status == 200, r
        out += r.json["messages"]
        if not r.json["has_more"]:
            return out
        after = out[-1]["seq"]


class Load:
    """What the senders did: every client_msg_id sent, and the acks."""

    def __init__(self):
        self.sent = {}      # client_msg_id -> (sender index, body)
        self.acks = {}      # client_msg_id -> ack frame
        self.refused = []   # error frames (rate_limited, busy, ...)


async def load_sender(server, i, user, cid, load, stop):
    """Sends as fast as the window and the rate limit allow until the
    connection breaks or stop is set."""
    try:
        s = await connect(server, user.token)
    except (OSError, websockets.WebSocketException, Closed):
        return
    inflight = set()
    n = 0
    try:
        while not stop.is_set() or inflight:
            while not stop.is_set() and len(inflight) < WINDOW:
                cmid = "d%d-%d-%s" % (i, n, new_cmid())
                body = "load %d %d" % (i, n)
                load.sent[cmid] = (i, body)
                inflight.add(cmid)
                n += 1
                await s.send({"type": "send", "conversation_id": cid,
                              "body": body, "client_msg_id": cmid})
            f = await s.recv(timeout=10.0)
            if f["type"] == "ack":
                check_ack(f)
                load.acks[f["client_msg_id"]] = f
                inflight.discard(f["client_msg_id"])
            elif f["type"] == "error":
                load.refused.append(f)
                inflight.discard(f.get("ref"))
                if f["code"] in ("rate_limited", "busy"):
                    await asyncio.sleep(0.1)
    except (Closed, OSError, websockets.WebSocketException):
        return      # the server went away: expected
    finally:
        await s.close()


def test_kill_9_loses_no_acked_message(tmp_dir):
    proc = ChatdProcess(tmp_dir)
    proc.start()
    c = proc.client()
    users = [c.new_user("dk") for _ in range(SENDERS)]
    r = c.conversation(users[0], *users[1:], title="kill")
    assert r.status == 201, r
    cid = r.json["conversation_id"]
    load = Load()

    async def go():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(load_sender(proc, i, u, cid, load, stop))
                 for i, u in enumerate(users)]
        # wait until the load is well under way, then kill the server
        deadline = time.monotonic() + 30
        while len(load.acks) < 300 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(load.acks) >= 300, "the load never got going"
        in_flight = len(load.sent) - len(load.acks) - len(load.refused)
        proc.proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)
        return in_flight

    in_flight = run(go(), timeout=90)
    proc.proc.wait(timeout=10)
    assert proc.proc.returncode == -signal.SIGKILL
    assert in_flight > 0, "nothing was in flight when the server died"

    # the same database, a new process
    again = ChatdProcess(tmp_dir)
    again.start()
    c = again.client()
    hist = all_history(c, users[0], cid)
    by_cmid = {}
    for m in hist:
        assert m["client_msg_id"] not in by_cmid, "stored twice: %r" % m
        by_cmid[m["client_msg_id"]] = m
    assert [m["seq"] for m in hist] == list(range(1, len(hist) + 1))
    lost = [cmid for cmid in load.acks if cmid not in by_cmid]
    assert not lost, "%d acked messages lost, e.g. %r" % (len(lost), lost[:3])
    for cmid, a in load.acks.items():
        m = by_cmid[cmid]
        assert (m["message_id"], m["seq"], m["created_at"]) == (
            a["message_id"], a["seq"], a["created_at"]), (m, a)
        i, body = load.sent[cmid]
        assert m["body"] == body and m["sender_id"] == users[i].user_id
    # nothing is stored that was never sent
    assert set(by_cmid) <= set(load.sent)

    # the client retries what it has no ack for: each is stored once, and
    # one that was stored without its ack reaching the client comes back
    # with the ids first stored
    for cmid, (i, body) in load.sent.items():
        if cmid in load.acks:
            continue
        r = c.send(users[i], cid, body, cmid)
        if cmid in by_cmid:
            assert r.status == 200, r
            assert r.json["message_id"] == by_cmid[cmid]["message_id"]
        else:
            assert r.status == 201, r
    hist = all_history(c, users[0], cid)
    assert sorted(m["client_msg_id"] for m in hist) == sorted(load.sent)
    assert [m["seq"] for m in hist] == list(range(1, len(hist) + 1))
    assert again.stop() == 0


def test_sigterm_closes_sockets_with_1001_and_exits_0(tmp_dir):
    proc = ChatdProcess(tmp_dir)
    proc.start()
    c = proc.client()
    alice = c.new_user("dta")
    bob = c.new_user("dtb")
    cid = c.conversation(alice, bob).json["conversation_id"]
    sent = ["t-%d-%s" % (n, new_cmid()) for n in range(40)]

    async def go():
        a = await connect(proc, alice.token)
        b = await connect(proc, bob.token)
        idle = await connect(proc)        # not even authenticated
        for cmid in sent:
            await a.send({"type": "send", "conversation_id": cid,
                          "body": "before the end", "client_msg_id": cmid})
        first = await a.expect("ack")     # the writes are under way
        start = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(a.expect_close(timeout=10.0),
                                     b.expect_close(timeout=10.0),
                                     idle.expect_close(timeout=10.0))
        acks = {f["client_msg_id"]: f for f in a.backlog
                if f.get("type") == "ack"}
        acks[first["client_msg_id"]] = first   # expect() took it
        return codes, acks, start

    codes, acks, start = run(go(), timeout=40)
    assert list(codes) == [1001, 1001, 1001], codes
    code = proc.stop(timeout=max(0.1, start + 10.0 - time.monotonic()))
    assert code == 0, proc.stderr_text()

    again = ChatdProcess(tmp_dir)
    again.start()
    hist = all_history(again.client(), bob, cid)
    stored = {m["client_msg_id"]: m for m in hist}
    # acked means stored, with the ack's ids
    for cmid, a in acks.items():
        assert cmid in stored, cmid
        assert stored[cmid]["message_id"] == a["message_id"]
        assert stored[cmid]["seq"] == a["seq"]
    # what it took in, it finished and acked: nothing stored without an ack
    assert set(stored) == set(acks), (sorted(set(stored) - set(acks))[:3])
    assert acks, "nothing acked before the shutdown"
    assert again.stop() == 0



def test_full_store_queue_answers_busy_and_stores_nothing(tmp_dir):
    # a tiny queue, and many sends at once: the ones that do not fit are
    # refused with busy (not stored), every other one is acked and stored
    proc = ChatdProcess(tmp_dir, args=["--store-queue", "16"])
    proc.start()
    c = proc.client()
    users = [c.new_user("dq") for _ in range(30)]
    cid = c.conversation(users[0], *users[1:]).json["conversation_id"]
    each = 60
    answers = {}

    async def one(u, i):
        s = await connect(proc, u.token)
        cmids = ["q%d-%d-%s" % (i, n, new_cmid()) for n in range(each)]
        for cmid in cmids:
            await s.send({"type": "send", "conversation_id": cid,
                          "body": "q", "client_msg_id": cmid})
        left = set(cmids)
        while left:
            f = await s.recv(timeout=30.0)
            key = f.get("client_msg_id") if f["type"] == "ack" else (
                f.get("ref") if f["type"] == "error" else None)
            if key in left:
                left.discard(key)
                answers[key] = f
            else:
                assert f["type"] in ("message", "presence"), f
        await s.close()

    async def go():
        await asyncio.gather(*(one(u, i) for i, u in enumerate(users)))

    run(go(), timeout=120)
    acked = {k for k, f in answers.items() if f["type"] == "ack"}
    busy = {k for k, f in answers.items() if f["type"] == "error"}
    for k in busy:
        assert answers[k]["code"] == "busy", answers[k]
    assert len(acked) + len(busy) == len(users) * each
    assert busy, "a queue of 16 took %d sends at once" % len(acked)
    stored = {m["client_msg_id"] for m in all_history(c, users[0], cid)}
    assert stored == acked
    # a busy send, sent again, goes through
    k = sorted(busy)[0]
    i = int(k[1:].split("-")[0])
    r = c.send(users[i], cid, "q", k)
    assert r.status == 201, r
    assert proc.stop() == 0
