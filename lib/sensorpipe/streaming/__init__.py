"""The streaming job, one concern per module:

- `queries`: one builder per query (events, quarantine, aggregates, alerts), plain values in;
- `run`: which queries a run has (`RunPlan`), starting, waiting, finite and continuous runs;
- `summary`: the run summary (a dataclass that adds itself) and its lineage record.

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
from sensorpipe.streaming.summary import RunSummary, TableWrite, record_lineage

__all__ = [
    "LakeRun", "RunPlan", "RunSummary", "TableWrite", "await_lake_run", "record_lineage",
    "run_lake_job", "start_lake_run", "summarize_lake_run",
]  # fmt: skip
