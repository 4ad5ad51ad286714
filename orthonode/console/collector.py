"""Index state as Prometheus gauges, read at scrape time (so they hold whichever process did the work).

``orthonode_jobs{state}``, ``orthonode_queue_depth`` (jobs PENDING or QUEUED), ``orthonode_deliveries
{destination,state}``, ``orthonode_studies{state}`` and ``orthonode_free_disk_bytes`` of the data
directory. A scrape that cannot reach the index reports ``orthonode_index_up 0`` instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orthonode.index import reads
from orthonode.index.db import transaction
from orthonode.index.models import utcnow
from orthonode.runtime import Runtime

log = logging.getLogger(__name__)


class IndexCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("orthonode_index_up", "1 if the index answered this scrape")
        try:
            with transaction(self.rt.sessions) as session:
                board = reads.dashboard(session, utcnow())
        except Exception:
            log.warning("metrics: the index did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("orthonode_jobs", "Jobs in the index by state", labels=["state"])
        for state, n in sorted(board.jobs_by_state.items()):
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily(
            "orthonode_queue_depth", "Jobs waiting for a worker (pending or queued)", value=board.queue_depth
        )
        studies = GaugeMetricFamily("orthonode_studies", "Studies in the index by state", labels=["state"])
        for state, n in sorted(board.studies_by_state.items()):
            studies.add_metric([state], n)
        yield studies
        deliveries = GaugeMetricFamily(
            "orthonode_deliveries_by_state",
            "Deliveries by destination and state",
            labels=["destination", "state"],
        )
        for name, states in sorted(board.deliveries_by_destination.items()):
            for state, n in sorted(states.items()):
                deliveries.add_metric([name, state], n)
        yield deliveries
        yield GaugeMetricFamily(
            "orthonode_free_disk_bytes",
            "Free bytes on the data directory's filesystem",
            value=self.rt.store.free_bytes(),
        )
