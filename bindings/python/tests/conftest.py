"""A real taskhostd from the build tree, on a temporary config.

TASKHOST_BUILDDIR names the build tree (tests/test_python.sh sets it);
without it the tests are skipped, unless CI is set: then they fail.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import taskhost  # noqa: E402

BUILDDIR = os.environ.get("TASKHOST_BUILDDIR", "")
DEADLINE = 20.0

POOLS = """
pools = (
  { name = "echo"; plugin = "echo"; min_workers = 2; max_workers = 2;
    max_queue = 100000; },
  { name = "sleep"; plugin = "sleep"; min_workers = 2; max_workers = 2;
    max_queue = 100; },
  { name = "crash"; plugin = "crash"; min_workers = 1; max_workers = 1; },
  { name = "chatty"; plugin = "chatty"; min_workers = 2; max_workers = 2; }%s
);
"""


def _need_build() -> str:
    if not BUILDDIR:
        if os.environ.get("CI") == "true":
            pytest.fail("TASKHOST_BUILDDIR is not set")
        pytest.skip("TASKHOST_BUILDDIR is not set")
    return BUILDDIR


class Daemon:
    """taskhostd on a config of its own in a fresh directory."""

    def __init__(self, host_extra: str = "", extra_plugins: str = "",
                 extra_pools: str = "") -> None:
        build = _need_build()
        self.dir = tempfile.mkdtemp(prefix="taskhost-py.")
        self.sock = os.path.join(self.dir, "taskhost.sock")
        self.conf = os.path.join(self.dir, "taskhost.conf")
        self.log = os.path.join(self.dir, "taskhost.log")
        plugins = os.path.join(build, "plugins")
        self.plugin_list = ",\n".join(
            f'  {{ name = "{n}"; path = "{plugins}/{n}.so"; }}'
            for n in ("echo", "sleep", "crash"))
        self.plugin_list += (',\n  { name = "chatty"; path = "%s"; }' %
                             os.path.join(build, "tests", "plugins", ".libs",
                                          "chatty.so"))
        if extra_plugins:
            self.plugin_list += ",\n" + extra_plugins
        self.host_extra = host_extra
        self.pools = POOLS % ("," + extra_pools if extra_pools else "")
        self.write_conf(self.pools)
        self.proc = subprocess.Popen(
            [os.path.join(build, "host", "taskhostd"), "-c", self.conf, "-f"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"))
        end = time.monotonic() + DEADLINE
        while True:
            try:
                with taskhost.Client(self.sock) as c:
                    c.ping()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("taskhostd did not start:\n" + self.read_log())
                time.sleep(0.005)

    def write_conf(self, pools: str) -> None:
        with open(self.conf, "w") as f:
            f.write(f'host: {{ socket = "{self.sock}"; log = "{self.log}";\n'
                    f'  log_level = "info"; shutdown_timeout = 1.0; {self.host_extra} }};\n'
                    f"plugins = (\n{self.plugin_list}\n);\n{pools}")

    def read_log(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir], check=False)


@pytest.fixture(scope="session")
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def own_daemon():
    """A daemon of the test's own, for tests that stop or reconfigure it."""
    made = []

    def make(**kw):
        d = Daemon(**kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def client(daemon):
    with taskhost.Client(daemon.sock) as c:
        yield c


def wait_for(pred, what: str, limit: float = DEADLINE):
    end = time.monotonic() + limit
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
