"""Ingest benchmark: dcmtk ``storescu`` sends the same SYNTHETIC files to orthonode, dcmtk ``storescp`` and
Orthanc over loopback; prints instances/s and MB/s (medians of several runs) and the ratio to storescp.

Data (generated once into ``--out``, reused when it matches): SYNTHETIC objects from
``orthonode.peers.synthetic`` (PatientName ``SYNTHETIC^KNEE``, seeded noise pixels, no patient data),
uncompressed Explicit VR Little Endian:

- MR: ``--mr`` single-frame MR Image Storage instances, 512 x 512, 16 bits allocated (10 series);
- XR: ``--xr`` DX For Presentation radiographs, 2500 x 2000, 16 bits allocated (one series each).

Each run starts every receiver fresh with empty storage, sends the MR set and then the XR set with ONE
``storescu`` invocation each (one association; ``TCP_NODELAY=1`` in dcmtk's environment, or dcmtk's small
writes stall on Nagle's algorithm), times the ``storescu`` wall-clock, checks that the receiver stored
every instance, and stops it. Page-cache writeback is flushed (``sync``) before each timed send so that
one receiver's dirty pages are not written back on the next receiver's time, the files to send are read
first (in the page cache for storescu), and each receiver starts ``--settle`` seconds after the previous
one's storage was deleted (why: the notes printed with the table). The order of the receivers rotates
from run to run.

Receivers:

- ``orthonode``: ``orthonode serve`` as in production (default settings, SQLite index, local broker with
  its embedded worker) on a fresh data directory; timed once the embedded worker is ready (its start-up,
  mostly importing torch, takes some 5 s of CPU after the node listens: the other receivers are timed
  after theirs too);
- ``storescp``: dcmtk ``storescp`` writing each instance to a file (no fsync);
- ``storescp-fsync`` (not in the default set): ``storescp --exec-sync -xcr "sync FILE DIR"``, i.e. dcmtk
  with an fsync of each file and its directory before the response, paid with a fork/exec per instance
  (dcmtk 3.6.7 has no fsync option);
- ``orthanc``: Orthanc 1.10 with its default filesystem storage and SQLite index.

Run ``.venv/bin/python benchmarks/ingest.py --help`` for the options. Nothing is written in the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from support.node import NodeProcess  # noqa: E402
from support.peers.dcmtk import StoreSCP, dcmtk_env  # noqa: E402

from orthonode.peers.orthanc import Orthanc  # noqa: E402
from orthonode.settings import Settings  # noqa: E402

DATA_VERSION = 1
MR_SIZE = (512, 512)
XR_SIZE = (2500, 2000)
MR_SERIES = 10
CALLING_AET = "BENCHSCU"
ALL_RECEIVERS = ("orthonode", "storescp", "storescp-fsync", "orthanc")
WORKER_READY_S = 180.0  # the embedded worker's start-up, bounded
MB = 1_000_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ data


def _generate(out: Path, n_mr: int, n_xr: int) -> None:
    from support.peers import synthetic

    study = synthetic.new_study_uid()
    per_series = -(-n_mr // MR_SERIES) if n_mr else 0
    count = 0
    mr_dir, xr_dir = out / "mr", out / "xr"
    for series in range(MR_SERIES):
        n = min(per_series, n_mr - count)
        if n <= 0:
            break
        datasets = synthetic.mr_series(
            study,
            n_slices=n,
            rows=MR_SIZE[0],
            cols=MR_SIZE[1],
            series_number=series + 1,
            seed=series,
            description=f"PD FS SAG {series + 1}",
        )
        for ds in datasets:
            count += 1
            ds.save_as(mr_dir / f"mr{count:05d}.dcm", enforce_file_format=True)
    xr_study = synthetic.new_study_uid()
    for i in range(n_xr):
        ds = synthetic.radiograph(
            xr_study,
            rows=XR_SIZE[0],
            cols=XR_SIZE[1],
            laterality="L" if i % 2 else "R",
            seed=i,
            series_number=i + 1,
        )
        ds.save_as(xr_dir / f"xr{i + 1:05d}.dcm", enforce_file_format=True)


def ensure_data(out: Path, n_mr: int, n_xr: int) -> dict[str, list[Path]]:
    """The SYNTHETIC files in ``out`` (generated when missing or made with other parameters)."""
    manifest_path = out / "manifest.json"
    wanted = {"version": DATA_VERSION, "mr": n_mr, "xr": n_xr, "mr_size": MR_SIZE, "xr_size": XR_SIZE}
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        with contextlib.suppress(ValueError):
            manifest = json.loads(manifest_path.read_text())
    files = {"MR": sorted((out / "mr").glob("*.dcm")), "XR": sorted((out / "xr").glob("*.dcm"))}
    if (
        {k: manifest.get(k) for k in wanted} != json.loads(json.dumps(wanted))
        or len(files["MR"]) != n_mr
        or len(files["XR"]) != n_xr
    ):
        log(f"generating {n_mr} MR and {n_xr} XR SYNTHETIC instances in {out} ...")
        t0 = time.monotonic()
        for sub in ("mr", "xr"):
            shutil.rmtree(out / sub, ignore_errors=True)
            (out / sub).mkdir(parents=True)
        _generate(out, n_mr, n_xr)
        manifest_path.write_text(json.dumps({**wanted, "synthetic": True}))
        files = {"MR": sorted((out / "mr").glob("*.dcm")), "XR": sorted((out / "xr").glob("*.dcm"))}
        log(f"generated in {time.monotonic() - t0:.0f} s")
    return {k: v for k, v in files.items() if v}


# ------------------------------------------------------------------------------------------------ processes


def _cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system) of ``root_pid`` and its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def wait_quiet(pid: int, timeout: float = 60.0, window: float = 0.5, threshold: float = 0.05) -> None:
    """Wait until ``pid`` and its children use less than ``threshold`` CPU seconds per ``window``
    (start-up finished: the node's embedded worker, Orthanc's database), at most ``timeout``."""
    deadline = time.monotonic() + timeout
    last = _cpu_seconds(pid)
    for _ in range(int(timeout / window) + 1):
        time.sleep(window)
        now = _cpu_seconds(pid)
        if now - last < threshold or time.monotonic() > deadline:
            return
        last = now


@dataclass
class Receiver:
    """One receiver under test: started fresh in ``workdir``, asked how many instances it stored."""

    name: str
    max_pdu: int
    host: str = "127.0.0.1"
    port: int = 0
    aet: str = ""
    pid: int = 0
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    _count: Callable[[], int] | None = field(default=None, repr=False)

    def start(self, workdir: Path) -> None:
        getattr(self, "_start_" + self.name.replace("-", "_"))(workdir)
        wait_quiet(self.pid)

    def count(self) -> int:
        assert self._count is not None
        return self._count()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    # -- orthonode serve, production defaults --------------------------------------------------------
    def _start_orthonode(self, workdir: Path) -> None:
        defaults = {
            name: Settings.model_fields[name].default
            for name in (
                "series_quiet_seconds",
                "study_quiet_seconds",
                "sweep_interval_seconds",
                "enqueue_retry_seconds",
                "min_free_bytes",
                "log_level",
            )
        }
        node = NodeProcess(workdir, **defaults)
        node.start()
        assert node.proc is not None
        deadline = time.monotonic() + WORKER_READY_S
        while not re.search(r"celery@\S+ ready\.", node.log_text()):
            if time.monotonic() > deadline or not node.running:
                node.kill()
                raise RuntimeError(f"orthonode: the embedded worker was not ready in {WORKER_READY_S:.0f} s")
            time.sleep(0.1)
        self.port, self.aet, self.pid = node.port, node.ae_title, node.proc.pid
        db = node.data_dir / "index.sqlite3"
        studies = node.data_dir / "studies"

        def count() -> int:
            files = sum(1 for _ in studies.rglob("*.dcm"))
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                rows = int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])
            if files != rows:
                raise RuntimeError(f"orthonode: {files} files but {rows} index rows")
            return rows

        def stop() -> None:
            node.terminate(timeout=60)
            node.kill()

        self._count, self._stop = count, stop

    # -- dcmtk storescp ------------------------------------------------------------------------------
    def _start_storescp(self, workdir: Path, extra: Sequence[str] = ()) -> None:
        scp = StoreSCP(workdir / "received", extra_args=["-pdu", str(self.max_pdu), *extra])
        scp.start()
        assert scp._process is not None
        self.port, self.aet, self.pid = scp.port, scp.aet, scp._process.pid
        self._count = lambda: len(scp.files())
        self._stop = scp.stop

    def _start_storescp_fsync(self, workdir: Path) -> None:
        self._start_storescp(workdir, ["--exec-sync", "--exec-on-reception", "sync #p/#f #p"])

    # -- Orthanc -------------------------------------------------------------------------------------
    def _start_orthanc(self, workdir: Path) -> None:
        pacs = Orthanc(workdir / "orthanc", extra_config={"MaximumPduLength": self.max_pdu})
        pacs.start()
        assert pacs._process is not None
        self.port, self.aet, self.pid = pacs.dicom_port, pacs.aet, pacs._process.pid

        def count() -> int:
            with urllib.request.urlopen(f"{pacs.url}/statistics", timeout=30) as rsp:
                return int(json.load(rsp)["CountInstances"])

        self._count, self._stop = count, pacs.stop


# ------------------------------------------------------------------------------------------------ sending


def storescu_command(receiver: Receiver, files: Sequence[Path], max_pdu: int) -> list[str]:
    binary = shutil.which("storescu")
    if binary is None:
        raise SystemExit("storescu not found: install dcmtk")
    return [
        binary,
        "-aet",
        CALLING_AET,
        "-aec",
        receiver.aet,
        "--max-pdu",
        str(max_pdu),
        "--max-send-pdu",
        str(max_pdu),
        receiver.host,
        str(receiver.port),
        *map(str, files),
    ]


def warm(files: Sequence[Path]) -> None:
    """Read the files to send, so that storescu finds them in the page cache whatever reclaimed it
    since the last run (this VM runs DAMON's proactive page-out)."""
    for path in files:
        with open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass


@dataclass(frozen=True)
class Measurement:
    seconds: float  # storescu wall-clock
    receiver_cpu: float  # CPU seconds (user + system) of the receiver's process tree meanwhile
    sender_cpu: float  # CPU seconds of storescu


def send(receiver: Receiver, files: Sequence[Path], max_pdu: int) -> Measurement:
    """Send ``files`` with one storescu invocation; return its wall-clock and CPU time."""
    cmd = storescu_command(receiver, files, max_pdu)
    cpu0 = _cpu_seconds(receiver.pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run(
        cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - t0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = _cpu_seconds(receiver.pid)
    if result.returncode != 0 or "Store Failed" in result.stderr or "Store Failed" in result.stdout:
        output = (result.stderr or result.stdout)[-2000:]
        raise RuntimeError(f"storescu to {receiver.name} failed ({result.returncode}): {output}")
    sender = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    return Measurement(elapsed, cpu1 - cpu0, sender)


def wait_count(receiver: Receiver, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    got = receiver.count()
    while got < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        got = receiver.count()
    return got


# ------------------------------------------------------------------------------------------------ report


def table(
    results: dict[tuple[str, str], list[Measurement]],
    receivers: Sequence[str],
    sizes: dict[str, tuple[int, int]],
) -> str:
    lines = [
        "| receiver | dataset | median inst/s | median MB/s | ratio to storescp | min-max inst/s "
        "| median receiver CPU s | runs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, (count, nbytes) in sizes.items():
        base = [m.seconds for m in results.get(("storescp", dataset), [])]
        base_rate = count / statistics.median(base) if base else None
        for name in receivers:
            runs = results.get((name, dataset), [])
            if not runs:
                continue
            secs = [m.seconds for m in runs]
            rate = count / statistics.median(secs)
            mbps = nbytes / MB / statistics.median(secs)
            ratio = f"{rate / base_rate:.2f}x" if base_rate else "n/a"
            lo, hi = count / max(secs), count / min(secs)
            cpu = statistics.median(m.receiver_cpu for m in runs)
            lines.append(
                f"| {name} | {dataset} ({count} x {nbytes / count / MB:.2f} MB) | {rate:.1f} | {mbps:.1f} "
                f"| {ratio} | {lo:.1f}-{hi:.1f} | {cpu:.2f} | {len(secs)} |"
            )
    return "\n".join(lines)


NOTES = """\
Notes:
- Data: SYNTHETIC uncompressed Explicit VR Little Endian files (MR Image Storage 512x512 16-bit; DX For
  Presentation 2500x2000 16-bit), seeded noise, no patient data. MB = 10^6 bytes of DICOM files sent.
- Time: wall-clock of one `storescu` invocation per dataset (one association, process start and
  association set-up included), TCP_NODELAY=1, loopback; median over runs; the receiver is started fresh
  with empty storage for each run and checked afterwards to hold every instance.
- PDU: storescu --max-send-pdu {pdu} for every receiver; storescp -pdu {pdu}; Orthanc MaximumPduLength
  {pdu}; orthonode accepts PDUs up to its max_pdu setting ({node_pdu} bytes), so storescu sends it
  {pdu}-byte PDUs like the others.
- Durability differs: orthonode fsyncs every instance file, renames it into place, fsyncs its directory
  and commits its index row (SQLite WAL, synchronous=FULL) BEFORE answering Success. dcmtk storescp does
  not fsync at all (3.6.7 has no fsync option); `storescp-fsync`, when listed, approximates it with
  `--exec-sync -xcr "sync FILE DIR"` (fsync of the file and its directory before the response, plus a
  fork/exec of `sync` per instance). Orthanc 1.10 fsyncs each stored file (SyncStorageArea, default true)
  and keeps its SQLite index in WAL mode with synchronous=NORMAL (index commits not fsynced each time).
- CPU: user + system seconds of the receiver's process tree during the send (orthonode: serve, its
  embedded worker and the sweeper; idle ones cost nothing). orthonode is sent to once its embedded
  worker is ready (the worker's start-up, mostly importing torch, is not ingest).
- Page cache on a VM: where the guest hands memory it frees back to the host (free page reporting, as
  on this Firecracker VM), writing into pages freed seconds before (the previous receiver's deleted
  files) is ~3x cheaper than writing into pages that must come from the host again (storescp's XR set:
  ~0.3 s against ~1.2 s of kernel CPU). Each receiver therefore starts --settle seconds after the
  deletion ({settle:g} s here), so that all of them write in the same, steady, state.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per receiver (default 5)")
    parser.add_argument("--mr", type=int, default=300, help="MR instances, 512x512 16-bit (default 300)")
    parser.add_argument("--xr", type=int, default=60, help="radiographs, 2500x2000 16-bit (default 60)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "orthonode-bench-ingest",
        help="folder for the generated files and the receivers' storage (default: %(default)s)",
    )
    parser.add_argument(
        "--receivers",
        default="orthonode,storescp,orthanc",
        help=f"comma-separated, from {','.join(ALL_RECEIVERS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--max-pdu",
        type=int,
        default=131072,
        help="max PDU for every receiver and storescu --max-send-pdu (4096..131072, default %(default)s)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait after deleting a receiver's storage before the next starts (default 5)",
    )
    args = parser.parse_args(argv)
    receivers = [r.strip() for r in args.receivers.split(",") if r.strip()]
    unknown = sorted(set(receivers) - set(ALL_RECEIVERS))
    if unknown or not receivers:
        parser.error(f"unknown receivers {unknown}; choose from {', '.join(ALL_RECEIVERS)}")
    if not 4096 <= args.max_pdu <= 131072:
        parser.error("--max-pdu must be within 4096..131072 (dcmtk's range)")
    if args.runs < 1 or args.mr < 0 or args.xr < 0 or args.mr + args.xr == 0 or args.settle < 0:
        parser.error("need --runs >= 1, some instances and --settle >= 0")
    out = args.out.expanduser().absolute()
    if out == REPO or out.is_relative_to(REPO):
        parser.error("--out must be outside the repository")

    python = Path(sys.executable)
    shown = python.relative_to(Path.cwd()) if python.is_relative_to(Path.cwd()) else python
    command = shlex.join([str(shown), sys.argv[0], *sys.argv[1:]])
    files = ensure_data(out / "data", args.mr, args.xr)
    sizes = {name: (len(paths), sum(p.stat().st_size for p in paths)) for name, paths in files.items()}
    results: dict[tuple[str, str], list[Measurement]] = {}
    work = out / "receivers"
    for run in range(args.runs):
        order = receivers[run % len(receivers) :] + receivers[: run % len(receivers)]
        for name in order:
            shutil.rmtree(work, ignore_errors=True)
            os.sync()
            time.sleep(args.settle)  # see NOTES: memory freed by the deletion goes back to the host
            receiver = Receiver(name, args.max_pdu)
            receiver.start(work / name)
            try:
                expected = 0
                for dataset, paths in files.items():
                    warm(paths)
                    os.sync()
                    measured = send(receiver, paths, args.max_pdu)
                    expected += len(paths)
                    got = wait_count(receiver, expected)
                    if got != expected:
                        raise RuntimeError(f"{name} stored {got} of {expected} instances")
                    results.setdefault((name, dataset), []).append(measured)
                    seconds = measured.seconds
                    log(
                        f"run {run + 1}/{args.runs} {name:14s} {dataset}: {seconds:6.2f} s "
                        f"{len(paths) / seconds:7.1f} inst/s {sizes[dataset][1] / MB / seconds:7.1f} MB/s "
                        f"CPU receiver {measured.receiver_cpu:5.2f} s storescu {measured.sender_cpu:5.2f} s"
                    )
            finally:
                receiver.stop()
        shutil.rmtree(work, ignore_errors=True)
        os.sync()

    print(f"# Ingest benchmark\n\nCommand: `{command}`\n")
    print(
        f"Machine: {os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}; "
        f"storage and data under {out}\n"
    )
    print(table(results, receivers, sizes))
    print()
    node_pdu = Settings.model_fields["max_pdu"].default
    print(NOTES.format(pdu=args.max_pdu, node_pdu=node_pdu, settle=args.settle))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
