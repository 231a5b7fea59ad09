"""The asyncio client: one connection driven by the running event loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Callable, Optional, Union

from . import _wire
from ._errors import ControlError, TaskhostError
from ._sync import ProgressFn, open_socket
from ._wire import Input


class TaskFuture(asyncio.Future):  # type: ignore[type-arg]
    """The awaitable of a submitted task. Cancelling it (directly, or by
    cancelling the coroutine awaiting it, as asyncio.wait_for does) also
    cancels the task in the daemon."""

    tag = 0
    _client: Optional["AsyncClient"] = None
    # the protocol's entry (see _wire.Pending)
    kind = _wire.K_TASK
    progress: Optional[ProgressFn] = None
    mfd = -1
    task_id = 0

    def answer(self, state: int, code: int, data: Any, task_id: int) -> None:
        if self.done():
            return
        if state == 2:
            self.set_result(data)
        else:
            self.set_exception(_wire.outcome(state, code, data, task_id))

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        client = self._client
        if client is not None:
            client._cancel_quietly(self.tag)
        return True


class Progress:
    """What a running task reported: `done` of `total` (0: unknown)
    units, and a short message."""

    __slots__ = ("done", "total", "message")

    def __init__(self, done: int, total: int, message: str) -> None:
        self.done = done
        self.total = total
        self.message = message

    def __repr__(self) -> str:
        return f"Progress({self.done}, {self.total}, {self.message!r})"


class AsyncClient:
    """One connection to taskhostd for asyncio code.

        async with await taskhost.AsyncClient.connect(path) as th:
            out = await th.call("default", "sha256", b"abc")

    Requests submitted within one turn of the loop are sent with one
    system call; answers are read as the socket becomes readable."""

    def __init__(self, path: Optional[str] = None, *, memfd: bool = True) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = open_socket(path)
        self._fd = self._sock.fileno()
        self._p = _wire.Protocol(use_fds=memfd)
        self._flush_soon = False
        self._writing = False
        self._closed = False
        self._loop.add_reader(self._fd, self._on_readable)

    @classmethod
    async def connect(cls, path: Optional[str] = None, *,
                      memfd: bool = True) -> "AsyncClient":
        return cls(path, memfd=memfd)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    # ---- tasks ----

    def submit(self, pool: str, task: str, input: Input = b"", *,
               timeout: Optional[float] = None,
               queue_timeout: Optional[float] = None, priority: int = 0,
               progress: Optional[ProgressFn] = None) -> TaskFuture:
        """Queues a task; returns an awaitable of its output (bytes). A
        task that does not end ok raises a TaskError subclass. progress
        (done, total, message) is called from the loop as it reports."""
        fut = TaskFuture(loop=self._loop)
        if progress is not None:
            fut.progress = progress
        fut.tag = self._p.submit(pool, task, input, fut, timeout,
                                 queue_timeout, priority)
        fut._client = self
        if not self._flush_soon and not self._writing:
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        return fut

    async def call(self, pool: str, task: str, input: Input = b"", **opts: Any) -> bytes:
        """Runs a task and returns its output."""
        return await self.submit(pool, task, input, **opts)

    async def run_with_progress(self, pool: str, task: str, input: Input = b"",
                                **opts: Any) -> AsyncIterator[Union[Progress, bytes]]:
        """Runs a task and yields its Progress reports as they come, then
        its output (bytes) last. Reports are coalesced: while the consumer
        is slow, only the latest waits."""
        latest: list = [None]
        wake = asyncio.Event()

        def progress(done: int, total: int, msg: str) -> None:
            latest[0] = Progress(done, total, msg)
            wake.set()

        fut = self.submit(pool, task, input, progress=progress, **opts)
        fut.add_done_callback(lambda _: wake.set())
        try:
            while True:
                await wake.wait()
                wake.clear()
                if latest[0] is not None:
                    p, latest[0] = latest[0], None
                    yield p
                if fut.done():
                    break
            yield fut.result()
        finally:
            if not fut.done():
                fut.cancel()

    async def cancel(self, task: Union[TaskFuture, int]) -> bool:
        """Cancels a task of this client (its future or its tag) in the
        daemon; True when it was pending there. Its future then raises
        TaskCancelled."""
        tag = task if isinstance(task, int) else task.tag
        code, _ = await self._control(_wire.CANCEL, 0, _wire.U64.pack(tag),
                                      ok=(0, -3))
        return code == 0

    def _cancel_quietly(self, tag: int) -> None:
        if self._p.lost is None and tag in self._p.pending and not self._closed:
            self._p.control(_wire.CANCEL, 0, _wire.U64.pack(tag), _wire._ignore)
            self._kick()

    # ---- control ----

    async def stats(self, pool: Optional[str] = None, format: str = "json") -> Any:
        body = _wire.Protocol.control_body(_wire.stats_format(format), pool)
        _, text = await self._control(_wire.STATS, 0, body)
        return json.loads(text) if format == "json" else text

    async def restart(self, pool: Optional[str] = None, *, force: bool = False) -> None:
        await self._control(_wire.RESTART, _wire.F_FORCE if force else 0,
                            _wire.Protocol.control_body(0, pool))

    async def reload(self) -> None:
        await self._control(_wire.RELOAD, 0, b"")

    async def shutdown(self, *, force: bool = False) -> None:
        await self._control(_wire.SHUTDOWN, _wire.F_FORCE if force else 0, b"")

    async def ping(self) -> str:
        return (await self._control(_wire.PING, 0, b""))[1]

    async def _control(self, typ: int, flags: int, body: bytes,
                       ok: tuple = (0,)) -> tuple:
        fut: asyncio.Future = self._loop.create_future()

        def done(code: int, text: str, _flags: int) -> None:
            if not fut.done():
                fut.set_result((code, text))

        self._p.control(typ, flags, body, done)
        self._kick()
        code, text = await fut
        if code not in ok:
            if code == -4 and self._p.lost is not None:
                raise self._p.lost
            raise ControlError(code, text)
        return code, text

    @property
    def pending(self) -> int:
        return len(self._p.pending)

    # ---- I/O ----

    def _kick(self) -> None:
        if not self._flush_soon and not self._writing:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._closed:
            return
        try:
            sent = self._p.send(self._sock)
        except OSError as e:
            self._lost(e.strerror or str(e))
            return
        if sent == self._writing:
            self._writing = not sent
            if self._writing:
                self._loop.add_writer(self._fd, self._flush)
            else:
                self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        try:
            if not self._p.recv(self._sock):
                self._lost("closed by the daemon")
        except TaskhostError as e:
            self._lost(str(e))
        except OSError as e:
            self._lost(e.strerror or str(e))

    def _lost(self, why: str) -> None:
        self._detach()
        self._p.fail_all(self._p.mark_lost(why))

    def _detach(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
        self._sock.close()

    async def close(self) -> None:
        """Closes the connection; tasks still waiting fail with
        ConnectionLost."""
        if not self._closed:
            self._lost("client closed")


async def connect(path: Optional[str] = None, *, memfd: bool = True) -> AsyncClient:
    """Connects an AsyncClient to the daemon at path (None: the default)."""
    return AsyncClient(path, memfd=memfd)
