"""Free loopback ports and bounded waiting for a TCP listener."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The port is found by binding port 0 and closing the socket again, so another process may still take
    it before the caller binds it; tests that start servers on it should fail loudly if the bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until ``host:port`` accepts TCP connections; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    max_attempts = max(1, int(timeout / 0.05) + 1)
    for _ in range(max_attempts):
        if port_is_open(host, port, timeout=min(0.5, max(0.05, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    raise TimeoutError(f"nothing accepted TCP connections on {host}:{port} within {timeout:.1f} s")
