"""The wire protocol of taskhostd (docs/protocol.md), without any I/O.

`Protocol` encodes requests into an output buffer and decodes answers
from an input buffer; the clients in `_sync` and `_aio` move the bytes
and descriptors between these buffers and the socket, and resolve
their futures from the callbacks this module invokes.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import logging

from ._errors import (
    ConnectionLost,
    ProtocolError,
    TaskError,
    task_error,
)

LOG = logging.getLogger("taskhost")
VERSION = 1
HEADER = struct.Struct("<IBBHQ")
SUBMIT_HEAD = struct.Struct("<IBBHQIIbBBB")  # header and the fixed body
RESULT = struct.Struct("<QB3xiQQ")
CODE = struct.Struct("<i")
U64 = struct.Struct("<Q")
PROGRESS = struct.Struct("<QQ")
CONTROL = struct.Struct("<BBH")

SUBMIT, CANCEL, STATS, RESTART, RELOAD, SHUTDOWN, PING = range(1, 8)
T_RESULT, T_ACCEPTED, T_REPLY, T_PROGRESS, T_ERROR = 0x81, 0x82, 0x83, 0x84, 0xFF

F_ACK, F_IN_FD, F_OUT_FD, F_PROGRESS = 0x1, 0x2, 0x4, 0x8
F_TASK_ID = F_FORCE = F_FD_OK = F_RES_FD = 0x1
F_RES_IN_FD = 0x2

FD_MIN = 64 << 10  # payloads from this size travel in memfds
FD_MAX = 64  # memfds of one connection in flight
READ_SIZE = 256 << 10
ANC_SIZE = socket.CMSG_SPACE(64 * 4)

STATE_OK = 2
EIO, ENOENT = -4, -3

FD_UNKNOWN, FD_PROBING, FD_YES, FD_NO = range(4)

Input = Union[bytes, bytearray, memoryview, str]

# One waiting request: kind, result callback, progress callback, memfd.
K_TASK, K_CTL, K_PROBE = 0, 1, 2


class Pending:
    """A waiting request. Tasks' entries are the clients' futures, which
    carry the same attributes (as class defaults, so that the hot path
    sets none): kind, answer (called with the answer), progress (None or
    a callback), mfd (-1 or the input memfd), task_id."""

    __slots__ = ("kind", "answer", "progress", "mfd", "task_id")

    def __init__(self, kind: int, answer: Callable[..., None],
                 progress: Optional[Callable[[int, int, str], None]] = None):
        self.kind = kind
        self.answer = answer
        self.progress = progress
        self.mfd = -1
        self.task_id = 0


def _ms(seconds: Optional[float]) -> int:
    if seconds is None or not seconds > 0:
        return 0
    ms = int(seconds * 1000 + 0.5)
    return min(max(ms, 1), 0xFFFFFFFF)


def _name(s: str, what: str) -> bytes:
    b = s.encode()
    if not 0 < len(b) <= 255 or b"\0" in b:
        raise ValueError(f"{what} name must be 1 to 255 bytes without NUL: {s!r}")
    return b


def as_bytes(data: Input) -> Union[bytes, bytearray, memoryview]:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray)):
        return data
    if isinstance(data, memoryview):
        return data.cast("B") if data.format != "B" or data.ndim != 1 else data
    raise TypeError(f"input must be bytes-like or str, not {type(data).__name__}")


def _memfd(data: Union[bytes, bytearray, memoryview]) -> int:
    """A memfd holding data, sealed against shrinking (docs/protocol.md)."""
    fd = os.memfd_create("taskhost-input", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        off = 0
        while off < len(view):
            off += os.pwrite(fd, view[off:], off)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int, length: int) -> bytes:
    parts = []
    off = 0
    while off < length:
        chunk = os.pread(fd, length - off, off)
        if not chunk:
            raise ProtocolError("output memfd shorter than announced")
        parts.append(chunk)
        off += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Protocol:
    """The state of one connection: the requests waiting for answers, the
    bytes and descriptors to send, the bytes and descriptors received.

    Stream offsets count every byte sent or received since the socket was
    opened: a descriptor is attached to the sendmsg() that starts at its
    frame, and a received one belongs to the frame that starts within the
    read that brought it."""

    def __init__(self, use_fds: bool = True) -> None:
        self.obuf = bytearray()
        self.opos = 0  # stream offset of obuf[0]
        self.ofds: Deque[Tuple[int, int]] = deque()  # (stream offset, fd)
        self.ibuf = bytearray()
        self.ipos = 0  # stream offset of ibuf[0]
        self.ifds: Deque[Tuple[int, int, int]] = deque()  # (fd, lo, hi)
        self.pending: Dict[int, Pending] = {}
        self.next_tag = 1
        self.fd_mode = FD_UNKNOWN if use_fds else FD_NO
        self.nmfd = 0
        self.names: Dict[Tuple[str, str], bytes] = {}
        self.lost: Optional[ConnectionLost] = None
        self.last_error = ""
        self.want_accept = False

    # ---- requests ----

    def _names(self, pool: str, task: str) -> Tuple[int, int, bytes]:
        key = (pool, task)
        n = self.names.get(key)
        if n is None:
            p, t = _name(pool, "pool"), _name(task, "task")
            n = (len(p), len(t), p + b"\0" + t + b"\0")
            if len(self.names) < 1024:
                self.names[key] = n
        return n

    def submit(self, pool: str, task: str, data: Input, entry: Any,
               timeout: Optional[float], queue_timeout: Optional[float],
               priority: int) -> int:
        """Encodes a SUBMIT and registers entry under a new tag."""
        if self.lost is not None:
            raise self.lost
        key = (pool, task)
        names = self.names.get(key) or self._names(pool, task)
        if type(data) is not bytes:
            data = as_bytes(data)
        size = len(data) if type(data) is not memoryview else data.nbytes
        if priority and not -128 <= priority <= 127:
            raise ValueError("priority must be -128..127")
        flags = F_OUT_FD if self.fd_mode == FD_YES else 0
        if entry.progress is not None:
            flags |= F_PROGRESS
        if self.want_accept:
            flags |= F_ACK
        if size >= FD_MIN and self.fd_mode != FD_NO:
            if self.fd_mode == FD_UNKNOWN:
                self._probe()
            elif self.fd_mode == FD_YES and self.nmfd < FD_MAX:
                entry.mfd = _memfd(data)
                self.nmfd += 1
                flags |= F_IN_FD
        tag = self.next_tag
        self.next_tag = tag + 1
        tail = names[2]
        body = 12 + len(tail) + (8 if flags & F_IN_FD else size)
        if body > 0xFFFFFFFF:
            raise ValueError("input over 4 GiB")
        ob = self.obuf
        if flags & F_IN_FD:
            self.ofds.append((self.opos + len(ob), entry.mfd))
        ob += SUBMIT_HEAD.pack(body, VERSION, SUBMIT, flags, tag,
                               _ms(timeout) if timeout else 0,
                               _ms(queue_timeout) if queue_timeout else 0,
                               priority, names[0], names[1], 0)
        ob += tail
        if flags & F_IN_FD:
            ob += U64.pack(size)
        elif size:
            ob += data
        self.pending[tag] = entry
        return tag

    def _probe(self) -> None:
        """Asks with a PING whether the daemon takes memfds."""
        tag = self.next_tag
        self.next_tag = tag + 1
        self.obuf += HEADER.pack(0, VERSION, PING, 0, tag)
        self.pending[tag] = Pending(K_PROBE, _ignore)
        self.fd_mode = FD_PROBING

    def control(self, typ: int, flags: int, body: bytes,
                done: Callable[[int, str, int], None]) -> int:
        """Encodes a request answered by REPLY; done(code, text, flags)."""
        if self.lost is not None:
            raise self.lost
        tag = self.next_tag
        self.next_tag = tag + 1
        self.obuf += HEADER.pack(len(body), VERSION, typ, flags, tag)
        self.obuf += body
        self.pending[tag] = Pending(K_CTL, done)
        return tag

    @staticmethod
    def control_body(fmt: int, pool: Optional[str]) -> bytes:
        p = _name(pool, "pool") if pool else b""
        return CONTROL.pack(fmt, len(p), 0) + p + b"\0"

    # ---- sending ----

    def send(self, sock: socket.socket) -> bool:
        """Sends what it can without blocking; True when all was sent."""
        ob, fds = self.obuf, self.ofds
        while ob:
            end = len(ob)
            fd = -1
            if fds:
                at = fds[0][0] - self.opos
                if at == 0:
                    fd = fds[0][1]
                    if len(fds) > 1:
                        end = fds[1][0] - self.opos
                else:
                    end = at
            try:
                if fd == -1:
                    n = sock.send(memoryview(ob)[:end])
                else:
                    n = sock.sendmsg([memoryview(ob)[:end]], [(
                        socket.SOL_SOCKET, socket.SCM_RIGHTS,
                        array.array("i", [fd]))])
                    fds.popleft()
            except (BlockingIOError, InterruptedError):
                return False
            del ob[:n]
            self.opos += n
            if n < end:
                return False
        return True

    # ---- receiving ----

    def recv(self, sock: socket.socket) -> bool:
        """Reads what is there and handles every whole frame; False at the
        end of the stream. Raises OSError, ProtocolError."""
        try:
            data, anc, mflags, _ = sock.recvmsg(READ_SIZE, ANC_SIZE)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False
        lo = self.ipos + len(self.ibuf)
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(cdata[: len(cdata) - len(cdata) % 4])
                for fd in got:
                    self.ifds.append((fd, lo, lo + len(data)))
        if mflags & socket.MSG_CTRUNC:
            raise ProtocolError("descriptors from the daemon lost")
        self.ibuf += data
        self.parse()
        return True

    def parse(self) -> None:
        buf = self.ibuf
        n = len(buf)
        pos = 0
        unpack = HEADER.unpack_from
        unpack_result = RESULT.unpack_from
        pending = self.pending
        mv = memoryview(buf)
        try:
            while n - pos >= 16:
                ln, ver, typ, flags, tag = unpack(buf, pos)
                end = pos + 16 + ln
                if ver != VERSION:
                    raise ProtocolError(f"answer of protocol version {ver}")
                if end > n:
                    break
                if self.ifds and self.ifds[0][2] <= self.ipos + pos:
                    raise ProtocolError("a descriptor came with no frame")
                if typ == T_RESULT and not flags and ln >= 32:
                    e = pending.get(tag)
                    if e is not None and e.kind == K_TASK:
                        del pending[tag]
                        if e.mfd != -1:
                            os.close(e.mfd)
                            e.mfd = -1
                            self.nmfd -= 1
                        task_id, state, code, _, _ = unpack_result(buf, pos + 16)
                        e.answer(state, code, mv[pos + 48:end].tobytes(), task_id)
                elif typ == T_RESULT:
                    self._result(buf, pos, end, flags, tag)
                elif typ == T_PROGRESS:
                    e = pending.get(tag)
                    if e is not None and e.progress is not None and ln >= 16:
                        done, total = PROGRESS.unpack_from(buf, pos + 16)
                        msg = bytes(buf[pos + 32:end]).decode("utf-8", "replace")
                        try:
                            e.progress(done, total, msg)
                        except Exception:  # the caller's bug, not the link's
                            LOG.exception("taskhost: progress callback failed")
                elif typ == T_REPLY or typ == T_ERROR:
                    self._reply(buf, pos, end, typ, flags, tag)
                elif typ == T_ACCEPTED:
                    e = pending.get(tag)
                    if e is not None and ln >= 8:
                        e.task_id = U64.unpack_from(buf, pos + 16)[0]
                pos = end
        finally:
            mv.release()
            del buf[:pos]
            self.ipos += pos

    def _take_fd(self, frame_pos: int) -> int:
        if self.ifds:
            fd, lo, hi = self.ifds[0]
            if lo <= frame_pos < hi:
                self.ifds.popleft()
                return fd
        raise ProtocolError("an answer's memfd did not come")

    def _result(self, buf: bytearray, pos: int, end: int, flags: int,
                tag: int) -> None:
        if end - pos < 48:
            raise ProtocolError("short result frame")
        task_id, state, code, wait_us, run_us = RESULT.unpack_from(buf, pos + 16)
        fd = self._take_fd(self.ipos + pos) if flags & F_RES_FD else -1
        e = self.pending.pop(tag, None)
        try:
            if flags & (F_RES_FD | F_RES_IN_FD):
                length = U64.unpack_from(buf, pos + 48)[0]
                if e is None:
                    return
                src = fd if flags & F_RES_FD else e.mfd
                if src == -1:
                    raise ProtocolError("output in a memfd the task had not")
                data = _read_fd(src, length)
            elif e is None:
                return
            else:
                data = bytes(buf[pos + 48:end])
        finally:
            if fd != -1:
                os.close(fd)
            if e is not None and e.mfd != -1:
                os.close(e.mfd)
                e.mfd = -1
                self.nmfd -= 1
        if e.kind == K_TASK:
            e.answer(state, code, data, task_id)

    def _reply(self, buf: bytearray, pos: int, end: int, typ: int, flags: int,
               tag: int) -> None:
        code = CODE.unpack_from(buf, pos + 16)[0] if end - pos >= 20 else -15
        text = bytes(buf[pos + 20:end]).decode("utf-8", "replace")
        if typ == T_ERROR or code < 0:
            self.last_error = text
        e = self.pending.get(tag)
        if e is None:
            return
        if e.kind == K_PROBE:
            del self.pending[tag]
            self.fd_mode = FD_YES if typ == T_REPLY and flags & F_FD_OK else FD_NO
        elif e.kind == K_CTL:
            del self.pending[tag]
            e.answer(code, text, flags)
        elif typ == T_ERROR:  # the daemon refused this very task
            del self.pending[tag]
            if e.mfd != -1:
                os.close(e.mfd)
                e.mfd = -1
                self.nmfd -= 1
            e.answer(6, code, text.encode(), 0)

    # ---- the end ----

    def mark_lost(self, why: str) -> List[Pending]:
        """Ends the connection's state after it was lost: later requests
        raise the same ConnectionLost. Returns the waiting requests, for
        fail_all() to answer (outside any lock)."""
        if self.lost is not None:
            return []
        if self.last_error and self.last_error not in why:
            why = f"{why}: {self.last_error}"
        self.lost = ConnectionLost(f"connection to taskhostd lost: {why}")
        pending, self.pending = self.pending, {}
        self.ofds.clear()  # their memfds belong to the entries
        while self.ifds:
            os.close(self.ifds.popleft()[0])
        self.obuf.clear()
        return list(pending.values())

    def fail_all(self, entries: List[Pending]) -> None:
        """Answers each of entries once with the ConnectionLost."""
        lost = self.lost
        for e in entries:
            if e.mfd != -1:
                os.close(e.mfd)
                e.mfd = -1
                self.nmfd -= 1
            if e.kind == K_TASK:
                e.answer(5, EIO, lost, 0)
            elif e.kind == K_CTL:
                e.answer(EIO, str(lost), 0)


def _ignore(*_: Any) -> None:
    pass


def outcome(state: int, code: int, data: Any, task_id: int) -> Optional[TaskError]:
    """None for an ok answer, else the exception that tells why not."""
    if state == STATE_OK:
        return None
    if isinstance(data, ConnectionLost):
        return data
    return task_error(state, code, data.decode("utf-8", "replace"), task_id)


def stats_format(fmt: str) -> int:
    try:
        return {"text": 0, "json": 1, "prometheus": 2}[fmt]
    except KeyError:
        raise ValueError("format must be 'text', 'json' or 'prometheus'") from None

