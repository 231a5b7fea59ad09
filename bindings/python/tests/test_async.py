"""The asyncio AsyncClient against a real daemon."""

import asyncio
import signal

import pytest

import taskhost
from taskhost import _wire


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_call_returns_the_output(daemon):
    async def main():
        async with await taskhost.AsyncClient.connect(daemon.sock) as th:
            return await th.call("echo", "echo", b"abc")
    assert run(main()) == b"abc"


def test_many_tasks_in_flight(daemon):
    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            futs = [th.submit("echo", "echo", b"%d" % i) for i in range(5000)]
            return await asyncio.gather(*futs)
    assert run(main()) == [b"%d" % i for i in range(5000)]


def test_submits_of_one_turn_are_one_write(daemon):
    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            calls = []
            real = th._p.send
            th._p.send = lambda sock: calls.append(1) or real(sock)
            await asyncio.gather(*(th.submit("echo", "echo", b"x")
                                   for _ in range(1000)))
            return calls
    assert len(run(main())) == 1


def test_failure_raises_with_state_code_message(daemon):
    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            await th.call("sleep", "sleep", b"nope")
    with pytest.raises(taskhost.TaskFailed) as ei:
        run(main())
    assert (ei.value.state, ei.value.code) == ("error", -1)
    assert "milliseconds" in ei.value.message


def test_wait_for_timeout_cancels_the_task_in_the_daemon(daemon):
    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            before = (await th.stats("sleep"))["pools"][0]["tasks"]["cancelled"]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(th.submit("sleep", "sleep", b"20000"), 0.2)
            for _ in range(2000):
                st = await th.stats("sleep")
                if st["pools"][0]["tasks"]["cancelled"] > before:
                    return True
                await asyncio.sleep(0.01)
            return False
    assert run(main())


def test_cancel_by_future(daemon):
    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            fut = th.submit("sleep", "sleep", b"20000")
            await th.ping()
            assert await th.cancel(fut) is True
            with pytest.raises(taskhost.TaskCancelled):
                await fut
            assert await th.cancel(fut) is False
    run(main())


def test_large_payloads_travel_in_memfds(daemon):
    big = bytes(range(256)) * 8192

    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            assert await th.call("echo", "echo", big) == big
            assert th._p.fd_mode == _wire.FD_YES
            outs = await asyncio.gather(*(th.submit("echo", "echo", big)
                                          for _ in range(8)))
            assert th._p.nmfd == 0
            return outs
    assert run(main()) == [big] * 8


def test_admin_calls(own_daemon):
    d = own_daemon()

    async def main():
        async with await taskhost.connect(d.sock) as th:
            await th.restart()
            await th.reload()
            assert "echo" in await th.stats(format="text")
            await th.shutdown()
    run(main())
    d.proc.wait(20)
    assert d.proc.returncode == 0


def test_connection_loss_fails_every_pending_task_once(own_daemon):
    d = own_daemon()

    async def main():
        th = await taskhost.connect(d.sock)
        futs = [th.submit("sleep", "sleep", b"20000") for _ in range(5)]
        await th.ping()
        d.proc.send_signal(signal.SIGKILL)
        res = await asyncio.gather(*futs, return_exceptions=True)
        with pytest.raises(taskhost.ConnectionLost):
            th.submit("echo", "echo", b"")
        await th.close()
        return res
    res = run(main())
    d.proc.wait()
    assert len(res) == 5
    assert all(isinstance(r, taskhost.ConnectionLost) for r in res)


def assert_steps(reports, n):
    """Reports of the 'steps' task: latest wins under load, so some may be
    coalesced away, but those seen are in order and the last is step n."""
    assert 1 <= len(reports) <= n
    dones = [r[0] for r in reports]
    assert dones == sorted(set(dones))
    assert all(r == (r[0], n, "step %d" % r[0]) for r in reports)
    assert reports[-1] == (n, n, "step %d" % n)


def test_progress_as_an_async_iterator(daemon):
    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            return [x async for x in th.run_with_progress("chatty", "steps", b"3")]
    got = run(main())
    reports = [(p.done, p.total, p.message) for p in got[:-1]]
    assert_steps(reports, 3)
    assert got[-1] == b"done"


def test_progress_callback_with_submit(daemon):
    async def main():
        async with await taskhost.connect(daemon.sock) as th:
            seen = []
            out = await th.submit("chatty", "chatty", b"200",
                                  progress=lambda d, t, m: seen.append(d))
            return int(out), seen
    calls, seen = run(main())
    assert 1 <= len(seen) <= 200 // 50 + 3
    assert seen[-1] == calls - 1
