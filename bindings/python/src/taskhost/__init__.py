"""taskhost: run tasks on taskhostd's pools of isolated worker processes.

    import taskhost
    with taskhost.Client("/run/taskhost.sock") as th:
        print(th.call("default", "sha256", b"abc").decode())

`Client` is thread-based (futures); `AsyncClient` is for asyncio. Both
speak the wire protocol of docs/protocol.md directly: no compiled parts.
"""

from ._aio import AsyncClient, Progress, TaskFuture, connect
from ._errors import (
    ConnectionLost,
    ControlError,
    ProtocolError,
    TaskCancelled,
    TaskCrashed,
    TaskError,
    TaskFailed,
    TaskhostError,
    TaskMemory,
    TaskRejected,
    TaskTimeout,
)
from ._sync import Client, default_socket

__version__ = "0.1.0"

__all__ = [
    "AsyncClient", "Client", "ConnectionLost", "ControlError", "Progress",
    "ProtocolError", "TaskCancelled", "TaskCrashed", "TaskError", "TaskFailed",
    "TaskFuture", "TaskMemory", "TaskRejected", "TaskTimeout", "TaskhostError",
    "connect", "default_socket",
]
