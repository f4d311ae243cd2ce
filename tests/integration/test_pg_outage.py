"""Postgres goes away under load and comes back: /ready says so within 5 s
while /health stays 200, sends are refused (never acked) meanwhile, chatd
reconnects by itself, and every acked message is in the database.

The test runs its own throwaway Postgres (tests/servers.sh in a temporary
directory), so stopping it cannot disturb the other suites. It runs where
Postgres is part of the test run (CHATD_TEST_PG_URL set, as scripts/test.sh
does); elsewhere it is not collected.
"""

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time

from conftest import ChatdProcess, chatd_bin, data_dir
from ws_client import connect, new_cmid, run

SERVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "servers.sh")


def servers(cmd, d, *args):
    r = subprocess.run(["bash", SERVERS, cmd, d] + list(args),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r.stdout


def wait_status(client, path, status, timeout):
    """Polls path until it answers status; returns the seconds it took."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        try:
            last = client.get(path)
            if last.status == status:
                return time.monotonic() - start
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError("%s did not answer %d within %.0f s (last: %r)"
                         % (path, status, timeout, last))


def all_history(client, user, cid):
    out, after = [], 0
    while True:
        r = client.history(user, cid, "limit=200&after_seq=%d" % after)
        assert r.status == 200, r
        out += r.json["messages"]
        if not r.json["has_more"]:
            return out
        after = out[-1]["seq"]


async def sender(proc, user, cid, acks, errors, stop):
    """Sends one message at a time until stop, recording acks and errors."""
    s = await connect(proc, user.token)
    try:
        while not stop.is_set():
            cmid = new_cmid("o")
            await s.send({"type": "send", "conversation_id": cid,
                          "body": "through the outage", "client_msg_id": cmid})
            f = await s.expect(lambda f: f.get("type") in ("ack", "error"),
                               timeout=15.0)
            if f["type"] == "ack":
                acks[cmid] = f
            else:
                errors.append(f)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.01)
    finally:
        await s.close()


if os.environ.get("CHATD_TEST_PG_URL"):

    def test_postgres_outage_under_load_loses_no_acked_message(tmp_path):
        # mktemp's directory (0700 under a world-readable /tmp), opened to
        # the postgres user that servers.sh runs the server as
        sdir = tempfile.mkdtemp(prefix="chatd-outage-")
        os.chmod(sdir, 0o755)
        env = servers("start", sdir)
        url = re.search(r"CHATD_TEST_PG_URL=(\S+)", env).group(1)
        try:
            m = subprocess.run([chatd_bin(), "migrate", "up", "--database",
                                url, "--data-dir", data_dir()],
                               capture_output=True, text=True, timeout=60)
            assert m.returncode == 0, m.stderr
            proc = ChatdProcess(str(tmp_path), database=url)
            proc.start()
            c = proc.client()
            alice = c.new_user("oa")
            bob = c.new_user("ob")
            cid = c.conversation(alice, bob).json["conversation_id"]
            assert c.get("/ready").status == 200

            acks, errors = {}, []

            async def go():
                stop = asyncio.Event()
                task = asyncio.ensure_future(
                    sender(proc, alice, cid, acks, errors, stop))
                await asyncio.sleep(1.0)
                before = len(acks)
                assert before > 0, errors[:3]
                await asyncio.get_running_loop().run_in_executor(
                    None, servers, "pg-stop", sdir, "immediate")
                took = await asyncio.get_running_loop().run_in_executor(
                    None, wait_status, c, "/ready", 503, 5.0)
                r = c.get("/ready")
                assert r.json["status"] == "unavailable", r
                assert r.json["checks"]["database"] != "ok", r
                assert c.get("/health").status == 200
                # while it is down, sends are refused, not acked
                n_acks = len(acks)
                await asyncio.sleep(1.5)
                assert len(acks) <= n_acks + 1, "acked while Postgres was down"
                assert errors, "no error while Postgres was down"
                assert {e["code"] for e in errors} <= {"unavailable", "busy"}
                await asyncio.get_running_loop().run_in_executor(
                    None, servers, "pg-start", sdir)
                await asyncio.get_running_loop().run_in_executor(
                    None, wait_status, c, "/ready", 200, 20.0)
                # acks resume without restarting chatd
                after = len(acks)
                deadline = time.monotonic() + 15
                while len(acks) < after + 5 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert len(acks) >= after + 5, (len(acks), errors[-3:])
                stop.set()
                await asyncio.wait_for(task, 20)
                return took

            took = run(go(), timeout=90)
            assert took < 5.0
            hist = all_history(c, bob, cid)
            stored = {m["client_msg_id"]: m for m in hist}
            for cmid, a in acks.items():
                assert cmid in stored, cmid
                assert stored[cmid]["message_id"] == a["message_id"]
                assert stored[cmid]["seq"] == a["seq"]
            assert [m["seq"] for m in hist] == list(range(1, len(hist) + 1))
            assert proc.stop() == 0
        finally:
            servers("stop", sdir)
            shutil.rmtree(sdir, ignore_errors=True)
