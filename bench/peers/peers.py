"""bench/peers: taskhost through its Python and Node.js clients against the
pools those languages already have, measured in the same run.

    python3 peers.py BUILDDIR [-s SECONDS] [-o FILE]

Starts taskhostd from BUILDDIR on a temporary config (an echo pool and a
SHA-256 pool of 2 workers each; the CPU-bound task is SHA-256 over a
buffer of a size that OpenSSL hashes in about 5 ms here, bench/peers/
shabuf.c, and every peer hashes as many bytes through OpenSSL), then:

* from this one Python process: no-op tasks at 256 in flight and the
  5 ms tasks (4 in flight on 2 workers) through taskhost.Client, against
  concurrent.futures.ProcessPoolExecutor and multiprocessing.Pool (2
  processes) running the same;
* from one Node.js process (node_bench.js): the same through the Node.js
  client against Piscina (2 threads), if node and Piscina are there
  (BUILDDIR/bench/node, installed by `make bench-peers`).

Every figure is the median of 3 runs of SECONDS each, the contestants
taking turns. Prints a table with the targets and whether they were met.
"""

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bindings", "python", "src"))

import taskhost  # noqa: E402

WINDOW_NOOP = 256
WINDOW_CPU = 4
TASK_MS = 5.0


# ---- the Python peers' task functions (module level: picklable) ----

def noop(x):
    return x


_BUF = [b""]


def sha(size):
    """What bench/peers/shabuf.c does: SHA-256 over `size` bytes of 't'
    held by the worker, then the input."""
    if len(_BUF[0]) != size:
        _BUF[0] = b"t" * size
    h = hashlib.sha256(_BUF[0])
    h.update(b"taskhost")
    return h.hexdigest()


def calibrate_size():
    """Bytes that SHA-256 takes TASK_MS over here, through OpenSSL."""
    size = 4 << 20
    best = min(_timed(lambda: sha(size)) for _ in range(7))
    return max(4096, int(size * TASK_MS / 1e3 / best))


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---- driving: `window` tasks in flight for `seconds` ----

def drive(submit, window, seconds):
    """submit(callback) starts one task whose end calls callback(), from
    any thread (or at once, from inside submit); keeps `window` in flight
    for `seconds`; returns tasks/s."""
    lock = threading.Lock()
    state = {"done": 0, "inflight": window, "stop": False}
    finished = threading.Event()

    def end(*_):
        with lock:
            state["done"] += 1
            again = not state["stop"]
            if not again:
                state["inflight"] -= 1
                if state["inflight"] == 0:
                    finished.set()
        if again:
            submit(end)  # not under the lock: a callback may run at once

    t0 = time.perf_counter()
    for _ in range(window):
        submit(end)
    time.sleep(seconds)
    with lock:
        state["stop"] = True
    if not finished.wait(120):
        raise SystemExit("bench/peers: tasks did not finish")
    return state["done"] / (time.perf_counter() - t0)


def median(v):
    return sorted(v)[len(v) // 2]


def single(run, n=5):
    """The fastest of n runs of one task at a time, in seconds."""
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


# ---- the daemon ----

class Daemon:
    def __init__(self, build):
        self.build = build
        self.dir = tempfile.mkdtemp(prefix="taskhost-peers.")
        self.sock = os.path.join(self.dir, "taskhost.sock")
        self.conf = os.path.join(self.dir, "taskhost.conf")
        self.log = os.path.join(self.dir, "taskhost.log")

    def write(self, pools):
        p = os.path.join(self.build, "plugins")
        with open(self.conf, "w") as f:
            f.write(f'host: {{ socket = "{self.sock}"; log = "{self.log}"; }};\n'
                    f'plugins = ( {{ name = "echo"; path = "{p}/echo.so"; }},\n'
                    f'  {{ name = "shabuf"; path = "{self.build}/bench/peers/.libs/shabuf.so"; }} );\n'
                    f"pools = ({pools});\n")

    def start(self):
        self.proc = subprocess.Popen(
            [os.path.join(self.build, "host", "taskhostd"), "-c", self.conf, "-f"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        end = time.monotonic() + 20
        while True:
            try:
                with taskhost.Client(self.sock) as c:
                    c.ping()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    raise SystemExit("taskhostd did not start; see " + self.log)
                time.sleep(0.01)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def pool(name, plugin, workers, settings=""):
    s = f' settings = {{ {settings} }};' if settings else ""
    return (f'{{ name = "{name}"; plugin = "{plugin}"; min_workers = {workers};'
            f' max_workers = {workers}; max_queue = 100000;{s} }}')


# ---- the Python side ----

def python_figures(client, seconds, size, ppe, mpp):

    def th_noop(cb):
        client.submit_callback("noop", "echo", b"", cb)

    def th_noop_futures(cb):
        client.submit("noop", "echo", b"").add_done_callback(cb)

    def th_sha(cb):
        client.submit_callback("sha", "sha256", b"taskhost", cb)

    figures = [
        ("noop", "taskhost", th_noop, WINDOW_NOOP),
        ("noop", "taskhost futures", th_noop_futures, WINDOW_NOOP),
        ("noop", "ProcessPoolExecutor",
         lambda cb: ppe.submit(noop, b"").add_done_callback(cb), WINDOW_NOOP),
        ("noop", "multiprocessing.Pool",
         lambda cb: mpp.apply_async(noop, (b"",), callback=cb), WINDOW_NOOP),
        ("sha", "taskhost", th_sha, WINDOW_CPU),
        ("sha", "ProcessPoolExecutor",
         lambda cb: ppe.submit(sha, size).add_done_callback(cb), WINDOW_CPU),
        ("sha", "multiprocessing.Pool",
         lambda cb: mpp.apply_async(sha, (size,), callback=cb), WINDOW_CPU),
    ]
    runs = {}
    ms = {"taskhost": single(lambda: client.call("sha", "sha256", b"taskhost")) * 1e3,
          "peer": min(single(lambda: mpp.apply(sha, (size,))),
                      single(lambda: ppe.submit(sha, size).result())) * 1e3}
    for what, who, fn, window in figures:
        drive(fn, window, 0.3)
    for _ in range(3):
        for what, who, fn, window in figures:
            runs.setdefault((what, who), []).append(drive(fn, window, seconds))
    res = {k: median(v) for k, v in runs.items()}
    res["ms"] = ms
    return res


def node_figures(d, seconds, size, piscina_dir):
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        return None, "node not found"
    out = subprocess.run(
        [node, os.path.join(HERE, "node_bench.js"), d.sock, piscina_dir,
         "noop", "sha", str(seconds), str(size)],
        capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return None, "node_bench.js failed: " + out.stderr.strip()[-300:]
    res, note = {"ms": {}}, None
    for line in out.stdout.splitlines():
        j = json.loads(line)
        if "missing" in j:
            note = "Piscina is not installed (make bench-peers installs it)"
            continue
        res[(j["what"], j["who"])] = j["rate"]
        if j.get("task_ms"):
            res["ms"][j["who"]] = j["task_ms"]
    return res, note


# ---- the table ----

def table(py, nd, note, size):
    rows = []

    def row(figure, ours, peer, peer_name, target, ratio_needed):
        if ours is None or peer is None:
            rows.append(f"| {figure} | {fmt(ours)} | {fmt(peer)} {peer_name} | — | "
                        f"{target} | n/a |")
            return
        ratio = ours / peer
        met = "—" if ratio_needed is None else ("yes" if ratio >= ratio_needed
                                                else "**no**")
        rows.append(f"| {figure} | {fmt(ours)} | {fmt(peer)} ({peer_name}) | "
                    f"{ratio:.2f}× | {target} | {met} |")

    def fmt(v):
        return "n/a" if v is None else f"{v:,.0f}"

    g = (nd or {}).get
    nms = (nd or {}).get("ms", {})
    row("Node.js: no-op, 256 in flight", g(("noop", "taskhost")),
        g(("noop", "piscina")), "Piscina", "≥ 3× Piscina", 3.0)
    row("Node.js: SHA-256 tasks of %s / %s ms, 2 workers, 4 in flight" % (
        "%.1f" % nms["taskhost"] if "taskhost" in nms else "?",
        "%.1f" % nms["piscina"] if "piscina" in nms else "?"), g(("sha", "taskhost")),
        g(("sha", "piscina")), "Piscina", "≥ 1× Piscina", 1.0)
    best = max(py[("noop", "ProcessPoolExecutor")], py[("noop", "multiprocessing.Pool")])
    best_name = ("ProcessPoolExecutor" if best == py[("noop", "ProcessPoolExecutor")]
                 else "multiprocessing.Pool")
    row("Python: no-op, 256 in flight (submit_callback)", py[("noop", "taskhost")],
        best, best_name, "≥ 10× the faster", 10.0)
    row("Python: no-op, 256 in flight (submit: Futures)",
        py[("noop", "taskhost futures")], best, best_name, "—", None)
    other = ("multiprocessing.Pool" if best_name == "ProcessPoolExecutor"
             else "ProcessPoolExecutor")
    row("Python: no-op, 256 in flight (submit_callback)", py[("noop", "taskhost")],
        py[("noop", other)], other, "—", None)
    best = max(py[("sha", "ProcessPoolExecutor")], py[("sha", "multiprocessing.Pool")])
    row("Python: SHA-256 tasks of %.1f / %.1f ms, 2 workers, 4 in flight" % (
        py["ms"]["taskhost"], py["ms"]["peer"]), py[("sha", "taskhost")], best,
        "the faster", "—", None)
    head = ["| figure (tasks/s, median of 3) | taskhost | peer | ratio | target | met |",
            "| --- | ---: | ---: | ---: | --- | --- |"]
    load = os.getloadavg()[0]
    text = (f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
            f"{load:.2f}; each SHA-256 task hashes {size:,} bytes (OpenSSL on every side).\n\n"
            + "\n".join(head + rows) + "\n")
    if note:
        text += f"\nNode.js: {note}\n"
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-s", "--seconds", type=float, default=2.0)
    ap.add_argument("-o", "--output")
    ap.add_argument("--piscina", default=None,
                    help="directory with node_modules/piscina (default BUILD/bench/node)")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    # The peers' processes first, before this process has threads.
    ppe = cf.ProcessPoolExecutor(2)
    mpp = mp.Pool(2)
    ppe.submit(noop, b"").result()
    mpp.apply(noop, (b"",))
    d = Daemon(build)
    size = calibrate_size()
    d.write(",\n".join([pool("noop", "echo", 2),
                        pool("sha", "shabuf", 2, f"size = {size};")]))
    d.start()
    try:
        with taskhost.Client(d.sock) as c:
            print("bench/peers: Node.js side...", file=sys.stderr)
            nd, note = node_figures(d, a.seconds, size,
                                    a.piscina or os.path.join(build, "bench", "node"))
            print("bench/peers: Python side...", file=sys.stderr)
            py = python_figures(c, a.seconds, size, ppe, mpp)
    finally:
        d.stop()
        ppe.shutdown()
        mpp.terminate()
    text = table(py, nd, note, size)
    print(text)
    if a.output:
        with open(a.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
