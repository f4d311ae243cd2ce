"""Several chatd nodes on one Postgres and one Redis (Redis mode).

Users on different nodes chat: message, read, typing and presence frames
reach the other nodes; a logout on one node closes that session's sockets
on the others and its token stops working everywhere. Concurrent senders
on every node get seqs 1..N with no gap or duplicate, and every socket
receives every message once; the same client_msg_id sent to several nodes
at once is one message with the same ids in every ack. A node killed with
SIGKILL: its users go offline for their contacts on the surviving nodes
within the presence TTL and one janitor period. Redis killed under
traffic and started again on the same port: every send is still acked and
stored, /ready says 503 and then 200, fan-out across nodes resumes by
itself, and a client that syncs gets every acked message. The Redis cache
counts its requests, hits and misses.

These tests need real servers: they fail (never skip) when
CHATD_TEST_PG_URL or CHATD_TEST_REDIS_URL is not set. The Redis outage
runs on servers of its own (tests/servers.sh in a temporary directory), so
stopping Redis cannot disturb the other suites.
"""

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from chatd_client import wait_for
from conftest import (ChatdCluster, chatd_bin, clean_env, data_dir,
                      require_cluster_servers)
from ws_client import (check_ack, check_message_frame, connect, drain,
                       new_cmid, run)

SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "servers.sh")
TTL = 3                      # --presence-ttl of the fault tests
JANITOR = TTL / 3.0          # heartbeat and expiry sweep period
SLACK = 2.0                  # what a loaded test machine may add


# -- helpers -------------------------------------------------------------------

def presence(user, online):
    return {"type": "presence", "user_id": user.user_id, "online": online}


def about(user):
    return lambda f: (f.get("type") == "presence"
                      and f.get("user_id") == user.user_id)


def read_frame(cid, user, seq):
    return {"type": "read", "conversation_id": cid, "user_id": user.user_id,
            "seq": seq}


def typing_frame(cid, user):
    return {"type": "typing", "conversation_id": cid,
            "user_id": user.user_id}


def online_flag(client, viewer, user):
    r = client.get("/api/users?prefix=" + user.username, token=viewer.token)
    assert r.status == 200, r
    found = [u for u in r.json["users"] if u["user_id"] == user.user_id]
    assert len(found) == 1, r.json
    return found[0]["online"]


def all_history(client, user, cid):
    out, after = [], 0
    while True:
        r = client.history(user, cid, "limit=200&after_seq=%d" % after)
        assert r.status == 200, r
        out += r.json["messages"]
        if not r.json["has_more"]:
            return out
        after = out[-1]["seq"]


async def http(fn, *args, **kw):
    """A blocking HTTP call from a coroutine, off the loop."""
    return await asyncio.to_thread(fn, *args, **kw)


def metric_samples(node):
    """{(name, frozenset(labels)): value} of one node's /metrics."""
    r = node.client().get("/metrics")
    assert r.status == 200, r
    out = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$', line)
        assert m, line
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="'
                                      r'((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def servers(cmd, d, *args):
    r = subprocess.run(["bash", SERVERS, cmd, d] + list(args),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r.stdout


def ready_status(node):
    """(status, body) of GET /ready on one node."""
    r = node.client().get("/ready")
    try:
        return r.status, r.json
    except ValueError:
        return r.status, r.text


def wait_ready_status(node, status, timeout):
    """Polls /ready until it answers status; returns (seconds, body)."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        try:
            last = ready_status(node)
            if last[0] == status:
                return time.monotonic() - start, last[1]
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError("%s: /ready did not answer %d within %.0f s "
                         "(last: %r)" % (node.name, status, timeout, last))


@pytest.fixture(scope="module")
def cluster():
    """Three nodes for the tests that do not break anything; the collector
    runs every second (chat_online_users)."""
    require_cluster_servers()
    tmpdir = tempfile.mkdtemp(prefix="chatd-cluster-")
    c = None
    try:
        c = ChatdCluster(tmpdir, n=3, args=["--collect-interval-ms", "1000"])
        c.start()
        yield c
        dead = c.dead_nodes()
        assert not dead, dead
        codes = c.stop()
        assert codes == [0, 0, 0], (codes, c.stderr_text())
    finally:
        if c is not None:
            c.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture
def own_cluster():
    """A factory of clusters that the test may break (kill a node);
    whatever it started is killed and dropped at the end."""
    require_cluster_servers()
    made = []

    def make(n=2, **kw):
        d = tempfile.mkdtemp(prefix="chatd-cluster-")
        c = ChatdCluster(d, n=n, **kw)
        made.append((c, d))
        return c.start()

    yield make
    for c, d in made:
        c.close()
        shutil.rmtree(d, ignore_errors=True)


# -- /ready and chatting across nodes -------------------------------------------

def test_ready_names_redis_on_every_node(cluster):
    for nd in cluster.nodes:
        status, body = ready_status(nd)
        assert status == 200, (nd.name, body)
        assert body == {"status": "ok",
                        "checks": {"database": "ok", "redis": "ok"}}, body


def test_two_nodes_message_read_typing_presence(cluster):
    n0, n1 = cluster.nodes[0], cluster.nodes[1]
    c0, c1 = n0.client(), n1.client()
    alice = c0.new_user("xa")
    bob = c1.new_user("xb")
    r = c0.conversation(alice, bob)
    assert r.status == 201, r
    cid = r.json["conversation_id"]
    assert online_flag(c1, bob, alice) is False

    async def go():
        b = await connect(n1, bob.token)
        a = await connect(n0, alice.token)
        # presence online crosses from node0 to node1
        assert await b.expect(about(alice)) == presence(alice, True)
        # online is cluster-wide in /api/users, asked on either node
        assert await http(wait_for, lambda: online_flag(c1, bob, alice)
                          is True, 5.0)
        assert await http(online_flag, c0, alice, bob) is True
        # alice's second socket, on node1: not news
        a2 = await connect(n1, alice.token)
        await b.expect_quiet(about(alice))

        # a message sent on node0 reaches bob and alice's other socket
        ack = await a.send_message(cid, "across nodes")
        hist = await http(all_history, c1, bob, cid)
        assert len(hist) == 1, hist
        for s in (b, a2):
            m = check_message_frame(await s.expect("message"), cid, alice)
            assert m == hist[0]
            assert (m["message_id"], m["seq"]) == (ack["message_id"],
                                                   ack["seq"])
        await a.expect_quiet("message")

        # a read on node1 reaches alice on both nodes
        await b.send({"type": "read", "conversation_id": cid,
                      "seq": ack["seq"]})
        for s in (a, a2):
            assert await s.expect("read") == read_frame(cid, bob, ack["seq"])

        # typing on node0 reaches bob on node1, not alice's other socket
        await a.send({"type": "typing", "conversation_id": cid})
        assert await b.expect("typing") == typing_frame(cid, alice)
        await a2.expect_quiet("typing", window=0.3)

        # an HTTP send on node1 reaches every socket on both nodes
        r = await http(c1.send, bob, cid, "over http on node1")
        assert r.status == 201, r
        for s in (a, a2, b):
            m = check_message_frame(await s.expect("message"), cid, bob)
            assert m == r.json
        # an HTTP read on node0 reaches node1
        r = await http(c0.read, alice, cid, r.json["seq"])
        assert r.status == 204, r
        assert await b.expect("read") == read_frame(cid, alice, 2)

        # closing one of alice's two sockets is not news; the last one is
        await a.close()
        await b.expect_quiet(about(alice))
        assert await http(online_flag, c0, bob, alice) is True
        await a2.close()
        assert await b.expect(about(alice)) == presence(alice, False)
        assert await http(wait_for, lambda: online_flag(c0, bob, alice)
                          is False, 5.0)
        await b.close()

    run(go())


def test_presence_counts_sessions_on_every_node(cluster):
    """online when the first session in the cluster opens, offline when
    the last one closes, wherever they are; strangers hear nothing."""
    n0, n1, n2 = cluster.nodes
    c = n0.client()
    alice = c.new_user("pa")
    bob = c.new_user("pb")
    stranger = c.new_user("ps")
    assert c.conversation(alice, bob).status == 201
    assert c.conversation(stranger, bob).status == 201

    async def go():
        b = await connect(n2, bob.token)
        s = await connect(n1, stranger.token)
        a0 = await connect(n0, alice.token)
        assert await b.expect(about(alice)) == presence(alice, True)
        a1 = await connect(n1, alice.token)
        a2 = await connect(n2, alice.token)
        await b.expect_quiet(about(alice))
        await a0.close()
        await a2.close()
        await b.expect_quiet(about(alice))
        assert await http(online_flag, n2.client(), bob, alice) is True
        await a1.close()
        assert await b.expect(about(alice)) == presence(alice, False)
        await s.expect_quiet(about(alice), window=0.2)
        await asyncio.gather(b.close(), s.close())

    run(go())


def test_three_nodes_group_every_member_gets_every_message_once(cluster):
    c = cluster.client()           # requests spread over the nodes too
    users = [c.new_user("g3") for _ in range(6)]
    r = c.conversation(users[0], *users[1:], title="three nodes")
    assert r.status == 201, r
    cid = r.json["conversation_id"]

    async def go():
        # two members per node
        socks = [await connect(cluster.nodes[i % 3], u.token)
                 for i, u in enumerate(users)]
        acks = []
        for i, s in enumerate(socks):
            acks.append(await s.send_message(cid, "from %d" % i))
        assert [a["seq"] for a in acks] == list(range(1, 7))
        for i, s in enumerate(socks):
            got = [check_message_frame(f, cid)
                   for f in await s.collect("message", 5)]
            assert sorted(m["seq"] for m in got) == [
                n for n in range(1, 7) if n != i + 1], (i, got)
            await s.expect_quiet("message", window=0.2)
        await asyncio.gather(*(s.close() for s in socks))

    run(go())


def test_logout_on_one_node_closes_the_sessions_sockets_on_others(cluster):
    n0, n1, n2 = cluster.nodes
    frank = n0.client().new_user("lo")
    other = n1.client().login(frank.username, frank.password).json["token"]
    # every node has looked the token up (and may have cached it)
    for nd in cluster.nodes:
        assert nd.client().get("/api/me", token=frank.token).status == 200

    async def go():
        a1 = await connect(n1, frank.token)
        a2 = await connect(n2, cookie=frank.token)
        b = await connect(n2, other)
        assert a1.session_id == a2.session_id != b.session_id
        r = await http(n0.client().post, "/api/logout", token=frank.token)
        assert r.status == 204, r
        assert await a1.expect_close() == 1008
        assert await a2.expect_close() == 1008
        await b.ping()
        # the ended token is refused on every node, cache or not
        for nd in cluster.nodes:
            r = await http(nd.client().get, "/api/me", token=frank.token)
            assert r.status == 401, (nd.name, r)
            s = await connect(nd)
            await s.send({"type": "auth", "token": frank.token})
            assert await s.expect_close() == 4401, nd.name
        # the other session still works everywhere
        for nd in cluster.nodes:
            r = await http(nd.client().get, "/api/me", token=other)
            assert r.status == 200, (nd.name, r)
        await b.close()

    run(go())


# -- concurrency and idempotency across nodes -----------------------------------

def test_concurrent_senders_on_every_node(cluster):
    per_node, each = 3, 40
    nodes = cluster.nodes
    senders = [nodes[0].client().new_user("cs")
               for _ in range(per_node * len(nodes))]
    readers = [nodes[0].client().new_user("cr") for _ in nodes]
    r = nodes[1].client().conversation(readers[0], *(readers[1:] + senders),
                                       title="everyone")
    assert r.status == 201, r
    cid = r.json["conversation_id"]
    total = len(senders) * each

    async def sender(i, s, start):
        await start.wait()
        cmids = ["n%d-s%02d-%03d-%s" % (i % len(nodes), i, k, new_cmid())
                 for k in range(each)]
        for k, cmid in enumerate(cmids):
            await s.send({"type": "send", "conversation_id": cid,
                          "body": "sender %d number %d" % (i, k),
                          "client_msg_id": cmid})
        acks, msgs = await drain(s, each, total - each)
        for a in acks:
            check_ack(a)
        assert sorted(a["client_msg_id"] for a in acks) == sorted(cmids)
        # the acks of one socket come in the order it sent
        assert [a["client_msg_id"] for a in acks] == cmids
        return acks, msgs

    async def go():
        ssocks = [await connect(nodes[i % len(nodes)], u.token)
                  for i, u in enumerate(senders)]
        rsocks = [await connect(nodes[i], u.token)
                  for i, u in enumerate(readers)]
        start = asyncio.Event()
        tasks = [asyncio.create_task(sender(i, s, start))
                 for i, s in enumerate(ssocks)]
        listens = [asyncio.create_task(drain(s, 0, total)) for s in rsocks]
        start.set()
        results = await asyncio.gather(*tasks)
        received = [msgs for _, msgs in await asyncio.gather(*listens)]
        # nothing more comes: no duplicates late
        for s in ssocks + rsocks:
            await s.expect_quiet("message", window=0.3)
        await asyncio.gather(*(s.close() for s in ssocks + rsocks))
        return results, received

    results, received = run(go(), timeout=240)
    acks = [a for own, _ in results for a in own]
    assert sorted(a["seq"] for a in acks) == list(range(1, total + 1)), \
        "seqs are not exactly 1..%d" % total
    assert len({a["message_id"] for a in acks}) == total
    by_id = {a["message_id"]: a for a in acks}
    # every reader, on every node, got every message exactly once
    for i, msgs in enumerate(received):
        ids = [m["message_id"] for m in msgs]
        assert len(ids) == len(set(ids)) == total, (nodes[i].name, len(ids),
                                                    len(set(ids)))
        for m in msgs:
            a = by_id[m["message_id"]]
            assert (m["seq"], m["created_at"], m["client_msg_id"]) == (
                a["seq"], a["created_at"], a["client_msg_id"]), (m, a)
    # every sender got everyone else's once and none of its own
    for i, (own, msgs) in enumerate(results):
        own_ids = {a["message_id"] for a in own}
        ids = [m["message_id"] for m in msgs]
        assert len(ids) == len(set(ids)), ("duplicates", i)
        assert set(ids) == set(by_id) - own_ids, i
    hist = all_history(nodes[2].client(), readers[0], cid)
    assert [m["seq"] for m in hist] == list(range(1, total + 1))
    for m in hist:
        a = by_id[m["message_id"]]
        assert (m["seq"], m["created_at"], m["client_msg_id"]) == (
            a["seq"], a["created_at"], a["client_msg_id"])


def test_same_client_msg_id_on_every_node_is_one_message(cluster):
    nodes = cluster.nodes
    c = nodes[0].client()
    alice = c.new_user("ia")
    bob = c.new_user("ib")
    cid = c.conversation(alice, bob).json["conversation_id"]
    # one session of alice per node (logins on that node)
    tokens = [alice.token] + [
        nd.client().login(alice.username, alice.password).json["token"]
        for nd in nodes[1:]]
    rounds = 20

    async def go():
        socks = [await connect(nd, t) for nd, t in zip(nodes, tokens)]
        b = await connect(nodes[1], bob.token)
        cmids = [new_cmid("same") for _ in range(rounds)]
        for k, cmid in enumerate(cmids):
            # the same send on every node at once
            await asyncio.gather(*(s.send(
                {"type": "send", "conversation_id": cid,
                 "body": "once %d" % k, "client_msg_id": cmid})
                for s in socks))
        acks = {cmid: [] for cmid in cmids}
        for s in socks:
            for _ in range(rounds):
                f = await s.expect(lambda f: f.get("type") in ("ack", "error"),
                                   timeout=10.0)
                assert f["type"] == "ack", f
                check_ack(f)
                acks[f["client_msg_id"]].append(f)
        got = [check_message_frame(f, cid, alice)
               for f in await b.collect("message", rounds)]
        await b.expect_quiet("message", window=0.5)
        # alice's sockets may see the message stored through another
        # node (the sender's other sessions), but never twice
        for s in socks:
            await s.expect_quiet(lambda f: f.get("type") == "ack",
                                 window=0.1)
            ids = [f["message"]["message_id"] for f in s.backlog
                   if f.get("type") == "message"]
            assert len(ids) == len(set(ids)), ids
        await asyncio.gather(b.close(), *(s.close() for s in socks))
        return cmids, acks, got

    cmids, acks, got = run(go())
    for cmid in cmids:
        three = acks[cmid]
        assert len(three) == len(nodes), three
        ids = {(a["message_id"], a["seq"], a["created_at"]) for a in three}
        assert len(ids) == 1, ("different acks for one client_msg_id", three)
    hist = all_history(nodes[2].client(), bob, cid)
    assert [m["client_msg_id"] for m in hist] == cmids
    assert [m["seq"] for m in hist] == list(range(1, rounds + 1))
    for m in hist:
        a = acks[m["client_msg_id"]][0]
        assert (m["message_id"], m["seq"]) == (a["message_id"], a["seq"])
    # bob got each message once
    assert sorted(m["message_id"] for m in got) == sorted(
        m["message_id"] for m in hist)


def test_same_client_msg_id_over_http_on_two_nodes(cluster):
    n0, n1 = cluster.nodes[0], cluster.nodes[1]
    alice = n0.client().new_user("ha")
    bob = n0.client().new_user("hb")
    cid = n0.client().conversation(alice, bob).json["conversation_id"]
    for k in range(10):
        cmid = new_cmid("http")
        out = [None, None]
        barrier = threading.Barrier(2)

        def post(i, nd):
            barrier.wait()
            out[i] = nd.client().send(alice, cid, "race %d" % k, cmid)

        threads = [threading.Thread(target=post, args=(i, nd))
                   for i, nd in enumerate((n0, n1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(r.status for r in out) == [200, 201], out
        assert out[0].json == out[1].json, out
    hist = all_history(n1.client(), bob, cid)
    assert [m["seq"] for m in hist] == list(range(1, 11))


# -- metrics --------------------------------------------------------------------

def cache_counts(samples, op):
    return tuple(metric(samples, name, operation=op) for name in (
        "chat_cache_requests_total", "chat_cache_hits_total",
        "chat_cache_misses_total",
        "chat_cache_operations_duration_seconds_count"))


def test_cache_counts_session_lookups(cluster):
    nd = cluster.nodes[2]
    c = nd.client()
    user = c.new_user("ca")
    other = c.new_user("cb")
    cid = c.conversation(user, other).json["conversation_id"]
    before = metric_samples(nd)
    for _ in range(6):
        assert c.get("/api/me", token=user.token).status == 200
    after = metric_samples(nd)
    req0, hit0, miss0, _ = cache_counts(before, "session_get")
    req1, hit1, miss1, n1 = cache_counts(after, "session_get")
    assert req1 - req0 >= 6, (req0, req1)
    # one token asked six times: at most the first is a miss
    assert hit1 - hit0 >= 5, (hit0, hit1)
    assert hit1 + miss1 == req1, (req1, hit1, miss1)
    assert n1 >= req1, n1
    # conversation members: sends look them up
    for i in range(3):
        assert c.send(user, cid, "members %d" % i).status == 201
    req, hit, miss, n = cache_counts(metric_samples(nd), "members_get")
    assert req >= 1 and hit + miss == req, (req, hit, miss)
    assert n >= req, n


def test_cache_hits_and_misses_as_documented(cluster):
    """docs/metrics.md: every cache call counts a request; the cache
    lookups (`session_get`, `members_get`) count a hit or a miss, unless the
    call failed (Redis is up here: none fails); the writes and the presence
    query (`online_get`) count neither."""
    nd = cluster.nodes[0]
    c = nd.client()
    user = c.new_user("cd")
    other = c.new_user("ce")
    cid = c.conversation(user, other).json["conversation_id"]
    assert c.send(user, cid, "one").status == 201
    assert c.get("/api/users?prefix=ce", token=user.token).status == 200
    assert c.post("/api/logout", token=user.token).status == 204
    after = metric_samples(nd)
    ops = sorted({dict(labels)["operation"] for (name, labels) in after
                  if name == "chat_cache_requests_total"})
    assert {"session_get", "session_set", "session_delete", "members_get",
            "members_set", "online_get"} <= set(ops), ops
    wrong = {}
    for o in ops:
        req, hit, miss, _ = cache_counts(after, o)
        want = req if o in ("session_get", "members_get") else 0
        if hit + miss != want:
            wrong[o] = {"requests": req, "hits": hit, "misses": miss}
    assert not wrong, wrong


def test_online_users_metric_is_cluster_wide(cluster):
    """Every node reports the users online on any node. The module's other
    tests have closed their sockets: the count starts from 0."""
    c = cluster.nodes[0].client()
    users = [c.new_user("om") for _ in range(3)]

    def online_everywhere():
        return [metric(metric_samples(nd), "chat_online_users")
                for nd in cluster.nodes]

    def becomes(want):
        return wait_for(lambda: online_everywhere() == want, 10.0)

    async def go():
        assert await http(becomes, [0, 0, 0]), await http(online_everywhere)
        # one user on each node
        socks = [await connect(nd, u.token)
                 for nd, u in zip(cluster.nodes, users)]
        assert await http(becomes, [3, 3, 3]), await http(online_everywhere)
        # a second socket of one of them, on another node, is not another
        # user
        extra = await connect(cluster.nodes[1], users[0].token)
        await asyncio.sleep(1.5)
        assert await http(online_everywhere) == [3, 3, 3]
        await asyncio.gather(*(s.close() for s in socks))
        assert await http(becomes, [1, 1, 1]), await http(online_everywhere)
        await extra.close()
        assert await http(becomes, [0, 0, 0]), await http(online_everywhere)

    run(go())


# -- a node killed ----------------------------------------------------------------

def test_killed_node_sessions_go_offline_for_contacts_elsewhere(own_cluster):
    cl = own_cluster(2, presence_ttl=TTL)
    n0, n1 = cl.nodes
    c0 = n0.client()
    bob = c0.new_user("kb")        # on the node that survives
    alice = c0.new_user("ka")      # only on the node that dies
    carol = c0.new_user("kc")      # on both nodes
    assert c0.conversation(bob, alice).status == 201
    cid = c0.conversation(bob, carol).json["conversation_id"]

    async def go():
        b = await connect(n0, bob.token)
        a = await connect(n1, alice.token)
        k1 = await connect(n1, carol.token)
        k0 = await connect(n0, carol.token)
        assert await b.expect(about(alice)) == presence(alice, True)
        assert await b.expect(about(carol)) == presence(carol, True)
        # outlive a few heartbeats first: keys are refreshed, not expired
        await asyncio.sleep(TTL * 1.5)
        await b.expect_quiet(lambda f: f.get("type") == "presence")
        assert await http(online_flag, c0, bob, alice) is True

        start = time.monotonic()
        n1.kill()                  # SIGKILL: no goodbye to Redis
        limit = TTL + JANITOR + SLACK
        f = await b.expect(about(alice), timeout=limit)
        took = time.monotonic() - start
        assert f == presence(alice, False), f
        assert await http(online_flag, c0, bob, alice) is False
        # carol still has a session on node0: she stays online
        await b.expect_quiet(about(carol), window=max(0.5, limit - took))
        assert await http(online_flag, c0, bob, carol) is True
        # the surviving node goes on serving
        ack = await b.send_message(cid, "still here")
        m = check_message_frame(await k0.expect("message"), cid, bob)
        assert m["message_id"] == ack["message_id"]
        await asyncio.gather(b.close(), k0.close())
        for s in (a, k1):
            s.conn.transport.abort()
        return took

    took = run(go())
    assert took <= TTL + JANITOR + SLACK, took
    assert n0.stop() == 0


# -- Redis killed under traffic ---------------------------------------------------

async def steady_sender(node, user, cid, acks, errors, stop, stem):
    """Sends one message at a time until stop; records every ack and error
    frame (errors are not expected: Redis down must not stop sends)."""
    s = await connect(node, user.token)
    try:
        while not stop.is_set():
            cmid = new_cmid(stem)
            await s.send({"type": "send", "conversation_id": cid,
                          "body": "%s through the outage" % stem,
                          "client_msg_id": cmid})
            f = await s.expect(lambda f: f.get("type") in ("ack", "error"),
                               timeout=15.0)
            if f["type"] == "ack":
                acks[cmid] = (time.monotonic(), f)
            else:
                errors.append(f)
            # about 8 a second: the resync below stays under sync's 500
            await asyncio.sleep(0.1)
    finally:
        await s.close()


async def listener(session, seen, stop):
    """Records every message frame a socket gets in seen["by_id"]
    ({message_id: (arrival time, message)}) and how many arrived in all in
    seen["count"] (to catch duplicates); other frames go to seen["other"]."""
    seen.update(count=0, by_id={}, other=[])
    while not stop.is_set():
        try:
            f = await session.recv(timeout=0.2)
        except AssertionError:
            continue
        if f.get("type") == "message":
            m = check_message_frame(f)
            seen["count"] += 1
            seen["by_id"][m["message_id"]] = (time.monotonic(), m)
        else:
            seen["other"].append(f)


def test_redis_killed_under_traffic_and_back(own_cluster, tmp_path):
    require_cluster_servers()
    sdir = tempfile.mkdtemp(prefix="chatd-redis-outage-")
    os.chmod(sdir, 0o755)
    env = servers("start", sdir)
    try:
        pg = re.search(r"CHATD_TEST_PG_URL=(\S+)", env).group(1)
        redis = re.search(r"CHATD_TEST_REDIS_URL=(\S+)", env).group(1)
        m = subprocess.run([chatd_bin(), "migrate", "up", "--database", pg,
                            "--data-dir", data_dir()], capture_output=True,
                           text=True, timeout=60, env=clean_env())
        assert m.returncode == 0, m.stderr
        cl = own_cluster(2, database=pg, redis=redis, presence_ttl=TTL)
        n0, n1 = cl.nodes
        c0, c1 = n0.client(), n1.client()
        alice = c0.new_user("ra")      # sends on node0
        bob = c1.new_user("rb")        # sends on node1
        cid = c0.conversation(alice, bob).json["conversation_id"]
        acks_a, acks_b, errors = {}, {}, []
        seen_a0, seen_b1 = {}, {}      # alice's other socket on node0,
        #                                bob's other socket on node1

        async def go():
            stop = asyncio.Event()
            a0 = await connect(n0, alice.token)
            b1 = await connect(n1, bob.token)
            listen = [asyncio.ensure_future(listener(a0, seen_a0, stop)),
                      asyncio.ensure_future(listener(b1, seen_b1, stop))]
            send = [asyncio.ensure_future(steady_sender(
                        n0, alice, cid, acks_a, errors, stop, "a")),
                    asyncio.ensure_future(steady_sender(
                        n1, bob, cid, acks_b, errors, stop, "b"))]
            await asyncio.sleep(1.0)
            # fan-out crosses nodes before the outage
            by_b1 = seen_b1.get("by_id", {})
            assert any(m["sender_id"] == alice.user_id
                       for _, m in by_b1.values()), "no cross-node message"

            loop = asyncio.get_running_loop()
            killed = time.monotonic()
            await loop.run_in_executor(None, servers, "redis-stop", sdir,
                                       "kill")
            for nd in (n0, n1):
                _, body = await loop.run_in_executor(
                    None, wait_ready_status, nd, 503, 5.0)
                assert body["status"] == "unavailable", body
                assert body["checks"]["database"] == "ok", body
                assert isinstance(body["checks"]["redis"], str), body
                assert body["checks"]["redis"] != "ok", body
                assert nd.client().get("/health").status == 200
            # sends go on being acked on both nodes while Redis is down
            na, nb = len(acks_a), len(acks_b)
            await asyncio.sleep(2.0)
            assert not errors, errors[:5]
            assert len(acks_a) >= na + 5 and len(acks_b) >= nb + 5, (
                na, len(acks_a), nb, len(acks_b))
            # and local fan-out goes on: alice's sends made on node0 after
            # the kill reach her other socket on node0
            local = [m for t, m in seen_a0.get("by_id", {}).values()
                     if m["sender_id"] == alice.user_id and t > killed + 0.5]
            assert local, "no local fan-out while Redis was down"

            await loop.run_in_executor(None, servers, "redis-start", sdir)
            restarted = time.monotonic()
            back = []
            for nd in (n0, n1):
                took, body = await loop.run_in_executor(
                    None, wait_ready_status, nd, 200, 10.0)
                assert body == {"status": "ok", "checks": {
                    "database": "ok", "redis": "ok"}}, body
                back.append(took)
            # cross-node fan-out resumes by itself: a fresh message from
            # node0 reaches bob's socket on node1 within a few seconds
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            resumed = await loop.run_in_executor(None, wait_for, lambda: any(
                m["sender_id"] == alice.user_id and t > t0
                for t, m in list(seen_b1.get("by_id", {}).values())), 5.0)
            assert resumed, "no message from node0 reached node1 within " \
                "5 s of Redis answering again"
            # presence comes back too: Redis lost every key, and alice's
            # sockets on node0, open all along, count as online on node1
            # again within a TTL and a heartbeat
            assert await http(wait_for, lambda: online_flag(c1, bob, alice)
                              is True, TTL + JANITOR + SLACK), \
                "alice (connected to node0 throughout) is offline on node1 " \
                "after Redis came back"
            stop.set()
            await asyncio.wait_for(asyncio.gather(*send, *listen), 20)
            await asyncio.gather(a0.close(), b1.close())
            return restarted, back

        restarted, back = run(go(), timeout=120)
        assert max(back) <= 5.0, back
        assert not errors, errors[:5]

        # every acked message is stored, with the ids of its ack
        acks = dict(acks_a)
        acks.update(acks_b)
        hist = all_history(c1, bob, cid)
        stored = {m["client_msg_id"]: m for m in hist}
        for cmid, (_, a) in acks.items():
            assert cmid in stored, ("acked but not stored", cmid, a)
            assert (stored[cmid]["message_id"], stored[cmid]["seq"]) == (
                a["message_id"], a["seq"])
        assert [m["seq"] for m in hist] == list(range(1, len(hist) + 1))
        assert len(hist) == len(acks), (len(hist), len(acks))
        # no socket got a message twice
        for seen in (seen_a0, seen_b1):
            assert seen["count"] == len(seen["by_id"]), "duplicate frames"

        # bob's socket on node1 missed what crossed nodes during the
        # outage; a client syncs from its last contiguous seq and then
        # has every acked message
        have = {m["seq"] for _, m in seen_b1["by_id"].values()
                if m["conversation_id"] == cid}
        last = 0
        while last + 1 in have:
            last += 1

        async def resync():
            s = await connect(n1, bob.token)
            await s.send({"type": "sync", "since": {str(cid): last}})
            msgs = []
            while True:
                f = await s.expect(lambda f: f.get("type") in (
                    "message", "synced", "error"), timeout=10.0)
                assert f["type"] != "error", f
                if f["type"] == "synced":
                    break
                msgs.append(check_message_frame(f, cid))
            await s.close()
            return msgs, f

        msgs, synced = run(resync())
        assert synced["truncated"] == [], synced
        assert [m["seq"] for m in msgs] == list(range(last + 1,
                                                      len(hist) + 1))
        assert {m["seq"] for m in msgs} | set(have) >= {
            a["seq"] for _, a in acks.values()}

        # both nodes logged losing Redis and finding it again
        for nd in (n0, n1):
            evs = nd.log_events()
            kinds = [e.get("event_type") for e in evs]
            assert "redis_error" in kinds, nd.name
            assert kinds.count("redis_connected") >= 2, (nd.name, kinds.count(
                "redis_connected"))

        assert cl.stop() == [0, 0]
    finally:
        servers("stop", sdir)
        shutil.rmtree(sdir, ignore_errors=True)
