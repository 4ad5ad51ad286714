"""Free loopback ports (the package's own helpers, re-exported for the tests)."""

from orthonode.peers.ports import LOOPBACK, free_port, port_is_open, wait_for_port

__all__ = ["LOOPBACK", "free_port", "port_is_open", "wait_for_port"]
