"""The command line: help and version, usage and startup errors (one
`chatd: ` line on stderr and the documented exit code, never a crash), the
CHATD_* environment defaults, `chatd migrate`, and signals."""

import os
import signal
import socket
import subprocess
import time

import pytest

from chatd_client import Client
from conftest import ChatdProcess, chatd_bin, clean_env, data_dir, free_port

RUN_TIMEOUT = 20


def run_chatd(args, env=None, timeout=RUN_TIMEOUT):
    return subprocess.run([chatd_bin()] + list(args), env=clean_env(env),
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)


def one_error_line(stderr):
    text = stderr.decode("utf-8", "replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("chatd: "), text
    return lines[0]


def test_help(tmp_dir):
    for flag in ("--help", "-h"):
        p = run_chatd([flag])
        assert p.returncode == 0, p
        out = p.stdout.decode()
        assert "usage" in out.lower()
        for opt in ("--listen", "--database", "--redis", "--allowed-origin",
                    "--log-level", "--data-dir", "--session-ttl",
                    "--workers", "--slow-query-ms", "migrate"):
            assert opt in out, opt


def test_version(tmp_dir):
    for flag in ("--version", "-V"):
        p = run_chatd([flag])
        assert p.returncode == 0, p
        assert p.stdout.decode().strip() == "chatd 0.1.0"


def test_unknown_flag_is_a_usage_error(tmp_dir):
    p = run_chatd(["--no-such-flag"])
    assert p.returncode == 2, p
    one_error_line(p.stderr)
    assert p.stdout == b""


def test_unknown_command_is_a_usage_error(tmp_dir):
    p = run_chatd(["migrate", "sideways"],
                  env={"CHATD_DATABASE": "sqlite:" +
                       os.path.join(tmp_dir, "x.db"),
                       "CHATD_DATA_DIR": data_dir()})
    assert p.returncode == 2, p
    one_error_line(p.stderr)


@pytest.mark.parametrize("args", [
    ["--log-level", "loud"],
    ["--workers", "zero"],
    ["--workers", "-1"],
    ["--session-ttl", "soon"],
    ["--listen", "not-an-address"],
    ["--listen", "127.0.0.1:99999"],
    ["--database", "mysql://x"],
])
def test_bad_values(tmp_dir, args):
    p = run_chatd(["--database", "sqlite:" + os.path.join(tmp_dir, "c.db"),
                   "--data-dir", data_dir(),
                   "--listen", "127.0.0.1:%d" % free_port()] + args)
    assert p.returncode in (1, 2), p
    one_error_line(p.stderr)


def test_busy_port(tmp_dir):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        p = run_chatd(["--listen", "127.0.0.1:%d" % port,
                       "--database", "sqlite:" +
                       os.path.join(tmp_dir, "c.db"),
                       "--data-dir", data_dir()])
        assert p.returncode == 1, p
        one_error_line(p.stderr)
    finally:
        s.close()


def test_unopenable_database(tmp_dir):
    missing = os.path.join(tmp_dir, "no", "such", "dir", "chat.db")
    p = run_chatd(["--listen", "127.0.0.1:%d" % free_port(),
                   "--database", "sqlite:" + missing,
                   "--data-dir", data_dir()])
    assert p.returncode == 1, p
    one_error_line(p.stderr)
    assert not os.path.exists(missing)


def test_not_a_database_file(tmp_dir):
    path = os.path.join(tmp_dir, "junk.db")
    with open(path, "wb") as f:
        f.write(b"this is not a database file at all " * 100)
    p = run_chatd(["--listen", "127.0.0.1:%d" % free_port(),
                   "--database", "sqlite:" + path,
                   "--data-dir", data_dir()])
    assert p.returncode == 1, p
    one_error_line(p.stderr)


def _serves(port):
    try:
        return Client("127.0.0.1", port, timeout=2).health_ok()
    except OSError:
        return False


def test_listen_from_environment(tmp_dir):
    port = free_port()
    proc = ChatdProcess(tmp_dir, port=port, listen_flag=False,
                        env={"CHATD_LISTEN": "127.0.0.1:%d" % port})
    proc.start()
    try:
        assert _serves(port)
        lines = [ln for ln in proc.stderr_text().splitlines()
                 if "serving" in ln]
        assert lines == ["chatd: serving http://127.0.0.1:%d/ "
                         "(database sqlite:%s)" % (port, proc.db_path)], lines
    finally:
        assert proc.stop() == 0


def test_listen_flag_overrides_environment(tmp_dir):
    env_port = free_port()
    flag_port = free_port()
    while flag_port == env_port:
        flag_port = free_port()
    proc = ChatdProcess(tmp_dir, port=flag_port,
                        env={"CHATD_LISTEN": "127.0.0.1:%d" % env_port})
    proc.start()
    try:
        assert _serves(flag_port)
        assert not _serves(env_port)
    finally:
        assert proc.stop() == 0


def test_database_from_environment(tmp_dir):
    path = os.path.join(tmp_dir, "from-env.db")
    port = free_port()
    env = {"CHATD_DATABASE": "sqlite:" + path,
           "CHATD_DATA_DIR": data_dir(),
           "CHATD_LISTEN": "127.0.0.1:%d" % port}
    p = subprocess.Popen([chatd_bin()], env=clean_env(env),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        ok = False
        for _ in range(200):
            if _serves(port):
                ok = True
                break
            if p.poll() is not None:
                break
            time.sleep(0.05)
        assert ok, "chatd did not serve from its environment alone"
        assert os.path.exists(path)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
        err = p.stderr.read().decode()
        p.stderr.close()
    assert p.returncode == 0, err


def test_sigterm_and_sigint_exit_zero(tmp_dir):
    for signo in (signal.SIGTERM, signal.SIGINT):
        d = os.path.join(tmp_dir, str(int(signo)))
        os.mkdir(d)
        proc = ChatdProcess(d)
        proc.start()
        c = proc.client()
        u = c.new_user("sig")
        assert c.get("/api/me", token=u.token).status == 200
        assert proc.stop(signo) == 0, proc.stderr_text()


def test_data_survives_restart(tmp_dir):
    proc = ChatdProcess(tmp_dir)
    proc.start()
    c = proc.client()
    alice = c.new_user("keep")
    bob = c.new_user("keep")
    cid = c.conversation(alice, bob).json["conversation_id"]
    sent = c.send(alice, cid, "still here").json
    assert proc.stop() == 0
    proc2 = ChatdProcess(tmp_dir, port=free_port())
    proc2.start()
    try:
        c2 = proc2.client()
        # the session survives too: tokens live in the database
        r = c2.history(bob, cid)
        assert r.status == 200, r
        assert r.json["messages"] == [sent]
        assert c2.login(alice.username, alice.password).status == 200
    finally:
        assert proc2.stop() == 0


# -- migrate -------------------------------------------------------------------

def _migrate(tmp_dir, *args):
    env = {"CHATD_DATABASE": "sqlite:" + os.path.join(tmp_dir, "m.db"),
           "CHATD_DATA_DIR": data_dir()}
    return run_chatd(["migrate"] + list(args), env=env)


def test_migrate_status_up_status(tmp_dir):
    p = _migrate(tmp_dir, "status")
    assert p.returncode == 0, p
    out = p.stdout.decode().lower()
    assert "pending" in out, out
    assert "1" in out

    p = _migrate(tmp_dir, "up")
    assert p.returncode == 0, p

    p = _migrate(tmp_dir, "status")
    assert p.returncode == 0, p
    out = p.stdout.decode().lower()
    assert "applied" in out, out
    assert "pending" not in out or "0 pending" in out, out

    p = _migrate(tmp_dir, "verify")
    assert p.returncode == 0, p


def test_migrated_database_serves(tmp_dir):
    assert _migrate(tmp_dir, "up").returncode == 0
    proc = ChatdProcess(tmp_dir, database="sqlite:" +
                        os.path.join(tmp_dir, "m.db"))
    proc.start()
    try:
        c = proc.client()
        c.new_user("mig")
    finally:
        assert proc.stop() == 0
