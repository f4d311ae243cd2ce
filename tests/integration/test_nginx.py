"""deploy/nginx/chatd.conf in front of two chatd nodes (Redis mode).

The example is used as shipped except for what a deployment changes
anyway: the upstream's addresses (the two nodes), the listen address (a
free loopback port), the certificate (made here with openssl) and the
log path. Through it, over TLS: /health and /ready answer, /metrics does
not, X-Request-Id reaches chatd (the client's own, or nginx's), a JSON
413 still comes from chatd, and a chat works over WebSockets that nginx
spread over both nodes (messages, logout closing sockets with 1008).
With one node killed, the proxy keeps serving from the other.

Needs nginx and openssl (scripts/deps.sh test) and real Postgres and
Redis servers: it fails, never skips, without them.
"""

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess

import pytest
import websockets

from chatd_client import HEX32, Client, Response, wait_for
from conftest import ChatdCluster, free_port, require_cluster_servers
from ws_client import (FRAME_TIMEOUT, SUBPROTOCOL, WsSession,
                       check_message_frame, new_cmid, run)

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "..", "deploy", "nginx", "chatd.conf")


def tool(name):
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    path = shutil.which(name)
    if not path:
        pytest.fail("%s is not installed (run: scripts/deps.sh test)" % name)
    return path


def derive(text, prefix, port, node_ports, cert, key):
    """The example with this machine's addresses, certificate and log
    path. Each change must apply exactly once, so that a reshaped example
    fails here instead of being tested half-changed."""
    def sub(pattern, repl, s, flags=re.M):
        out, n = re.subn(pattern, repl, s, flags=flags)
        assert n == 1, "expected one match of %r in %s" % (pattern, EXAMPLE)
        return out

    m = re.search(r"^upstream chatd \{\n(.*?)^\}", text, re.M | re.S)
    assert m, "no `upstream chatd { ... }` in %s" % EXAMPLE
    body = m.group(1)
    old = re.findall(r"^\s*server\s+\S+:\d+[^;]*;\n", body, re.M)
    assert old, "no server lines in the upstream"
    new = "".join("    server 127.0.0.1:%d max_fails=3 fail_timeout=10s;\n"
                  % p for p in node_ports)
    body = body.replace(old[0], new, 1)
    for line in old[1:]:
        body = body.replace(line, "", 1)
    text = text[:m.start(1)] + body + text[m.end(1):]
    text = sub(r"^\s*listen 443 ssl;$", "    listen 127.0.0.1:%d ssl;" % port,
               text)
    text = sub(r"^\s*listen \[::\]:443 ssl;\n", "", text)
    text = sub(r"^(\s*ssl_certificate)\s+\S+;$", r"\1 %s;" % cert, text)
    text = sub(r"^(\s*ssl_certificate_key)\s+\S+;$", r"\1 %s;" % key, text)
    text = sub(r"^(\s*access_log)\s+\S+(\s+chatd;)$",
               r"\1 %s\2" % os.path.join(prefix, "access.log"), text)
    return text


class Nginx:
    """nginx in the foreground under a temporary prefix."""

    def __init__(self, prefix, site):
        self.prefix = prefix
        self.conf = os.path.join(prefix, "nginx.conf")
        with open(os.path.join(prefix, "chatd.conf"), "w") as f:
            f.write(site)
        temp = "".join("    %s_temp_path %s;\n" % (k, os.path.join(prefix, k))
                       for k in ("client_body", "proxy", "fastcgi", "uwsgi",
                                 "scgi"))
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(self.conf, "w") as f:
            f.write("%spid %s;\nerror_log %s info;\nworker_processes 1;\n"
                    "events { worker_connections 512; }\n"
                    "http {\n    access_log off;\n%s    include %s;\n}\n"
                    % (user, os.path.join(prefix, "nginx.pid"),
                       os.path.join(prefix, "error.log"), temp,
                       os.path.join(prefix, "chatd.conf")))
        self.argv = [tool("nginx"), "-p", prefix, "-c", self.conf,
                     "-e", os.path.join(prefix, "error.log")]
        self.proc = None

    def check(self):
        r = subprocess.run(self.argv + ["-t"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, "nginx -t: %s%s" % (r.stdout, r.stderr)

    def start(self):
        self.proc = subprocess.Popen(self.argv + ["-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)      # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()

    def error_log(self):
        try:
            with open(os.path.join(self.prefix, "error.log")) as f:
                return f.read()
        except OSError:
            return ""

    def access_log(self):
        try:
            with open(os.path.join(self.prefix, "access.log")) as f:
                return f.read()
        except OSError:
            return ""


class TlsClient(Client):
    """The test Client over HTTPS, trusting the test's certificate."""

    def __init__(self, host, port, context, timeout=30.0):
        super().__init__(host, port, timeout)
        self.context = context

    def request(self, method, path, body=None, token=None, headers=None,
                raw=None):
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
        conn = http.client.HTTPSConnection(self.host, self.port,
                                           timeout=self.timeout,
                                           context=self.context)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Response(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()


@pytest.fixture
def proxied(tmp_dir):
    """Two chatd nodes behind nginx: (cluster, nginx, https client, wss
    URL, browser origin)."""
    require_cluster_servers()
    nginx_bin = tool("nginx")
    openssl = tool("openssl")
    prefix = os.path.join(tmp_dir, "nginx")
    os.makedirs(prefix)
    cert = os.path.join(prefix, "cert.pem")
    key = os.path.join(prefix, "key.pem")
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    port = free_port()
    origin = "https://127.0.0.1:%d" % port
    cluster = ChatdCluster(os.path.join(tmp_dir, "nodes"), n=2,
                           args=["--allowed-origin", origin])
    nginx = None
    try:
        cluster.start()
        with open(EXAMPLE) as f:
            site = derive(f.read(), prefix, port,
                          [nd.port for nd in cluster.nodes], cert, key)
        nginx = Nginx(prefix, site)
        assert nginx_bin == nginx.argv[0]
        nginx.check()
        nginx.start()
        ctx = ssl.create_default_context(cafile=cert)
        client = TlsClient("127.0.0.1", port, ctx)

        def up():
            if nginx.proc.poll() is not None:
                return True
            try:
                return client.get("/health").status == 200
            except OSError:
                return False
        assert wait_for(up, 10.0), nginx.error_log()
        assert nginx.proc.poll() is None, nginx.error_log()
        yield cluster, nginx, client, "wss://127.0.0.1:%d/ws" % port, origin
    finally:
        if nginx is not None:
            nginx.stop()
        cluster.close()


async def wss(url, context, origin, token):
    conn = await asyncio.wait_for(websockets.connect(
        url, ssl=context, subprotocols=[SUBPROTOCOL], origin=origin,
        max_queue=None, compression=None, ping_interval=None,
        close_timeout=2, open_timeout=FRAME_TIMEOUT), FRAME_TIMEOUT + 1)
    s = WsSession(conn)
    await s.auth(token)
    return s


def test_service_routes_and_request_ids_through_nginx(proxied):
    cluster, nginx, c, _, _ = proxied
    r = c.get("/health")
    assert r.status == 200 and r.json == {"status": "ok"}, r
    r = c.get("/ready")
    assert r.status == 200, r
    assert r.json == {"status": "ok",
                      "checks": {"database": "ok", "redis": "ok"}}, r
    assert c.get("/").status == 200
    # /metrics is not public; each node still serves its own
    assert c.get("/metrics").status == 404
    for nd in cluster.nodes:
        assert nd.client().get("/metrics").status == 200

    # the client's X-Request-Id reaches chatd and comes back
    rid = "via-nginx-" + os.urandom(6).hex()
    r = c.get("/health", headers={"X-Request-Id": rid})
    assert r.header("X-Request-Id") == rid, r.header_list
    ev = cluster.wait_event(lambda e: e.get("event_type") == "api_request"
                            and e.get("trace_id") == rid)
    assert ev is not None, "no chatd log line with trace_id %s" % rid
    # without one, nginx's own id is the one chatd uses
    r = c.get("/health")
    gen = r.header("X-Request-Id")
    assert gen and HEX32.match(gen), r.header_list
    assert wait_for(lambda: "rid=%s " % gen in nginx.access_log(), 5.0), \
        (gen, nginx.access_log()[-2000:])


def test_too_large_body_gets_chatds_json_413_through_nginx(proxied):
    """The example lets bodies up to 128k through so that chatd, not
    nginx, refuses those over its 64 KiB limit, with its JSON error. (That
    needs chatd to let the proxy finish sending the body before it closes
    the connection: a proxy whose write fails answers 502 instead.)"""
    _, nginx, c, _, _ = proxied
    for size in (70000, 120000) * 5:
        r = c.request("POST", "/api/register", raw=b"x" * size)
        assert r.status == 413, (r, [ln for ln in nginx.error_log(
        ).splitlines() if "[error]" in ln][-3:])
        assert r.error_code() == "payload_too_large", r


def test_chat_over_websockets_spread_by_nginx(proxied):
    cluster, nginx, c, url, origin = proxied
    alice = c.new_user("na")
    bob = c.new_user("nb")
    r = c.conversation(alice, bob)
    assert r.status == 201, r
    cid = r.json["conversation_id"]
    before = {nd.name: sum(1 for e in nd.log_events()
                           if e.get("event_type") == "ws_connect")
              for nd in cluster.nodes}

    async def go():
        a1 = await wss(url, c.context, origin, alice.token)
        b1 = await wss(url, c.context, origin, bob.token)
        a2 = await wss(url, c.context, origin, alice.token)
        b2 = await wss(url, c.context, origin, bob.token)
        ack = await a1.send_message(cid, "through the proxy", new_cmid("n"))
        for s in (a2, b1, b2):
            m = check_message_frame(await s.expect("message"), cid, alice)
            assert (m["message_id"], m["seq"]) == (ack["message_id"],
                                                   ack["seq"])
        await a1.expect_quiet("message")
        # logout over HTTP through nginx closes bob's sockets, wherever
        # nginx put them, with 1008
        r = await asyncio.to_thread(c.post, "/api/logout", token=bob.token)
        assert r.status == 204, r
        assert await b1.expect_close() == 1008
        assert await b2.expect_close() == 1008
        await a1.ping()
        await asyncio.gather(a1.close(), a2.close())

    run(go())
    # least_conn spread the four sockets over both nodes
    after = {nd.name: sum(1 for e in nd.log_events()
                          if e.get("event_type") == "ws_connect")
             for nd in cluster.nodes}
    assert all(after[n] > before[n] for n in after), (before, after)


def test_proxy_keeps_serving_when_a_node_dies(proxied):
    cluster, nginx, c, url, origin = proxied
    alice = c.new_user("nd")
    bob = c.new_user("ne")
    cid = c.conversation(alice, bob).json["conversation_id"]
    cluster.nodes[1].kill()
    for _ in range(10):
        r = c.get("/api/me", token=alice.token)
        assert r.status == 200, r

    async def go():
        b = await wss(url, c.context, origin, bob.token)
        a = await wss(url, c.context, origin, alice.token)
        ack = await a.send_message(cid, "one node left")
        m = check_message_frame(await b.expect("message"), cid, alice)
        assert m["message_id"] == ack["message_id"]
        await asyncio.gather(a.close(), b.close())

    run(go())
    assert cluster.nodes[0].stop() == 0
