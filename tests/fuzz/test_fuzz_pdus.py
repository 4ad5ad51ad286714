"""Hostile PDUs on a raw socket: A-ASSOCIATE-RQs with odd items and lying lengths, and garbage PDUs.

The A-ASSOCIATE-RQ is built by hand (PS3.8 Section 9.3.2: protocol version, AE titles, then items:
application context 0x10, presentation context 0x20 with abstract 0x30 and transfer 0x40 sub-items, user
information 0x50 with maximum length 0x51) and then bent: unknown item types, lengths that lie, even or
repeated context IDs, more than 128 contexts, empty or overlong AE titles, truncation, a PDU length near
4 GiB, P-DATA before association, random bytes. Each connection must end in an A-ASSOCIATE-AC / -RJ, an
A-ABORT or a closed connection within a bounded time, and the node must still answer C-ECHO.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.fuzz import TRIED, alive, derandomize, examples
from support.node import NodeProcess

pytestmark = pytest.mark.integration

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
DX = b"1.2.840.10008.5.1.4.1.1.1.1"
EXPLICIT = b"1.2.840.10008.1.2.1"
REPLY_TYPES = {0x02: "associate-ac", 0x03: "associate-rj", 0x07: "abort"}
READ_TIMEOUT_S = 15.0  # the fuzz node's ACSE and network timeouts are 3 s: answered or closed by then


def _item(kind: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body) if length is None else length & 0xFFFF) + body


def _context(context_id: int, abstract: bytes, transfers: list[bytes]) -> bytes:
    subs = _item(0x30, abstract) + b"".join(_item(0x40, t) for t in transfers)
    return _item(0x20, struct.pack(">BBBB", context_id, 0, 0, 0) + subs)


def _associate_rq(
    called: bytes, calling: bytes, items: bytes, version: int = 1, length: int | None = None
) -> bytes:
    body = (
        struct.pack(">HH", version, 0) + called.ljust(16)[:16] + calling.ljust(16)[:16] + b"\0" * 32 + items
    )
    return struct.pack(">BBI", 0x01, 0, len(body) if length is None else length) + body


def _valid_items(contexts: int = 1) -> bytes:
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    pcs = b"".join(
        _context((2 * i + 1) % 256, VERIFICATION if i == 0 else DX, [EXPLICIT]) for i in range(contexts)
    )
    return _item(0x10, APPLICATION_CONTEXT) + pcs + user


def _exchange(node: NodeProcess, data: bytes) -> str:
    """Send ``data`` on a fresh connection; the node's first reply PDU type, or "closed"."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.settimeout(READ_TIMEOUT_S)
        try:
            sock.sendall(data)
        except OSError:
            return "closed while sending"
        try:
            head = sock.recv(6)
        except TimeoutError:
            return "no answer"
        except OSError:
            return "closed"
        if not head:
            return "closed"
        kind = REPLY_TYPES.get(head[0], f"pdu 0x{head[0]:02X}")
        if kind == "associate-ac":  # release politely so the slot frees at once
            try:
                sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\0" * 4)
            except OSError:
                pass
        return kind


ae_titles = st.one_of(st.just(b"ORTHONODE"), st.binary(max_size=20), st.just(b""), st.just(b"\\\\\\"))
bent = st.one_of(
    st.tuples(st.just("titles"), st.tuples(ae_titles, ae_titles)),
    st.tuples(st.just("version"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("pdu-length"), st.sampled_from([0, 1, 67, 68, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])),
    st.tuples(st.just("item-length"), st.tuples(st.integers(0, 3), st.integers(0, 0xFFFF))),
    st.tuples(st.just("unknown-item"), st.tuples(st.integers(0, 255), st.binary(max_size=200))),
    st.tuples(st.just("context-ids"), st.lists(st.integers(0, 255), min_size=1, max_size=12)),
    st.tuples(st.just("many-contexts"), st.integers(120, 300)),
    st.tuples(st.just("truncate"), st.integers(0, 400)),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=2000)),
    st.tuples(st.just("pdu-type"), st.tuples(st.integers(0, 255), st.binary(max_size=64))),
)  # fmt: skip


def _build(case: tuple[str, Any]) -> bytes:
    kind, arg = case
    valid = _associate_rq(b"ORTHONODE", b"FUZZER", _valid_items())
    if kind == "titles":
        return _associate_rq(arg[0], arg[1], _valid_items())
    if kind == "version":
        return _associate_rq(b"ORTHONODE", b"FUZZER", _valid_items(), version=arg)
    if kind == "pdu-length":
        return _associate_rq(b"ORTHONODE", b"FUZZER", _valid_items(), length=arg)
    if kind == "item-length":  # the n-th item of the valid request lies about its length
        which, length = arg
        items = [_item(0x10, APPLICATION_CONTEXT), _context(1, VERIFICATION, [EXPLICIT]),
                 _item(0x50, _item(0x51, struct.pack(">I", 16384)))]  # fmt: skip
        if which < len(items):
            body = items[which][4:]
            items[which] = _item(items[which][0], body, length)
        return _associate_rq(b"ORTHONODE", b"FUZZER", b"".join(items))
    if kind == "unknown-item":
        return _associate_rq(b"ORTHONODE", b"FUZZER", _valid_items() + _item(arg[0], arg[1]))
    if kind == "context-ids":
        pcs = b"".join(_context(i, VERIFICATION, [EXPLICIT]) for i in arg)
        user = _item(0x50, _item(0x51, struct.pack(">I", 16384)))
        return _associate_rq(b"ORTHONODE", b"FUZZER", _item(0x10, APPLICATION_CONTEXT) + pcs + user)
    if kind == "many-contexts":
        return _associate_rq(b"ORTHONODE", b"FUZZER", _valid_items(contexts=arg))
    if kind == "truncate":
        return valid[: arg % len(valid)]
    if kind == "garbage":
        return arg
    pdu_type, body = arg  # any PDU type first, e.g. P-DATA-TF (0x04) before an association
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


@settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=derandomize(),
    database=None,
)
@given(case=bent)
# a presentation context item without an abstract syntax sub-item: the association thread died and left
# the connection open, unanswered (found by `make fuzz-long`; orthonode.dicom.transport now aborts)
@example(case=("unknown-item", (0x20, b"\x01\x00\x00\x00")))
@example(case=("unknown-item", (0x20, b"\x03\x00\x00\x00" + _item(0x40, EXPLICIT))))
def test_bent_association_requests_end_cleanly(node: NodeProcess, case: Any) -> None:
    outcome = _exchange(node, _build(case))
    assert outcome != "no answer", f"{case[0]}: the node neither answered nor closed in {READ_TIMEOUT_S} s"
    assert node.running, f"the node died on {case[0]}; log:\n{node.log_text()[-3000:]}"
    assert alive(node), f"the node stopped answering C-ECHO after {case[0]} ({outcome})"
    TRIED["pdus"] += 1
    TRIED[f"pdu {case[0]} -> {outcome}"] += 1


def test_after_the_pdus(node: NodeProcess) -> None:
    print(f"\nfuzzed PDUs: {sum(v for k, v in TRIED.items() if k == 'pdus')} ({dict(TRIED)})")
    assert TRIED["pdus"] >= min(examples(150), 50)
    assert alive(node)
    assert "Traceback" not in node.log_text(), node.log_text()[-3000:]
