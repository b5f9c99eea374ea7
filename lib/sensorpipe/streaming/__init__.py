"""The streaming job, one concern per module:

- `queries`: one builder per query (events, quarantine, aggregates, alerts), plain values in;
- `run`: which queries a run has (`RunPlan`), starting, waiting, finite and continuous runs;
- `summary`: the run summary (a dataclass that adds itself), its lineage record, and the
  check of a run over generated samples against their manifest.

Delivery of alerts lives in `sinks/alerts/`, the sink log's parsing in `sinks/sink_log.py`, and
reading the lake's tables in `sinks/lake.py` (`read_table`, `stream_table`).
"""

from sensorpipe.streaming.run import (
    LakeRun,
    RunPlan,
    await_lake_run,
    run_lake_job,
    start_lake_run,
    summarize_lake_run,
)
from sensorpipe.streaming.summary import (
    ManifestCheck,
    RunSummary,
    TableWrite,
    check_against_manifest,
    record_lineage,
)

__all__ = [
    "LakeRun", "ManifestCheck", "RunPlan", "RunSummary", "TableWrite", "await_lake_run",
    "check_against_manifest", "record_lineage", "run_lake_job", "start_lake_run",
    "summarize_lake_run",
]  # fmt: skip
