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

When CHATD_TEST_REDIS_URL names a Redis server as well, every module runs
a third time on "cluster": two chatd nodes in Redis mode on one Postgres
database (`ChatdCluster`), where each WebSocket the tests open and each
HTTP request they make goes to the next node in turn, so the protocol
suite runs with its clients spread over two nodes; its log helpers read
both nodes' logs. A module that cannot run there for a reason that is not
a server bug (it expects the /ready body of a chatd without Redis, one
process's /metrics, a restart) says so with a module-level
`pytestmark = pytest.mark.single_node("why")`; its tests are then
deselected on "cluster".

Environment: CHATD_BIN is the built chatd, CHATD_TEST_DATA_DIR the source
tree (passed as --data-dir, for migrations/ and web/), CHATD_TEST_PG_URL
(optional) a Postgres server the tests may create databases on,
CHATD_TEST_REDIS_URL (optional) a Redis server the tests may flush
databases 1 to 13 of (14 is check_bus_redis's, which `make -j check` may
run at the same time).
"""

import itertools
import json
import os
import random
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

from chatd_client import Client, wait_for  # noqa: E402

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
    """A loopback port that was free a moment ago, taken below the kernel's
    ephemeral range (32768 and up by default) when one is free there: the
    outgoing connections that chatd and the servers open meanwhile get
    their local ports from that range, so they cannot take it before the
    process that is to listen on it does."""
    for _ in range(50):
        port = random.randint(20000, 32000)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
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


def cluster_available():
    """Both servers a cluster needs are there."""
    return bool(os.environ.get("CHATD_TEST_PG_URL")
                and os.environ.get("CHATD_TEST_REDIS_URL"))


def server_params():
    """What the `server` fixture runs on: backends(), and "cluster" when
    both Postgres and Redis are there."""
    names = backends()
    if cluster_available():
        names.append("cluster")
    return names


@pytest.fixture(scope="module", params=server_params())
def server(request):
    """One chatd for the whole module on one backend, stopped (and
    checked) at the end."""
    if request.param == "cluster":
        yield from _cluster_server()
        return
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


# -- several nodes: Redis mode -------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "single_node(reason): the module cannot run on the "
        "two-node `cluster` server (it reads one process's log or "
        "/metrics, restarts the server, ...); its tests are deselected "
        "there")


def pytest_collection_modifyitems(config, items):
    """Deselects the "cluster" instances of tests in single_node modules
    (deselected, not skipped: there is nothing to run)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (callspec is not None
                and callspec.params.get("server") == "cluster"
                and item.get_closest_marker("single_node") is not None):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def require_cluster_servers():
    """Fails (never skips) a test that needs Postgres and Redis when the
    harness did not start them."""
    missing = [v for v in ("CHATD_TEST_PG_URL", "CHATD_TEST_REDIS_URL")
               if not os.environ.get(v)]
    if missing:
        pytest.fail("%s not set: this test needs real Postgres and Redis "
                    "servers (tests/servers.sh start DIR)"
                    % " and ".join(missing))


def parse_redis_url(url):
    """redis://[:password@]host:port[/db] -> (host, port, password, db)."""
    if not url.startswith("redis://"):
        raise ValueError("not a redis:// URL: %r" % url)
    rest = url[len("redis://"):]
    password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = auth.split(":", 1)[1] if ":" in auth else auth
    hostport, _, db = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return host or "127.0.0.1", int(port or 6379), password, int(db or 0)


def redis_url_with_db(url, db):
    host, port, password, _ = parse_redis_url(url)
    auth = ":%s@" % password if password else ""
    return "redis://%s%s:%d/%d" % (auth, host, port, db)


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode("utf-8", "replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise OSError("bad reply from redis: %r" % line[:100])


class RedisError(Exception):
    pass


def redis_command(url, *args, timeout=5.0):
    """Runs one command on the Redis at url (its db selected) over a fresh
    connection; returns the reply (bulk strings as bytes)."""
    host, port, password, db = parse_redis_url(url)
    cmds = []
    if password:
        cmds.append(("AUTH", password))
    if db:
        cmds.append(("SELECT", str(db)))
    cmds.append(args)
    out = b""
    for c in cmds:
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in c]
        out += b"*%d\r\n" % len(parts)
        for a in parts:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(out)
        f = sock.makefile("rb")
        replies = [_resp_read(f) for _ in cmds]
    return replies[-1]


# Databases 1..13 of the test Redis, in turn, so that one cluster's
# presence and cache keys never meet the next one's. 0 is left to others,
# 14 is the unit tests' (tests/unit/check_bus_redis.c), 15 is spare.
_redis_dbs = itertools.cycle(range(1, 14))


def redis_test_db():
    """CHATD_TEST_REDIS_URL with the next of its databases 1..13, emptied
    (FLUSHDB). chatd names its pub/sub channel after the database
    (chatd:bus:DB), so clusters on different databases do not hear each
    other; two on one database would."""
    require_cluster_servers()
    url = redis_url_with_db(os.environ["CHATD_TEST_REDIS_URL"],
                            next(_redis_dbs))
    try:
        assert redis_command(url, "FLUSHDB") == "OK"
    except (OSError, RedisError) as exc:
        pytest.fail("cannot FLUSHDB %s: %s" % (url, exc))
    return url


def cluster_ports(n):
    """n free loopback ports, no two adjacent (the origin tests treat
    port + 1 as a foreign origin)."""
    ports = []
    while len(ports) < n:
        p = free_port()
        if all(abs(p - q) > 1 for q in ports):
            ports.append(p)
    return ports


class ClusterClient(Client):
    """A Client whose every request goes to the next node of a cluster."""

    def __init__(self, cluster, timeout=30.0):
        self.cluster = cluster
        self.host = cluster.host
        self.timeout = timeout
        self._turn = itertools.count()

    @property
    def port(self):
        nodes = self.cluster.live_nodes()
        return nodes[next(self._turn) % len(nodes)].port

    def raw_request(self, *args, **kw):
        # one node for both the Host header and the connection
        return Client(self.host, self.port, self.timeout).raw_request(
            *args, **kw)


class ChatdCluster:
    """n chatd nodes in Redis mode sharing one Postgres database and one
    Redis database, each a ChatdProcess in a directory of its own.

    database: a postgresql:// URL, or None for a fresh migrated database
    of CHATD_TEST_PG_URL's server (dropped by close()). redis: a redis://
    URL, or None for the next emptied database of CHATD_TEST_REDIS_URL.
    presence_ttl: --presence-ttl for every node (None: chatd's default).
    Each node has --node-id nodeI and allows the browser origins of every
    node, so a socket may be opened on any node with any node's origin.

    It stands in for a ChatdProcess where the `server` fixture is used:
    `port` (and so ws_uri(), RawWs.to()) and client() take turns among
    the live nodes; the log helpers read every node's log together.
    nodes[i] (or node(i)) is one node, for tests that choose.
    """

    backend = "cluster"

    def __init__(self, tmpdir, n=2, database=None, redis=None,
                 presence_ttl=None, args=None, env=None):
        require_cluster_servers()
        self.tmpdir = tmpdir
        self.host = "127.0.0.1"
        self.dbname = None
        if database is None:
            self.dbname, database = pg_database()
        self.database = database
        self.redis = redis or redis_test_db()
        self.presence_ttl = presence_ttl
        ports = cluster_ports(n)
        origins = []
        for p in ports:
            origins += ["--allowed-origin", "http://127.0.0.1:%d" % p,
                        "--allowed-origin", "http://localhost:%d" % p]
        self.nodes = []
        for i, port in enumerate(ports):
            d = os.path.join(tmpdir, "node%d" % i)
            os.makedirs(d, exist_ok=True)
            argv = ["--redis", self.redis, "--node-id", "node%d" % i]
            if presence_ttl is not None:
                argv += ["--presence-ttl", str(presence_ttl)]
            argv += origins + list(args or [])
            node = ChatdProcess(d, port=port, args=argv, database=database,
                                env=env)
            node.backend = "cluster"
            node.name = "node%d" % i
            self.nodes.append(node)
        self._turn = itertools.count()

    # -- one node, or the next one ----------------------------------------

    def node(self, i):
        return self.nodes[i]

    def live_nodes(self):
        live = [nd for nd in self.nodes
                if nd.proc is not None and nd.proc.poll() is None]
        return live or self.nodes

    @property
    def port(self):
        nodes = self.live_nodes()
        return nodes[next(self._turn) % len(nodes)].port

    @property
    def base_url(self):
        return "http://%s:%d" % (self.host, self.port)

    def client(self):
        return ClusterClient(self)

    # -- life -------------------------------------------------------------

    def start(self, ready_timeout=START_TIMEOUT):
        """Starts every node, waits for GET /health on each, then for GET
        /ready 200 on each (its database and Redis both answer), so that
        no test starts before every node is subscribed."""
        for nd in self.nodes:
            nd.start()
        for nd in self.nodes:
            self.wait_node_ready(nd, ready_timeout)
        return self

    @staticmethod
    def wait_node_ready(node, timeout=START_TIMEOUT):
        c = node.client()
        last = []

        def ready():
            try:
                r = c.get("/ready")
            except OSError as exc:
                last[:] = [exc]
                return False
            last[:] = [r]
            return r.status == 200
        if not wait_for(ready, timeout, 0.05):
            pytest.fail("%s: GET /ready not 200 within %.0f s (last: %r); "
                        "stderr:\n%s" % (getattr(node, "name", "node"),
                                          timeout, last, node.stderr_text()))

    def stop(self, signo=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Stops every node still running; returns their exit codes (None
        for a node never started)."""
        return [nd.stop(signo, timeout) for nd in self.nodes]

    def kill(self):
        for nd in self.nodes:
            nd.kill()

    def _close_files(self):
        for nd in self.nodes:
            nd._close_files()

    def close(self):
        """Kills what still runs and drops the database it created."""
        self.kill()
        self._close_files()
        if self.dbname is not None:
            pg_admin("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.dbname)
            self.dbname = None

    def dead_nodes(self):
        """(name, exit code, stderr) of every started node that exited."""
        return [(nd.name, nd.proc.returncode, nd.stderr_text())
                for nd in self.nodes
                if nd.proc is not None and nd.proc.poll() is not None]

    # -- what the nodes logged, all together --------------------------------

    def stdout_bytes(self):
        return b"".join(nd.stdout_bytes() for nd in self.nodes)

    def stderr_text(self):
        return "".join("--- %s ---\n%s" % (nd.name, nd.stderr_text())
                       for nd in self.nodes)

    def log_lines(self):
        return [ln for nd in self.nodes for ln in nd.log_lines()]

    def log_events(self):
        return [ev for nd in self.nodes for ev in nd.log_events()]

    def wait_event(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.log_events():
                if isinstance(ev, dict) and predicate(ev):
                    return ev
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def _cluster_server():
    """The `server` fixture on "cluster": two nodes, started, and checked
    at the end as a single chatd is (alive, exit 0 on SIGTERM)."""
    tmpdir = tempfile.mkdtemp(prefix="chatd-it-")
    cluster = None
    try:
        cluster = ChatdCluster(tmpdir, n=2)
        cluster.start()
        yield cluster
        dead = cluster.dead_nodes()
        if dead:
            pytest.fail("chatd died during the module: %s" % "; ".join(
                "%s exit %s, stderr:\n%s" % d for d in dead))
        codes = cluster.stop()
        if any(c != 0 for c in codes):
            pytest.fail("chatd nodes exited %s after SIGTERM, expected 0; "
                        "stderr:\n%s" % (codes, cluster.stderr_text()))
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
