"""A real Prometheus scrapes chatd, and the monitoring guide's queries
return data through its HTTP API.

Debian's `prometheus` (the server, not a client library) runs with a
generated configuration: one job `chatd`, scraped every second, storage in
a temporary directory, on a free loopback port. After a little traffic
(messages, a 404, no 5xx) the test asks Prometheus for `up`, the message
rate, the error rate and the p95 latency. Prometheus is stopped at the end
whatever happens, and every wait is bounded so the test finishes within a
minute. A missing `prometheus` binary fails the test: it is part of the
test dependencies.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import ChatdProcess, free_port
from ws_client import RawWs, new_cmid

PROMETHEUS = "/usr/bin/prometheus"
DEADLINE = 55.0                  # the whole test, in seconds


class Prometheus:
    def __init__(self, tmpdir, target):
        self.port = free_port()
        self.dir = os.path.join(tmpdir, "prometheus")
        os.makedirs(os.path.join(self.dir, "data"))
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: chatd\n"
                    "    metrics_path: /metrics\n"
                    "    static_configs:\n"
                    "      - targets: ['%s']\n" % target)
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + self.config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.dir)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-3000:]
        except OSError:
            return ""

    def get(self, path, timeout=3.0):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()

    def wait_ready(self, deadline):
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("prometheus exited with %d:\n%s"
                            % (self.proc.returncode, self.log()))
            try:
                status, _ = self.get("/-/ready")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail("prometheus was not ready in time:\n" + self.log())

    def query(self, expr):
        """The result list of an instant query (the API must say success)."""
        status, body = self.get("/api/v1/query?" +
                                urllib.parse.urlencode({"query": expr}))
        doc = json.loads(body)
        assert status == 200 and doc.get("status") == "success", doc
        assert doc["data"]["resultType"] == "vector", doc
        return doc["data"]["result"]

    def wait_query(self, expr, deadline, accept=lambda res: bool(res)):
        """Polls an instant query until accept(result) is true."""
        res = None
        while True:
            res = self.query(expr)
            if accept(res):
                return res
            if time.monotonic() >= deadline:
                raise AssertionError("%s: no acceptable result in time, "
                                     "last %r\n%s" % (expr, res, self.log()))
            time.sleep(0.5)


def value(res):
    assert len(res) == 1, res
    return float(res[0]["value"][1])


def traffic(c, alice, bob, cid, n):
    for i in range(n):
        r = c.send(alice, cid, "scraped %d" % i)
        assert r.status == 201, r
    assert c.history(bob, cid).status == 200
    assert c.get("/api/no-such-thing").status == 404


def test_prometheus_scrapes_chatd_and_the_guide_queries_work(tmp_dir):
    assert os.access(PROMETHEUS, os.X_OK), (
        "%s is missing: install Debian's prometheus package" % PROMETHEUS)
    deadline = time.monotonic() + DEADLINE
    proc = ChatdProcess(tmp_dir, args=["--collect-interval-ms", "1000"])
    proc.start()
    prom = Prometheus(tmp_dir, "%s:%d" % (proc.host, proc.port))
    try:
        prom.start()
        prom.wait_ready(min(deadline, time.monotonic() + 25))
        c = proc.client()
        alice = c.new_user("pra")
        bob = c.new_user("prb")
        cid = c.conversation(alice, bob).json["conversation_id"]

        # the first scrapes, then traffic spread over several of them so
        # that rates have two different samples to work with
        prom.wait_query('up{job="chatd"} == 1', deadline)
        traffic(c, alice, bob, cid, 3)
        ws = RawWs.to(proc, timeout=5)
        ws.open(token=bob.token)
        ws.send_json({"type": "send", "conversation_id": cid,
                      "body": "over the socket", "client_msg_id":
                      new_cmid("pr")})
        assert ws.expect("ack")["type"] == "ack"
        time.sleep(2.2)
        traffic(c, alice, bob, cid, 3)

        up = prom.wait_query('up{job="chatd"}', deadline)
        assert value(up) == 1, up
        assert up[0]["metric"]["instance"] == "%s:%d" % (proc.host,
                                                         proc.port)

        rate = prom.wait_query("rate(chat_messages_created_total[1m]) > 0",
                               deadline)
        assert value(rate) > 0, rate
        rate5 = prom.wait_query("rate(chat_messages_created_total[5m])",
                                deadline, lambda r: r and value(r) > 0)
        assert value(rate5) > 0, rate5

        # The guide's error rate. Without a single 5xx there is no
        # numerator series, and Prometheus answers an empty vector; the
        # query must still evaluate, and the usual `or vector(0)` form
        # gives a number: exactly 0, as this run answered no 5xx.
        guide = ('sum(rate(http_requests_total{status=~"5.."}[1m])) / '
                 'sum(rate(http_requests_total[1m]))')
        res = prom.query(guide)
        assert res == [] or 0 <= value(res) <= 1, res
        err = prom.wait_query(
            '(sum(rate(http_requests_total{status=~"5.."}[1m])) or '
            'vector(0)) / sum(rate(http_requests_total[1m]))', deadline,
            lambda r: r and not math.isnan(value(r)))
        assert value(err) == 0, err
        notfound = prom.wait_query(
            'sum(increase(http_requests_total{status="404"}[1m]))',
            deadline, lambda r: r and value(r) > 0)
        assert value(notfound) > 0, notfound

        p95 = prom.wait_query(
            "histogram_quantile(0.95, sum by (le) "
            "(rate(http_request_duration_seconds_bucket[1m])))", deadline,
            lambda r: r and math.isfinite(value(r)))
        assert 0 <= value(p95) <= 10, p95

        # the collector's gauges arrive through the same scrape
        users = prom.wait_query("chat_users", deadline,
                                lambda r: r and value(r) == 2)
        assert value(users) == 2, users
        ws.close()
        assert time.monotonic() < deadline, "took longer than %.0f s" \
            % DEADLINE
    finally:
        prom.stop()
        code = proc.stop()
        shutil.rmtree(prom.dir, ignore_errors=True)
    assert code == 0, proc.stderr_text()
