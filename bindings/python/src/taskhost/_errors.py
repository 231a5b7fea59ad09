"""Exceptions of the taskhost client."""

from __future__ import annotations

from typing import Dict, Type

STATE_NAMES = {0: "queued", 1: "running", 2: "ok", 3: "error", 4: "timeout",
               5: "cancelled", 6: "rejected", 7: "crashed", 8: "memory"}


class TaskhostError(Exception):
    """Base of every error this package raises on behalf of the daemon."""


class ProtocolError(TaskhostError):
    """The daemon sent something that does not parse."""


class ControlError(TaskhostError):
    """A control request (stats, cancel, restart, reload, shutdown) was
    refused: `code` is the negative TH_E* code, `message` the reason."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} ({code})" if message else f"error {code}")
        self.code = code
        self.message = message


class TaskError(TaskhostError):
    """A task did not end `ok`.

    state: "error", "timeout", "cancelled", "rejected", "crashed" or "memory";
    code: 0, a TH_E* code, or the plugin's own code for "error";
    message: the daemon's or the plugin's text; task_id: the daemon's id
    (0 when the daemon answered without taking the task)."""

    state = "error"

    def __init__(self, message: str, code: int = 0, task_id: int = 0,
                 state: str = "") -> None:
        super().__init__(message)
        if state:
            self.state = state
        self.code = code
        self.message = message
        self.task_id = task_id

    def __str__(self) -> str:
        return f"task {self.state}: {self.message} ({self.code})"


class TaskFailed(TaskError):
    """The plugin reported failure."""
    state = "error"


class TaskTimeout(TaskError):
    """The queue or the task time limit passed."""
    state = "timeout"


class TaskCancelled(TaskError):
    """The task was cancelled, or dropped at a forced shutdown."""
    state = "cancelled"


class TaskRejected(TaskError):
    """Unknown pool or task, queue full, input too large, shutting down."""
    state = "rejected"


class TaskCrashed(TaskError):
    """The worker died while running the task."""
    state = "crashed"


class TaskMemory(TaskError):
    """The worker passed its pool's memory_hard_limit."""
    state = "memory"


class ConnectionLost(TaskCancelled, ConnectionError):
    """The connection to the daemon was lost (or closed) before the answer
    came; every task still waiting on it fails with this, once."""

    def __init__(self, message: str) -> None:
        super().__init__(message, -4, 0, "cancelled")

    def __str__(self) -> str:
        return self.message


_BY_STATE: Dict[int, Type[TaskError]] = {
    3: TaskFailed, 4: TaskTimeout, 5: TaskCancelled, 6: TaskRejected,
    7: TaskCrashed, 8: TaskMemory,
}


def task_error(state: int, code: int, message: str, task_id: int) -> TaskError:
    cls = _BY_STATE.get(state)
    if cls is None:
        return TaskError(message, code, task_id, STATE_NAMES.get(state, str(state)))
    return cls(message, code, task_id)
