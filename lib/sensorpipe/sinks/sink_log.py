"""The file sink's log (`<table>/_spark_metadata`): which data files each batch committed."""

from __future__ import annotations

import json
from typing import Any


def batch_files(sink_log: Any, batch_id: int, started_ms: int) -> list[str]:
    """The data files a file-sink batch added, from the sink's log (`_spark_metadata`): the
    batch's own file, or a compaction file whose entries written since the batch started."""
    for name in (str(batch_id), f"{batch_id}.compact"):
        text = sink_log.text(name)
        if text is not None:
            entries = [json.loads(line) for line in text.splitlines()[1:] if line.strip()]
            return [
                e["path"]
                for e in entries
                if e.get("action") == "add"
                and (name.isdigit() or e["modificationTime"] >= started_ms)
            ]
    return []


def sink_log_of(table_path: str) -> Any:
    """The sink log of a file-sink table, local or s3:// (a JsonStore over `_spark_metadata`)."""
    from sensorpipe.jsonstore import JsonStore

    return JsonStore(f"{table_path.rstrip('/')}/_spark_metadata")


def checkpoint_query_id(checkpoint: str) -> str:
    """The id Spark gave the query of this checkpoint (`<checkpoint>/metadata`): the same for
    every restart on the checkpoint, new with a new checkpoint, whose batch ids restart at 0.
    What a batch function keys its own bookkeeping by, with the batch id."""
    from sensorpipe.jsonstore import JsonStore

    metadata = JsonStore(checkpoint).read("metadata")
    if not metadata or "id" not in metadata:
        raise RuntimeError(f"{checkpoint}/metadata: no query id (the query has not started)")
    return str(metadata["id"])
