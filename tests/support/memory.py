"""Peak resident memory of the node's processes, from Linux's /proc (no psutil): ``VmHWM`` is a process's
own high-water mark of resident memory since it started. :class:`PeakRSS` samples whole process trees
(``orthonode serve`` and its embedded worker, ``orthonode worker`` and its pool children) in a thread,
so a child that exits before the end is still counted, and prints the peaks as a table.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

PROC = Path("/proc")


def status_field(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (e.g. ``VmHWM``); None when the process is gone."""
    try:
        lines = (PROC / str(pid) / "status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def peak_rss_kib(pid: int) -> int | None:
    """The process's peak resident set size so far (VmHWM, KiB); None when it is gone."""
    return status_field(pid, "VmHWM")


def _parent(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state; comm may hold spaces


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, parents before their children."""
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (ppid := _parent(int(entry.name))) is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo.extend(sorted(parents.get(pid, [])))
    return tree


def _command(pid: int) -> str:
    try:
        args = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in args if a]
    if "orthonode" in words:  # python -m orthonode serve -> "orthonode serve"
        words = words[words.index("orthonode") :]
    return " ".join(words)[:60]


def _short(command: str) -> str:
    """ "orthonode worker" -> "worker"; any other command: its program's name."""
    words = command.split()
    if len(words) > 1 and words[0] == "orthonode":
        return words[1]
    return Path(words[0]).name if words else "?"


@dataclass(frozen=True)
class Peak:
    process: str  # the label of the tree's root; a descendant's adds "/worker" or its program's name
    pid: int
    command: str
    peak_rss_mib: float


class PeakRSS:
    """``with PeakRSS({"node": pid, "worker0": pid2}) as peaks: ...`` -- samples every ``interval`` s;
    ``peaks.rows()`` are the highest VmHWM seen per process."""

    def __init__(self, roots: dict[str, int], interval: float = 1.0) -> None:
        self.roots = dict(roots)
        self.interval = interval
        self._peaks: dict[int, Peak] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def add(self, label: str, pid: int) -> None:
        self.roots[label] = pid

    def sample(self) -> None:
        for label, root in list(self.roots.items()):
            for pid in descendants(root):
                kib = peak_rss_kib(pid)
                if kib is None:
                    continue
                seen = self._peaks.get(pid)
                if seen is None or kib / 1024 > seen.peak_rss_mib:
                    command = seen.command if seen else _command(pid)
                    name = label if pid == root else f"{label}/{_short(command)}"
                    self._peaks[pid] = Peak(name, pid, command, round(kib / 1024, 1))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakRSS:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()  # the last word, while the processes still run

    def rows(self) -> list[Peak]:
        return sorted(self._peaks.values(), key=lambda p: (p.process, p.pid))

    def table(self) -> str:
        lines = [f"{'process':<16} {'pid':>7} {'peak RSS MiB':>12}  command"]
        lines += [f"{p.process:<16} {p.pid:>7} {p.peak_rss_mib:>12.1f}  {p.command}" for p in self.rows()]
        return "\n".join(lines)

    def write_json(self, path: Path, **extra: object) -> None:
        path.write_text(json.dumps({**extra, "peak_rss": [asdict(p) for p in self.rows()]}, indent=2))
