"""The thread-based Client against a real daemon."""

import signal
import threading

import pytest

import taskhost
from taskhost import _wire
from conftest import wait_for


def test_call_returns_the_output(client):
    assert client.call("echo", "echo", b"hello") == b"hello"


def test_str_input_is_sent_as_utf8(client):
    assert client.call("echo", "echo", "h\u00e9") == "h\u00e9".encode()


def test_empty_input(client):
    assert client.call("echo", "echo") == b""


def test_many_tasks_in_flight_on_one_connection(client):
    futs = [client.submit("echo", "echo", b"%d" % i) for i in range(5000)]
    assert [f.result(20) for f in futs] == [b"%d" % i for i in range(5000)]
    assert client.pending == 0


def test_submits_are_written_in_batches(client):
    calls = []
    real = client._p.send

    def counting(sock):
        calls.append(1)
        return real(sock)

    client._p.send = counting
    futs = [client.submit("echo", "echo", b"x") for _ in range(2000)]
    for f in futs:
        f.result(20)
    # Batched: at least two submits a send, even on a loaded box.
    assert 0 < len(calls) <= len(futs) // 2


def test_map_keeps_order(client):
    inputs = [b"%d" % i for i in range(1000)]
    assert list(client.map("echo", "echo", inputs, window=64)) == inputs


def test_plugin_failure_raises_with_state_code_message(client):
    with pytest.raises(taskhost.TaskFailed) as ei:
        client.call("sleep", "sleep", b"not a number")
    e = ei.value
    assert e.state == "error"
    assert e.code == -1
    assert "input must be milliseconds" in e.message
    assert e.task_id > 0


def test_unknown_pool_is_rejected(client):
    with pytest.raises(taskhost.TaskRejected) as ei:
        client.call("nosuchpool", "echo", b"")
    assert ei.value.state == "rejected"
    assert ei.value.code == -3


def test_task_timeout_raises_task_timeout(client):
    with pytest.raises(taskhost.TaskTimeout) as ei:
        client.call("sleep", "sleep", b"10000", timeout=0.1)
    assert ei.value.state == "timeout"


def test_crash_raises_task_crashed(client):
    with pytest.raises(taskhost.TaskCrashed) as ei:
        client.call("crash", "abort")
    assert ei.value.state == "crashed"


def test_cancel_a_running_task(client):
    fut = client.submit("sleep", "sleep", b"20000")
    wait_for(lambda: client.stats("sleep")["pools"][0]["workers"]["busy"] > 0,
             "the task to run")
    assert client.cancel(fut) is True
    with pytest.raises(taskhost.TaskCancelled) as ei:
        fut.result(20)
    assert ei.value.state == "cancelled"
    assert client.cancel(fut) is False


def test_large_payloads_travel_in_memfds(client):
    big = bytes(range(256)) * 8192  # 2 MiB
    assert client.call("echo", "echo", big) == big  # asks the daemon first
    assert client._p.fd_mode == _wire.FD_YES
    sent = []
    real = _wire._memfd
    _wire._memfd = lambda data: sent.append(len(data)) or real(data)
    try:
        futs = [client.submit("echo", "echo", big) for _ in range(8)]
        assert all(f.result(20) == big for f in futs)
    finally:
        _wire._memfd = real
    assert sent == [len(big)] * 8
    assert client._p.nmfd == 0


def test_large_payloads_inline_without_memfds(daemon):
    big = b"\x5a" * (3 << 20)
    with taskhost.Client(daemon.sock, memfd=False) as c:
        assert c.call("echo", "echo", big) == big
        assert c._p.fd_mode == _wire.FD_NO


def test_stats_formats(client):
    client.call("echo", "echo", b"x")
    st = client.stats()
    assert st["version"] == 1
    assert {p["name"] for p in st["pools"]} >= {"echo", "sleep"}
    assert "echo" in client.stats("echo", format="text")
    assert "taskhost" in client.stats(format="prometheus")
    with pytest.raises(taskhost.ControlError) as ei:
        client.stats("nosuchpool")
    assert ei.value.code == -3


def test_ping_names_the_daemon(client):
    assert client.ping().startswith("taskhostd ")


def test_done_callbacks_may_submit(client):
    done = threading.Event()
    out = []

    def second(f):
        out.append(f.result())
        done.set()

    def first(f):
        client.submit("echo", "echo", f.result() + b"!").add_done_callback(second)

    client.submit("echo", "echo", b"a").add_done_callback(first)
    assert done.wait(20)
    assert out == [b"a!"]


def test_connection_loss_fails_every_pending_task_once(own_daemon):
    d = own_daemon()
    c = taskhost.Client(d.sock)
    calls = []
    futs = [c.submit("sleep", "sleep", b"20000") for _ in range(6)]
    for f in futs:
        f.add_done_callback(lambda f: calls.append(f))
    c.ping()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    for f in futs:
        with pytest.raises(taskhost.ConnectionLost) as ei:
            f.result(20)
        assert ei.value.state == "cancelled"
        assert ei.value.code == -4
    wait_for(lambda: len(calls) == 6, "every callback")
    assert len(set(map(id, calls))) == 6
    with pytest.raises(taskhost.ConnectionLost):
        c.submit("echo", "echo", b"x")
    c.close()


def test_close_fails_pending_tasks(daemon):
    c = taskhost.Client(daemon.sock)
    fut = c.submit("sleep", "sleep", b"300")
    c.close()
    with pytest.raises(taskhost.ConnectionLost):
        fut.result(20)


def test_input_over_max_payload_is_rejected_and_others_fail(own_daemon):
    d = own_daemon(host_extra='max_payload = "64K";')
    with taskhost.Client(d.sock, memfd=False) as c:
        slow = c.submit("sleep", "sleep", b"20000")
        big = c.submit("echo", "echo", b"x" * (100 << 10))
        with pytest.raises(taskhost.TaskRejected) as ei:
            big.result(20)
        assert ei.value.code == -12
        with pytest.raises(taskhost.ConnectionLost):
            slow.result(20)


def test_admin_restart_reload_shutdown(own_daemon):
    d = own_daemon()
    with taskhost.Client(d.sock) as c:
        before = c.stats("echo")["pools"][0]["restarts"]["spawned"]
        c.restart("echo", force=True)
        wait_for(lambda: c.stats("echo")["pools"][0]["restarts"]["spawned"]
                 >= before + 2, "the restart")
        with pytest.raises(taskhost.ControlError) as ei:
            c.restart("nosuchpool")
        assert ei.value.code == -3
        d.write_conf(d.pools.replace('name = "crash"', 'name = "crash2"'))
        c.reload()
        wait_for(lambda: any(p["name"] == "crash2" for p in c.stats()["pools"]),
                 "the reloaded pool")
        with open(d.conf, "a") as f:
            f.write("this is not a config")
        with pytest.raises(taskhost.ControlError) as ei:
            c.reload()
        assert ei.value.message
        c.shutdown()
    d.proc.wait(20)
    assert d.proc.returncode == 0


def test_progress_reports_reach_the_callback_in_order(client):
    seen = []
    out = client.call("chatty", "steps", b"3",
                      progress=lambda d, t, m: seen.append((d, t, m)))
    assert out == b"done"
    # Latest wins under load: some reports may be coalesced away, but
    # those seen are in order and the last one is step 3.
    assert 1 <= len(seen) <= 3
    assert [d for d, _, _ in seen] == sorted(set(d for d, _, _ in seen))
    assert all(m == "step %d" % d and t == 3 for d, t, m in seen)
    assert seen[-1] == (3, 3, "step 3")


def test_a_chatty_plugin_is_coalesced(client):
    seen = []
    fut = client.submit("chatty", "chatty", b"300",
                        progress=lambda d, t, m: seen.append(d))
    calls = int(fut.result(20))
    assert calls > 10000
    assert 2 <= len(seen) <= 300 // 50 + 3
    assert seen[-1] == calls - 1  # the latest won
    assert seen == sorted(seen)


def test_the_sleep_example_reports_progress(client):
    seen = []
    assert client.call("sleep", "sleep", b"200",
                       progress=lambda d, t, m: seen.append((d, t, m))) == b"slept 200"
    assert seen and seen[0] == (0, 200, "sleeping")
    assert all(t == 200 for _, t, _ in seen)


def test_submit_callback_answers_each_task_once(client):
    got = []
    done = threading.Event()

    def cb(out, err):
        got.append((out, err))
        if len(got) == 1001:
            done.set()

    for i in range(1000):
        client.submit_callback("echo", "echo", b"%d" % i, cb)
    client.submit_callback("sleep", "sleep", b"bad", cb)
    assert done.wait(20)
    outs = sorted(int(o) for o, e in got if e is None)
    assert outs == list(range(1000))
    errs = [e for o, e in got if e is not None]
    assert len(errs) == 1 and isinstance(errs[0], taskhost.TaskFailed)


def test_large_output_of_a_small_input_comes_in_its_own_memfd(client):
    client.call("echo", "echo", b"y" * (100 << 10))  # learns FD_OK
    assert client._p.fd_mode == _wire.FD_YES
    read = []
    real = _wire._read_fd
    _wire._read_fd = lambda fd, n: read.append(n) or real(fd, n)
    try:
        futs = [client.submit("chatty", "fill", b"%d" % (n << 20)) for n in (1, 3)]
        assert [f.result(20) for f in futs] == [b"x" * (1 << 20), b"x" * (3 << 20)]
    finally:
        _wire._read_fd = real
    assert sorted(read) == [1 << 20, 3 << 20]
    assert not client._p.ifds  # every descriptor taken (and closed)
