"""Commands that other installed packages add to ``orthonode`` (entry point group ``orthonode.commands``).

The node's own commands live in :mod:`orthonode.cli`. A package that builds on the node (``conformance``)
registers a :class:`Command` in its ``pyproject.toml``::

    [project.entry-points."orthonode.commands"]
    validate = "conformance.cli:VALIDATE"

and ``orthonode validate`` runs it, without ``orthonode`` importing that package by name.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from orthonode.settings import Settings

GROUP = "orthonode.commands"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]


def installed_commands(reserved: set[str]) -> list[Command]:
    """The registered commands, by name; a broken or clashing one is logged and left out."""
    found: dict[str, Command] = {}
    for point in sorted(entry_points(group=GROUP), key=lambda p: p.name):
        try:
            command = point.load()
        except Exception as exc:  # an installed plugin that fails to import must not stop the node's CLI
            log.warning("command %s (%s) could not be loaded: %s", point.name, point.value, exc)
            continue
        if not isinstance(command, Command) or command.name in reserved or command.name in found:
            log.warning(
                "command %s (%s) ignored: not a Command, or its name is taken", point.name, point.value
            )
            continue
        found[command.name] = command
    return list(found.values())
