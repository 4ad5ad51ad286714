"""The receiving transport: pynetdicom's acceptor with its polling replaced by waiting, and C-STORE data
set fragments streamed straight into the received file (hashed on the way).

Why: profiled with ``benchmarks/ingest.py``, stock pynetdicom reads sockets 4 KiB at a time, builds and
copies objects for every P-DATA-TF PDU (PS3.8 §9.3.5) and polls its queues with 1 ms sleeps; on 10 MB
radiographs that was half the node's time per instance. This module keeps pynetdicom's state machine,
association negotiation and DIMSE handling, and changes only (a) how the idle reactors wait and (b) how
P-DATA-TF PDUs that carry nothing but data set fragments of a C-STORE being received are read: they are
written to pynetdicom's own file for that message, and the final fragment, command fragments, TLS
connections and everything else go through pynetdicom unchanged. Durability is not touched: the handler
still fsyncs, renames and indexes before Success (orthonode.dicom.handlers).

It relies on pynetdicom 3.0 internals (the DUL's queues and state names, ``DIMSEMessage._data_set_file``),
hence the pin in pyproject.toml; ``fast_transport = false`` in the settings falls back to stock pynetdicom.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler

from orthonode.dicom.storage import ReceivedDigests, start_writeback

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Transport: pynetdicom's acceptor with its polling replaced by waiting (profile: benchmarks/ingest.py)
# --------------------------------------------------------------------------------------------------
_RECV_CHUNK = 1 << 20  # bytes per recv() while reading a PDU (pynetdicom reads 4096 at a time)
_HAND_ON_STEP = 1 << 20  # received bytes between write-back requests and hashing steps
_IDLE_WAIT_S = 0.02  # longest wait of the idle DUL reactor (bounds any missed wake-up)
_ASSOC_POLL_S = 0.001  # how often kill() looks whether the DUL has stopped


_PDU_HEADER = struct.Struct(">BBL")  # PDU type, reserved, length (PS3.8 9.3.5)
_PDV_HEADER = struct.Struct(">LBB")  # item length, presentation context ID, message control header


# Streaming needs to peek at the socket without blocking and to read the file back by offset.
_CAN_STREAM = all(hasattr(socket, f) for f in ("MSG_PEEK", "MSG_DONTWAIT")) and hasattr(os, "pread")


class _ProtocolError(Exception):
    """The peer sent a malformed PDU."""


#: A-ABORT PDU: type 0x07, length 4, reserved, reserved, source 2 (service provider), reason 0
_A_ABORT = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 0])


class _TransportError(Exception):
    """The connection failed or was closed while a PDU was being read."""


def _log_aborted(exc: Exception) -> None:
    log.warning(
        "association aborted: the peer's request could not be handled (%s: %s)",
        type(exc).__name__,
        str(exc)[:200],
    )


def _recv_into(sock: socket.socket, view: memoryview, size: int) -> int:
    try:
        got = sock.recv_into(view, size)
    except OSError as exc:
        raise _TransportError(str(exc)) from exc
    if not got:
        raise _TransportError("connection closed by the peer in the middle of a PDU")
    return got


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes; the buffer grows as they arrive (a hostile length allocates nothing up front)."""
    data = bytearray()
    while len(data) < size:
        try:
            chunk = sock.recv(min(size - len(data), _RECV_CHUNK))
        except OSError as exc:
            raise _TransportError(str(exc)) from exc
        if not chunk:
            raise _TransportError("connection closed by the peer in the middle of a PDU")
        data += chunk
    return bytes(data)


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


def _quick_ack(sock: socket.socket | None) -> None:
    """Acknowledge received segments at once rather than after the delayed-ACK timer (up to 40 ms on
    Linux): a sender that leaves Nagle's algorithm on (pynetdicom, dcmtk without ``TCP_NODELAY=1``)
    holds back its next small segment until the previous one is acknowledged, so every C-STORE would
    stall that long. Linux leaves quick-ack mode by itself, hence this is set again before each read."""
    if _TCP_QUICKACK is not None and sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        except OSError:
            pass


class _HashThread:
    """One helper thread per association that runs hashing steps in the order they are submitted."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None]
        self._tasks = queue.SimpleQueue()
        threading.Thread(target=self._run, name="orthonode-hash", daemon=True).start()

    def submit(self, task: Callable[..., None], *args: Any) -> None:
        self._tasks.put((task, args))

    def stop(self) -> None:
        self._tasks.put(None)  # after the tasks already submitted

    def _run(self) -> None:
        while (item := self._tasks.get()) is not None:
            task, args = item
            try:
                task(*args)
            except Exception:  # a task records its own failure; never let the thread die
                log.exception("hashing a received file failed")


class _HashJob:
    """SHA-256 of one file being received, read back from the page cache by the association's hash
    thread while the DUL goes on writing: hashing overlaps the transfer instead of following it. It
    reads the file itself, so it covers every byte whoever wrote it (pynetdicom wrote the File Meta)."""

    def __init__(self, path: Path) -> None:
        self.result: Future[str] = Future()
        self._fd = os.open(path, os.O_RDONLY)
        self._sha256 = hashlib.sha256()
        self._done = 0

    def hash_to(self, end: int) -> None:
        if self._fd < 0:
            return
        try:
            while self._done < end:
                data = os.pread(self._fd, min(end - self._done, _RECV_CHUNK), self._done)
                if not data:
                    raise OSError(f"file ends at {self._done} bytes, {end} were written")
                self._sha256.update(data)
                self._done += len(data)
        except BaseException as exc:
            self._fail(exc)

    def finish(self, size: int) -> None:
        self.hash_to(size)
        if self._fd >= 0:
            self.result.set_result(self._sha256.hexdigest())
            self._close()

    def abandon(self) -> None:
        self._fail(RuntimeError("transfer did not complete"))

    def _fail(self, exc: BaseException) -> None:
        if not self.result.done():
            self.result.set_exception(exc)
        self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _ReceivedStream:
    """Data set fragments of one C-STORE, written straight to pynetdicom's file for it. Every MiB the
    kernel is asked to start writing the new bytes to disk (so the handler's fsync has little left)
    and the hash thread to hash them (so the handler need not read the file to get its SHA-256)."""

    def __init__(self, message: Any, out: Any, buffer: bytearray, hasher: _HashThread) -> None:
        self.message = message
        self.out = out
        self.path = Path(out.name)
        out.flush()
        self.job = _HashJob(self.path)
        self._hasher = hasher
        self._view = memoryview(buffer)
        self._size = out.tell()
        self._handed_on = 0  # bytes passed to write-back and hashing

    def write_from(self, sock: socket.socket, size: int) -> None:
        view = self._view
        while size > 0:
            got = _recv_into(sock, view, min(size, len(view)))
            self.out.write(view[:got])  # a failing write raises out of the DUL: pynetdicom aborts
            self._size += got
            size -= got
        if self._size - self._handed_on >= _HAND_ON_STEP:
            self.out.flush()
            start_writeback(self.out.fileno(), self._handed_on, self._size - self._handed_on)
            self._hasher.submit(self.job.hash_to, self._size)
            self._handed_on = self._size

    def finish(self, digests: ReceivedDigests | None) -> None:
        self.out.flush()
        size = self.out.tell()
        self._hasher.submit(self.job.finish, size)
        if digests is not None:
            digests.put(self.path, self.job.result, size)

    def abandon(self) -> None:
        self._hasher.submit(self.job.abandon)


class _Socket(AssociationSocket):
    """Reads a PDU with large ``recv`` calls; like pynetdicom's, it grows the buffer only as data
    arrives, so a hostile PDU length does not allocate memory up front."""

    def recv(self, nr_bytes: int) -> bytearray:
        """Up to ``nr_bytes``; fewer when the peer closes, resets or stalls for ``network_timeout`` mid-PDU
        (:class:`BoundedReadsHandler`), which the DUL treats as the connection closed (Evt17)."""
        sock = self.socket
        data = bytearray()
        while sock is not None and len(data) < nr_bytes:
            try:
                chunk = sock.recv(min(nr_bytes - len(data), _RECV_CHUNK))
            except TimeoutError:
                log.warning("peer sent part of a PDU and then nothing for network_timeout: closing")
                break
            except OSError as exc:  # reset by the peer: the same as a close, without pynetdicom's traceback
                log.info("connection lost while reading a PDU: %s", exc.strerror or exc)
                break
            if not chunk:
                break
            data += chunk
        return data


class _DUL(DULServiceProvider):
    """pynetdicom's DICOM Upper Layer provider with two changes, both measured by
    ``benchmarks/ingest.py`` (receive time of a 10 MB instance: ~32 ms with pynetdicom's, ~12 ms here):

    - idle, it *waits* on the socket and on a wake-up socket pair (written when a PDU is queued for
      sending or the DUL is stopped) instead of sleeping 1 ms between polls, so a received PDU and a
      response to send are handled at once. pynetdicom's reactor loop is unchanged: only
      :meth:`_is_transport_event` blocks (at most ``_IDLE_WAIT_S``) when there is nothing to do;
    - P-DATA-TF PDUs that carry the data set of a C-STORE are streamed from the socket into the
      data set's file (:meth:`_read_pdu_data`), hashed and handed to the kernel's write-back on the
      way, instead of being read 4 KiB at a time, decoded into objects and copied several times.
      The state machine sees the message complete exactly as before (its last fragment goes through
      pynetdicom). Not on TLS connections. ``EVT_DATA_RECV``/``EVT_PDU_RECV`` do not fire for the
      streamed PDUs (the node binds neither).
    """

    def __init__(self, assoc: Association, digests: ReceivedDigests | None = None) -> None:
        super().__init__(assoc)
        self._digests = digests
        self._stream: _ReceivedStream | None = None
        self._hasher: _HashThread | None = None
        self._buffer = bytearray(_RECV_CHUNK)
        self.to_user_queue = _UserQueue(assoc)
        self._run_loop_delay = 0  # the reactor's own sleep: only yields the GIL now
        self._wake_lock = threading.Lock()
        self._wake_r: socket.socket | None
        self._wake_w: socket.socket | None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_w is not None:
                try:
                    self._wake_w.send(b"\0")
                except OSError:  # buffer full: a wake-up is already pending
                    pass

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._wake()
        return bool(super().stop_dul())

    def _is_transport_event(self) -> bool:
        _quick_ack(self.socket.socket if self.socket is not None else None)
        if super()._is_transport_event():
            return True
        if self._kill_thread or not self.event_queue.empty() or not self.to_provider_queue.empty():
            return False
        self._wait(_IDLE_WAIT_S)
        return False

    def _wait(self, timeout: float) -> None:
        wake = self._wake_r
        assoc_sock = self.socket.socket if self.socket is not None else None
        if wake is None:
            time.sleep(timeout)
            return
        watched: list[Any] = [wake]
        if assoc_sock is not None and assoc_sock.fileno() >= 0:
            if isinstance(assoc_sock, ssl.SSLSocket) and assoc_sock.pending():
                return
            watched.append(assoc_sock)
        try:
            ready, _, _ = select.select(watched, [], [], timeout)
        except (OSError, ValueError):  # the connection closed meanwhile: the reactor notices
            return
        if wake in ready:
            try:
                while wake.recv(4096):
                    pass
            except OSError:
                pass

    # -- P-DATA-TF fast path ---------------------------------------------------------------------
    def _abort_connection(self) -> None:
        """A-ABORT (PS3.8 9.3.8: source 2, the service provider; reason 0, not specified), then close."""
        sock = self.socket
        if sock is None or sock.socket is None:
            return
        try:
            sock.socket.sendall(_A_ABORT)
        except OSError:
            pass
        sock.close()

    def _read_pdu_data(self) -> None:
        """Read a PDU. P-DATA-TF PDUs that carry only data set fragments of a C-STORE being received
        into a file are streamed into that file (and hashed) without building PDU objects, as many in a
        row as have already arrived; anything else goes through pynetdicom's reader and state machine
        unchanged."""
        target = self._stream_target(socket.MSG_PEEK)
        if target is None:
            super()._read_pdu_data()
            return
        try:
            while target is not None and self._stream_pdu(*target):
                self._idle_timer.restart()
                target = self._stream_target(socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except _ProtocolError as exc:
            log.warning("invalid P-DATA-TF PDU from the peer (%s); aborting the association", exc)
            self.event_queue.put("Evt19")  # unrecognised or invalid PDU: A-ABORT (AA-8)
        except _TransportError as exc:
            log.warning("connection lost while receiving a PDU: %s", exc)
            self.event_queue.put("Evt17")  # transport connection closed

    def _stream_target(self, peek_flags: int) -> tuple[Any, Any, socket.socket] | None:
        """The DIMSE message and its open data set file when the next PDU may be streamed, else None.

        Streaming applies only in the data transfer state (Sta6) with no PDU, event or primitive to
        send waiting (so nothing is reordered or delayed), on a plain TCP socket, while a C-STORE data
        set is being written to its file, and when the next PDU is a P-DATA-TF whose first item is a
        data set fragment (peeked, not consumed).
        """
        assoc_sock = self.socket.socket if self.socket is not None else None
        if (
            not _CAN_STREAM
            or assoc_sock is None
            or isinstance(assoc_sock, ssl.SSLSocket)
            or self._kill_thread
            or self.state_machine.current_state != "Sta6"
            or not self.event_queue.empty()
            or not self._recv_pdu.empty()
            or not self.to_provider_queue.empty()
        ):
            return None
        message = getattr(self.assoc.dimse, "message", None)
        out = getattr(message, "_data_set_file", None)
        if out is None:
            return None
        _quick_ack(assoc_sock)
        try:
            head = assoc_sock.recv(12, peek_flags)
        except OSError:  # nothing there yet (MSG_DONTWAIT), or the connection failed: the reactor sees
            return None
        if len(head) < 12 or head[0] != 0x04 or head[11] & 1:  # not P-DATA-TF, or a command fragment
            return None
        return message, out, assoc_sock

    def _stream_pdu(self, message: Any, out: Any, sock: socket.socket) -> bool:
        """Stream one P-DATA-TF PDU; True while the message expects more fragments."""
        _, _, remaining = _PDU_HEADER.unpack(_recv_exactly(sock, 6))
        stream = self._stream
        if stream is None or stream.message is not message:
            if stream is not None:
                stream.abandon()
            if self._hasher is None:
                self._hasher = _HashThread()
            stream = self._stream = _ReceivedStream(message, out, self._buffer, self._hasher)
        while remaining > 0:
            if remaining < 6:
                raise _ProtocolError("PDV item header runs past the end of the PDU")
            item_length, context_id, control = _PDV_HEADER.unpack(_recv_exactly(sock, 6))
            if item_length < 2 or item_length + 4 > remaining:
                raise _ProtocolError(f"PDV item length {item_length} does not fit the PDU")
            remaining -= 4 + item_length
            if control & 1:  # a command fragment after data fragments: let pynetdicom take the rest
                rest = _recv_exactly(sock, item_length - 2 + remaining)
                self._queue_pdu(_PDV_HEADER.pack(item_length, context_id, control) + rest)
                return False
            stream.write_from(sock, item_length - 2)
            if control & 2:  # last fragment: the message completes through pynetdicom (empty final PDV)
                stream.finish(self._digests)
                self._stream = None
                rest = _recv_exactly(sock, remaining) if remaining else b""
                self._queue_pdu(_PDV_HEADER.pack(2, context_id, control) + rest)
                return False
        return True

    def _queue_pdu(self, items: bytes) -> None:
        """Hand P-DATA-TF items to pynetdicom as if they had arrived as one PDU."""
        pdu, event = self._decode_pdu(bytearray(_PDU_HEADER.pack(0x04, 0, len(items)) + items))
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        except Exception as exc:
            # E.g. an A-ASSOCIATE-RQ with an even presentation context ID raises inside the state machine
            # (fsm AE-6), which would end this thread with a traceback and leave the peer waiting.
            _log_aborted(exc)
            self._abort_connection()
        finally:
            if self._stream is not None:
                self._stream.abandon()
                self._stream = None
            if self._hasher is not None:
                self._hasher.stop()
            dimse = self.assoc.dimse
            if isinstance(dimse, _DIMSE):
                dimse.wake()  # the association reactor notices the DUL's end at once
            with self._wake_lock:
                for end in (self._wake_r, self._wake_w):
                    if end is not None:
                        end.close()
                self._wake_r = self._wake_w = None


class _DIMSE(DIMSEServiceProvider):
    """The acceptor reactor sleeps 1 ms, then polls for a message (``get_msg(block=False)``); here
    that poll waits for one (up to ``_IDLE_WAIT_S``), so a received C-STORE reaches its handler as
    soon as it is decoded. Whatever else the reactor looks for (A-RELEASE, A-ABORT, the end of the
    DUL) wakes the wait with an empty item (:class:`_UserQueue`)."""

    def get_msg(self, block: bool = False) -> Any:
        if not block:
            try:
                return self.msg_queue.get(block=True, timeout=_IDLE_WAIT_S)
            except queue.Empty:
                return None, None
        deadline = None if self.dimse_timeout is None else time.monotonic() + self.dimse_timeout
        while True:  # pynetdicom's blocking get, not ended early by a wake-up item
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self.msg_queue.get(block=True, timeout=left)
            except queue.Empty:
                return None, None
            if item[1] is not None:
                return item

    def wake(self) -> None:
        self.msg_queue.put((None, None))  # the reactor skips an empty item


class _UserQueue(queue.Queue[Any]):
    """The DUL's queue of primitives for the association (A-ASSOCIATE, A-RELEASE, A-ABORT, ...): a
    put also wakes the association reactor waiting in :meth:`_DIMSE.get_msg`."""

    def __init__(self, assoc: Association) -> None:
        super().__init__()
        self._assoc = assoc

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        dimse = self._assoc.dimse
        if isinstance(dimse, _DIMSE):
            dimse.wake()


class _Association(Association):
    def __init__(self, ae: AE, mode: str, digests: ReceivedDigests | None = None) -> None:
        super().__init__(ae, mode)
        self.dul = _DUL(self, digests)
        # pynetdicom sets the ARTIM timer from acse_timeout on the DUL it made (Association.acse_timeout's
        # setter); this DUL replaces it, so the timer is set again: a connection that sends no
        # A-ASSOCIATE-RQ is closed after acse_timeout, not pynetdicom's built-in 30 s.
        self.dul.artim_timer.timeout = self.acse_timeout
        self.dimse = _DIMSE(self)

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        except Exception as exc:
            # E.g. an A-ASSOCIATE-RQ with a presentation context item that holds no abstract syntax
            # sub-item: pynetdicom's negotiation raises in this thread, which would end with a traceback
            # and leave the connection open and unanswered until the peer gives up.
            _log_aborted(exc)
            dul = self.dul
            if isinstance(dul, _DUL):
                dul._abort_connection()
            dul.kill_dul()

    def kill(self) -> None:
        """pynetdicom's, polling for the DUL's end every 1 ms rather than 10 ms: after a release the
        association's slot (``max_associations``) frees as soon as the peer closes the connection."""
        self._reactor_checkpoint.set()
        self._kill = True
        self.is_established = False
        self._is_paused = True
        while self.dul.is_alive() and not self.dul.stop_dul():
            time.sleep(_ASSOC_POLL_S)


class BoundedReadsHandler(RequestHandler):
    """Every read of an accepted connection ends within ``network_timeout``.

    The sockets a listening socket accepts are blocking without a timeout, and pynetdicom's reader loops
    on ``recv`` until a PDU is complete: a peer that sends part of a PDU and then nothing (a truncated
    A-ASSOCIATE-RQ, a stalled sender) would hold the association's thread and its slot of
    ``max_associations`` for ever, since the ARTIM and idle timers are only checked between reads. With
    the timeout the read fails, the DUL sees the transport closed (Evt17) and the slot frees.
    """

    def setup(self) -> None:
        super().setup()
        timeout = self.ae.network_timeout
        if timeout is not None:
            self.request.settimeout(timeout)


class _RequestHandler(BoundedReadsHandler):
    """pynetdicom's ``RequestHandler._create_association`` with the classes above."""

    digests: ReceivedDigests | None = None

    def _create_association(self) -> Association:
        server: Any = self.server
        assoc = _Association(self.ae, MODE_ACCEPTOR, self.digests)
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(_Socket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:
                    assoc.bind(event, handler, args)
        return assoc


def request_handler(digests: ReceivedDigests | None) -> type[RequestHandler]:
    """The request handler class for ``AE.make_server`` that builds associations with this transport."""
    return type("FastRequestHandler", (_RequestHandler,), {"digests": digests})
