"""The thread-based client: futures resolved by one I/O thread."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from . import _wire
from ._errors import ConnectionLost, ControlError, TaskhostError
from ._wire import Input

ProgressFn = Callable[[int, int, str], None]


def default_socket() -> str:
    """$TASKHOST_SOCKET if set, else "taskhost.sock" in the current
    directory (as the C library and taskhostctl)."""
    return os.environ.get("TASKHOST_SOCKET") or "taskhost.sock"


def open_socket(path: Optional[str]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path or default_socket())
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _TaskFuture(Future):  # type: ignore[type-arg]
    """The future of a submitted task, and the protocol's entry for it
    (see _wire.Pending; the defaults live in the class)."""

    kind = _wire.K_TASK
    progress: Optional[ProgressFn] = None
    mfd = -1
    task_id = 0
    tag = 0

    def __init__(self) -> None:
        super().__init__()
        self.set_running_or_notify_cancel()  # the daemon has it now

    def answer(self, state: int, code: int, data: Any, task_id: int) -> None:
        if state == 2:
            self.set_result(data)
        else:
            self.set_exception(_wire.outcome(state, code, data, task_id))


class _Callback:
    """The protocol's entry of a task submitted with a callback."""

    __slots__ = ("callback", "progress", "mfd", "task_id")
    kind = _wire.K_TASK

    def __init__(self, callback: "DoneFn", progress: Optional[ProgressFn]) -> None:
        self.callback = callback
        self.progress = progress
        self.mfd = -1
        self.task_id = 0

    def answer(self, state: int, code: int, data: Any, task_id: int) -> None:
        if state == 2:
            self.callback(data, None)
        else:
            self.callback(None, _wire.outcome(state, code, data, task_id))


DoneFn = Callable[[Optional[bytes], Optional[BaseException]], None]


class Client:
    """One connection to taskhostd, safe to use from many threads.

    Tasks are sent in batches by an I/O thread, which also reads the
    answers and resolves the futures (so done-callbacks and progress
    callbacks run in that thread: keep them short; they may submit).

        with taskhost.Client("/run/taskhost.sock") as th:
            print(th.call("default", "sha256", b"abc"))
    """

    def __init__(self, path: Optional[str] = None, *, memfd: bool = True) -> None:
        self._sock = open_socket(path)
        self._p = _wire.Protocol(use_fds=memfd)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._woken = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="taskhost-io",
                                        daemon=True)
        self._io_ident = 0
        self._thread.start()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ---- tasks ----

    def submit(self, pool: str, task: str, input: Input = b"", *,
               timeout: Optional[float] = None,
               queue_timeout: Optional[float] = None, priority: int = 0,
               progress: Optional[ProgressFn] = None) -> "Future[bytes]":
        """Queues a task; returns a Future of its output (bytes). A task
        that does not end ok raises a TaskError subclass from result().
        timeout and queue_timeout (seconds) only lower the pool's limits.
        progress(done, total, message) is called as the plugin reports."""
        fut = _TaskFuture()
        if progress is not None:
            fut.progress = progress
        with self._lock:
            fut.tag = self._p.submit(pool, task, input, fut, timeout,
                                     queue_timeout, priority)
            if not self._woken and threading.get_ident() != self._io_ident:
                self._woken = True
                os.write(self._wake_w, b"\0")
        return fut

    def submit_callback(self, pool: str, task: str, input: Input,
                        callback: DoneFn, *, timeout: Optional[float] = None,
                        queue_timeout: Optional[float] = None,
                        priority: int = 0,
                        progress: Optional[ProgressFn] = None) -> int:
        """Queues a task without a Future, the cheapest way to have many in
        flight: callback(output, None) or callback(None, error) is called
        once from the I/O thread (as multiprocessing's apply_async calls
        its callback). Returns the task's tag, for cancel()."""
        entry = _Callback(callback, progress)
        with self._lock:
            tag = self._p.submit(pool, task, input, entry, timeout,
                                 queue_timeout, priority)
            if not self._woken and threading.get_ident() != self._io_ident:
                self._woken = True
                os.write(self._wake_w, b"\0")
        return tag

    def call(self, pool: str, task: str, input: Input = b"", *,
             timeout: Optional[float] = None,
             queue_timeout: Optional[float] = None, priority: int = 0,
             progress: Optional[ProgressFn] = None) -> bytes:
        """Runs a task and returns its output; raises TaskError if it did
        not end ok."""
        return self.submit(pool, task, input, timeout=timeout,
                           queue_timeout=queue_timeout, priority=priority,
                           progress=progress).result()

    def map(self, pool: str, task: str, inputs: Iterable[Input], *,
            window: int = 256, **opts: Any) -> Iterator[bytes]:
        """Runs a task on every input with up to `window` in flight and
        yields the outputs in order."""
        from collections import deque
        queue: "deque[Future[bytes]]" = deque()
        for item in inputs:
            if len(queue) >= window:
                yield queue.popleft().result()
            queue.append(self.submit(pool, task, item, **opts))
        while queue:
            yield queue.popleft().result()

    def cancel(self, task: Union["Future[bytes]", int]) -> bool:
        """Cancels a task of this client (its future, or its tag): a queued
        one is removed, a running one's worker is killed. Returns True
        when the daemon cancelled it (its future then raises
        TaskCancelled), False when it was no longer pending."""
        tag = task if isinstance(task, int) else task.tag  # type: ignore[union-attr]
        code, _ = self._control(_wire.CANCEL, 0, _wire.U64.pack(tag), ok=(0, -3))
        return code == 0

    # ---- control ----

    def stats(self, pool: Optional[str] = None, format: str = "json") -> Any:
        """The stats of pool (None: every pool): a dict for "json", text
        for "text" and "prometheus" (docs/stats.md)."""
        body = _wire.Protocol.control_body(_wire.stats_format(format), pool)
        _, text = self._control(_wire.STATS, 0, body)
        return json.loads(text) if format == "json" else text

    def restart(self, pool: Optional[str] = None, *, force: bool = False) -> None:
        """Restarts pool (None: every pool); admins only."""
        self._control(_wire.RESTART, _wire.F_FORCE if force else 0,
                      _wire.Protocol.control_body(0, pool))

    def reload(self) -> None:
        """Makes the daemon reload its config; admins only. A refused
        reload raises ControlError with the reason."""
        self._control(_wire.RELOAD, 0, b"")

    def shutdown(self, *, force: bool = False) -> None:
        """Makes the daemon shut down; admins only."""
        self._control(_wire.SHUTDOWN, _wire.F_FORCE if force else 0, b"")

    def ping(self) -> str:
        """The daemon's version string ("taskhostd 0.1.0")."""
        return self._control(_wire.PING, 0, b"")[1]

    def _control(self, typ: int, flags: int, body: bytes,
                 ok: tuple = (0,)) -> tuple:
        fut: Future[tuple] = Future()

        def done(code: int, text: str, _flags: int) -> None:
            fut.set_result((code, text))

        with self._lock:
            self._p.control(typ, flags, body, done)
            self._kick()
        code, text = fut.result()
        if code not in ok:
            if code == -4 and self._p.lost is not None:
                raise self._p.lost
            raise ControlError(code, text)
        return code, text

    @property
    def pending(self) -> int:
        """Requests not answered yet."""
        return len(self._p.pending)

    # ---- the I/O thread ----

    def _kick(self) -> None:
        """Wakes the I/O thread to send (the lock is held)."""
        if not self._woken and threading.get_ident() != self._io_ident:
            self._woken = True
            os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        self._io_ident = threading.get_ident()
        sock, p = self._sock, self._p
        fd = sock.fileno()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        poller.register(fd, select.POLLIN)
        want_out = False
        try:
            while True:
                for rfd, ev in poller.poll():
                    if rfd == self._wake_r:
                        os.read(self._wake_r, 4096)
                    elif ev & select.POLLOUT and not ev & select.POLLIN:
                        pass
                    elif not p.recv(sock):
                        raise ConnectionResetError("closed by the daemon")
                with self._lock:
                    self._woken = False
                    if self._closing:
                        break
                    sent = p.send(sock)
                if sent == want_out:
                    want_out = not sent
                    poller.modify(fd, select.POLLIN |
                                  (select.POLLOUT if want_out else 0))
            why = "client closed"
        except TaskhostError as e:
            why = str(e)
        except OSError as e:
            why = e.strerror or str(e)
        except BaseException as e:  # a bug: fail the tasks, not hang them
            why = f"{type(e).__name__}: {e}"
        with self._lock:
            entries = p.mark_lost(why)
        p.fail_all(entries)

    def close(self) -> None:
        """Closes the connection; tasks still waiting fail with
        ConnectionLost. Must not be called from a callback."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            os.write(self._wake_w, b"\0")
        self._thread.join()
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


__all__ = ["Client", "default_socket", "ConnectionLost"]
