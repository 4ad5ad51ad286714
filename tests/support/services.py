"""Availability of real services for integration tests.

Rule: outside CI a missing service skips the test with a reason that says how to start or install it;
when the environment variable ``CI`` is ``true`` or ``1`` a missing service fails the test instead, so a
CI machine that lost a service cannot pass silently.

All checks talk to 127.0.0.1 only (unless an override URL from the environment says otherwise) and are
bounded by short timeouts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import uuid
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import pytest

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_DB = 15
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
CONNECT_TIMEOUT_S = 3.0


def in_ci() -> bool:
    """Whether the environment variable ``CI`` marks this run as a CI run."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def unavailable(reason: str) -> NoReturn:
    """Skip the current test (outside CI) or fail it (in CI) because a real service is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so a missing service is a failure)", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, package: str) -> str:
    """Return the absolute path of executable ``name``, or skip/fail naming the Debian ``package``."""
    path = shutil.which(name)
    if path is None:
        unavailable(
            f"{name} not found on PATH: install the Debian package `{package}` (apt-get install {package})"
        )
    return path


# --------------------------------------------------------------------------------------------- PostgreSQL


def _libpq_conninfo(sqlalchemy_url: str) -> str:
    """Turn an SQLAlchemy URL (``postgresql+psycopg://...``) into a URL that libpq/psycopg accepts."""
    from sqlalchemy import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _with_database(sqlalchemy_url: str, database: str) -> str:
    from sqlalchemy import make_url

    return make_url(sqlalchemy_url).set(database=database).render_as_string(hide_password=False)


def postgres_url() -> str:
    """Return the SQLAlchemy URL of a reachable PostgreSQL test database, or skip/fail.

    ``TEST_POSTGRES_URL`` overrides the default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``
    (trust authentication for user ``postgres``, database ``test``).
    """
    url = os.environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed: pip install 'psycopg[binary]'")
    try:
        conninfo = _libpq_conninfo(url)
        with psycopg.connect(conninfo, connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
            conn.execute("SELECT 1").fetchone()
    except Exception as exc:
        unavailable(
            f"PostgreSQL not reachable at {_redact(url)} ({type(exc).__name__}: {exc}); start it "
            "(apt-get install postgresql; createdb -U postgres test; trust auth for 127.0.0.1) "
            "or set TEST_POSTGRES_URL"
        )
    return url


@contextlib.contextmanager
def fresh_postgres_database(base_url: str, prefix: str = "orthonode_test") -> Iterator[str]:
    """Create a new, uniquely named database next to ``base_url``'s and yield its SQLAlchemy URL.

    The database is created with ``CREATE DATABASE`` through a connection to ``base_url`` and dropped
    afterwards with ``DROP DATABASE ... WITH (FORCE)`` (PostgreSQL 13+), which also ends connections a
    test left open.
    """
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin_conninfo = _libpq_conninfo(base_url)
    with psycopg.connect(admin_conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(base_url, name)
    finally:
        with psycopg.connect(admin_conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------------------------- Redis


def _redis_ping(url: str) -> None:
    """Send PING (after AUTH when the URL has a password) over a raw socket; raise on anything but PONG."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 6379
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
        sock.settimeout(CONNECT_TIMEOUT_S)
        if parts.password:
            args = [b"AUTH"]
            if parts.username:
                args.append(unquote(parts.username).encode())
            args.append(unquote(parts.password).encode())
            sock.sendall(_resp_command(args))
            reply = _read_line(sock)
            if not reply.startswith(b"+OK"):
                raise ConnectionError(f"AUTH answered {reply!r}")
        sock.sendall(b"PING\r\n")
        reply = _read_line(sock)
        if not reply.startswith(b"+PONG"):
            raise ConnectionError(f"PING answered {reply!r}")


def _resp_command(args: list[bytes]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def _read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    data = b""
    for _ in range(limit):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
        if data.endswith(b"\r\n"):
            break
    return data


def redis_url(db: int = DEFAULT_REDIS_DB) -> str:
    """Return ``redis://127.0.0.1:6379/{db}`` (or ``TEST_REDIS_URL``) after a PING, or skip/fail."""
    url = os.environ.get("TEST_REDIS_URL") or f"redis://127.0.0.1:6379/{db}"
    try:
        _redis_ping(url)
    except OSError as exc:
        unavailable(
            f"Redis not reachable at {_redact(url)} ({type(exc).__name__}: {exc}); start it "
            "(apt-get install redis-server) or set TEST_REDIS_URL"
        )
    return url


# --------------------------------------------------------------------------------------------- RabbitMQ

AMQP_091_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_FRAME_METHOD = 1
AMQP_CONNECTION_START = (10, 10)


def _amqp_handshake(url: str) -> None:
    """Send the AMQP 0-9-1 protocol header and check that the broker answers with Connection.Start."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5672
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.sendall(AMQP_091_HEADER)
        header = _recv_exact(sock, 11)  # frame header (7 bytes) + class id + method id
        if header.startswith(b"AMQP"):
            raise ConnectionError(f"broker refused AMQP 0-9-1 and proposed {header[:8]!r}")
        frame_type, channel, _size, class_id, method_id = struct.unpack(">BHIHH", header)
        if frame_type != AMQP_FRAME_METHOD or channel != 0 or (class_id, method_id) != AMQP_CONNECTION_START:
            raise ConnectionError(f"unexpected first AMQP frame {header!r}")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    for _ in range(n):
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
        if len(data) == n:
            break
    return data


def rabbitmq_url() -> str:
    """Return ``amqp://guest:guest@127.0.0.1:5672//`` (or ``TEST_RABBITMQ_URL``) after an AMQP handshake."""
    url = os.environ.get("TEST_RABBITMQ_URL") or DEFAULT_RABBITMQ_URL
    try:
        _amqp_handshake(url)
    except OSError as exc:
        unavailable(
            f"RabbitMQ not reachable at {_redact(url)} ({type(exc).__name__}: {exc}); start it "
            "(apt-get install rabbitmq-server) or set TEST_RABBITMQ_URL"
        )
    return url


def _redact(url: str) -> str:
    """The URL with any password replaced by ``***`` for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
