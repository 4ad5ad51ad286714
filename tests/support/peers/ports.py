"""Free loopback ports (the package's own, ``orthonode.peers.ports``) and bounded waiting for a TCP
listener, which only the tests need."""

from __future__ import annotations

import socket
import time

from orthonode.peers.ports import LOOPBACK, free_port

__all__ = ["LOOPBACK", "free_port", "port_is_open", "wait_for_port"]


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
