"""The node's Prometheus metrics (prometheus-client), recorded where the work happens.

Two kinds:

* **Events**, counted or timed by the process that does them: instances and bytes received and C-STORE
  refusals (the SCP), association rejects by reason, studies completed (the sweeper), job and stage
  durations and model load time (workers), delivery attempts by destination and outcome.
* **State**, read from the index at scrape time (:mod:`orthonode.console.collector`): queue depth, jobs
  and deliveries by state, so they are right whichever machine ran the work.

Processes of one node share their events through prometheus-client's multi-process mode: the
``orthonode`` command points ``PROMETHEUS_MULTIPROC_DIR`` at ``data_dir/metrics`` before this module is
first imported, and empties it when ``serve`` starts (``orthonode.cli``); ``/metrics`` aggregates every
process's files. A worker on another machine keeps its own directory: its events are visible to an
``orthonode serve`` on that machine only, while its state is in the index either way.

Labels are bounded sets (outcomes, reasons, stages, configured destination names), never UIDs or AE
titles from the network.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds buckets for job and stage durations: 10 ms .. 10 min.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

INSTANCES_RECEIVED = Counter(
    "orthonode_instances_received",
    "DICOM instances accepted by C-STORE, by what the index made of them",
    ["outcome"],
)
BYTES_RECEIVED = Counter("orthonode_received_bytes", "Bytes of DICOM instances accepted by C-STORE")
STORE_REFUSED = Counter(
    "orthonode_store_refused", "C-STORE requests answered with a failure status (PS3.4 B.2.3)", ["status"]
)
ASSOCIATIONS_REJECTED = Counter(
    "orthonode_association_rejects", "A-ASSOCIATE requests rejected (PS3.8 9.3.4), by reason", ["reason"]
)
CONTEXTS_REJECTED = Counter(
    "orthonode_presentation_contexts_rejected",
    "Proposed presentation contexts not accepted (unsupported SOP class or transfer syntax)",
)
STUDIES_COMPLETED = Counter(
    "orthonode_studies_completed", "Study versions the completion policy closed, by outcome", ["outcome"]
)
JOB_SECONDS = Histogram(
    "orthonode_job_seconds",
    "Wall time of one job attempt, by outcome",
    ["outcome"],
    buckets=_DURATION_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "orthonode_job_stage_seconds",
    "Seconds per inference stage of a job (read, preprocess, encode, heads, encode_outputs)",
    ["stage"],
    buckets=_DURATION_BUCKETS,
)
DELIVERIES = Counter(
    "orthonode_deliveries",
    "Delivery attempts by destination and outcome (sent, retry, failed)",
    ["destination", "outcome"],
)
MODEL_LOAD_SECONDS = Histogram(
    "orthonode_model_load_seconds",
    "Seconds to load the encoder and its heads in a worker",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
