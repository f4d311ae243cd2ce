"""Fixtures for the integration tests: a real chatd on a loopback port.

The `server` fixture starts one chatd per test module and backend, waits
until GET /health answers, and at the end sends SIGTERM and checks that
the process exits 0. Every module runs on the embedded default (a SQLite
file in a fresh temporary directory) and, when CHATD_TEST_PG_URL names a
Postgres server, once more on Postgres: on a database of its own, created
through the server's maintenance database `postgres`, migrated with
`chatd migrate up` (chatd refuses a schema that is behind) and dropped at
the end. Test ids carry the backend: test_x[sqlite], test_x[postgres].
Its stdout (the JSON log) and stderr go to files in the same directory,
so tests can read what the server logged.

Tests that need a process of their own (command line, startup errors,
logs after shutdown) use `ChatdProcess` directly.

Environment: CHATD_BIN is the built chatd, CHATD_TEST_DATA_DIR the source
tree (passed as --data-dir, for migrations/ and web/), CHATD_TEST_PG_URL
(optional) a Postgres server the tests may create databases on.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chatd_client import Client  # noqa: E402

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def chatd_bin():
    path = os.environ.get("CHATD_BIN")
    if not path:
        pytest.fail("CHATD_BIN is not set: the path of the built chatd")
    if not os.access(path, os.X_OK):
        pytest.fail("CHATD_BIN=%s is not an executable" % path)
    return path


def data_dir():
    path = os.environ.get("CHATD_TEST_DATA_DIR")
    if not path:
        pytest.fail("CHATD_TEST_DATA_DIR is not set: the source tree root")
    return path


def clean_env(extra=None):
    """The environment for a chatd: ours without any CHATD_* settings, so
    a developer's shell cannot change what a test sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    if extra:
        env.update(extra)
    return env


def free_port():
    """A loopback port that was free a moment ago."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# Every process started, so that a failing test leaves none running.
_started = []


class ChatdProcess:
    """One chatd process with its own temporary directory."""

    def __init__(self, tmpdir, port=None, args=None, env=None,
                 listen_flag=True, database=None):
        self.tmpdir = tmpdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.db_path = os.path.join(tmpdir, "chat.db")
        self.database = database or ("sqlite:" + self.db_path)
        self.stdout_path = os.path.join(tmpdir, "stdout.log")
        self.stderr_path = os.path.join(tmpdir, "stderr.log")
        argv = [chatd_bin(), "--database", self.database,
                "--data-dir", data_dir(), "--log-level", "debug"]
        if listen_flag:
            argv += ["--listen", "%s:%d" % (self.host, self.port)]
        argv += list(args or [])
        self.argv = argv
        self.env = clean_env(env)
        self.proc = None
        self.returncode = None

    @property
    def base_url(self):
        return "http://%s:%d" % (self.host, self.port)

    def client(self):
        return Client(self.host, self.port)

    def start(self, wait=True):
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._out,
                                     stderr=self._err, stdin=subprocess.DEVNULL,
                                     env=self.env)
        _started.append(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_files()
                pytest.fail("chatd exited with %d before serving; stderr:\n%s"
                            % (self.proc.returncode, self.stderr_text()))
            try:
                r = client.get("/health")
                if r.status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        pytest.fail("chatd did not answer GET /health within %.0f s; "
                    "stderr:\n%s" % (timeout, self.stderr_text()))

    def stop(self, signo=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends signo, waits for the exit, returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signo)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self._close_files()
                pytest.fail("chatd did not exit within %.0f s of signal %d"
                            % (timeout, signo))
        self.returncode = self.proc.returncode
        self._close_files()
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _close_files(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    def stdout_bytes(self):
        with open(self.stdout_path, "rb") as f:
            return f.read()

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self):
        """The complete stdout lines so far (a partial last line is left
        out: the writer may be in the middle of it)."""
        data = self.stdout_bytes().decode("utf-8", "replace")
        lines = data.split("\n")
        return [ln for ln in lines[:-1] if ln.strip()]

    def log_events(self):
        """Every stdout line parsed as JSON; a line that does not parse
        fails the calling test."""
        events = []
        for ln in self.log_lines():
            try:
                events.append(json.loads(ln))
            except ValueError:
                pytest.fail("stdout line is not JSON: %r" % ln)
        return events

    def wait_event(self, predicate, timeout=5.0):
        """The first logged event for which predicate is true, waiting for
        the log writer; None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.log_events():
                if isinstance(ev, dict) and predicate(ev):
                    return ev
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def backends():
    """The backends every module runs on: SQLite always, Postgres when the
    harness started one."""
    names = ["sqlite"]
    if os.environ.get("CHATD_TEST_PG_URL"):
        names.append("postgres")
    return names


def pg_url(dbname):
    """CHATD_TEST_PG_URL with its database name replaced by dbname."""
    base = os.environ["CHATD_TEST_PG_URL"]
    scheme, sep, rest = base.partition("://")
    rest, qsep, query = rest.partition("?")
    host = rest.split("/", 1)[0]
    return "%s%s%s/%s%s%s" % (scheme, sep, host, dbname, qsep, query)


def pg_admin(sql):
    """Runs one statement on the maintenance database with psql."""
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        pg_url("postgres"), "-c", sql],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env(), timeout=60)
    if r.returncode != 0:
        pytest.fail("psql %r failed: %s" % (sql, r.stdout.decode(
            "utf-8", "replace")))


def pg_database():
    """A new, migrated Postgres database: (its name, its URL)."""
    name = "chatd_it_%d_%s" % (os.getpid(), uuid.uuid4().hex[:8])
    pg_admin("CREATE DATABASE %s" % name)
    url = pg_url(name)
    r = subprocess.run([chatd_bin(), "--database", url, "--data-dir",
                        data_dir(), "migrate", "up"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=clean_env(), timeout=60)
    if r.returncode != 0:
        pg_admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        pytest.fail("chatd migrate up exited %d: %s" % (
            r.returncode, r.stdout.decode("utf-8", "replace")))
    return name, url


@pytest.fixture(scope="module", params=backends())
def server(request):
    """One chatd for the whole module on one backend, stopped (and
    checked) at the end."""
    tmpdir = tempfile.mkdtemp(prefix="chatd-it-")
    dbname, database = None, None
    if request.param == "postgres":
        dbname, database = pg_database()
    proc = ChatdProcess(tmpdir, database=database)
    proc.backend = request.param
    try:
        proc.start()
        yield proc
        if proc.proc.poll() is not None:
            code = proc.proc.returncode
            proc._close_files()
            pytest.fail("chatd died during the module (exit %s); stderr:\n%s"
                        % (code, proc.stderr_text()))
        code = proc.stop()
        if code != 0:
            pytest.fail("chatd exited %s after SIGTERM, expected 0; "
                        "stderr:\n%s" % (code, proc.stderr_text()))
    finally:
        proc.kill()
        proc._close_files()
        shutil.rmtree(tmpdir, ignore_errors=True)
        if dbname is not None:
            pg_admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % dbname)


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(autouse=True)
def reap_test_processes():
    """Kills what a test started itself and left running (module servers
    are started before this snapshot and are left alone)."""
    before = len(_started)
    yield
    for proc in _started[before:]:
        proc.kill()
        proc._close_files()
    del _started[before:]


@pytest.fixture
def tmp_dir():
    """A temporary directory for a test's own chatd, removed afterwards."""
    d = tempfile.mkdtemp(prefix="chatd-it-")
    yield d
    shutil.rmtree(d, ignore_errors=True)
