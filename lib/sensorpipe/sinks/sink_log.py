"""The file sink's log (`<table>/_spark_metadata`): which data files each batch committed.

Spark writes one log file per batch, `N` (the batch's own entries) or, every
`spark.sql.streaming.fileSink.log.compactInterval` batches, `N.compact` (every entry up to N,
less those past the sink's `retention`). Older log files are deleted some minutes after the
compaction that supersedes them, so the state as of an old batch cannot always be rebuilt:
`files_through` says so (`SinkLogGap`) rather than guessing.
"""

from __future__ import annotations

import json
from typing import Any


class SinkLogGap(RuntimeError):
    """The log files needed to know a batch's files are gone (deleted after a compaction)."""


def _entries(sink_log: Any, name: str) -> list[dict[str, Any]] | None:
    text = sink_log.text(name)
    if text is None:
        return None
    # The first line is the log's version ("v1").
    return [json.loads(line) for line in text.splitlines()[1:] if line.strip()]


def _added(entries: list[dict[str, Any]]) -> list[str]:
    return [e["path"] for e in entries if e.get("action") == "add"]


def _sizes(entries: list[dict[str, Any]]) -> dict[str, int]:
    return {e["path"]: int(e["size"]) for e in entries if e.get("action") == "add"}


def _log_ids(sink_log: Any) -> tuple[set[int], set[int]]:
    """(batch ids with a delta file, batch ids with a compaction file)."""
    deltas, compacts = set(), set()
    for name in sink_log.children(""):
        if name.isdigit():
            deltas.add(int(name))
        elif name.endswith(".compact") and name[: -len(".compact")].isdigit():
            compacts.add(int(name[: -len(".compact")]))
    return deltas, compacts


def latest_batch(sink_log: Any) -> int:
    """The last batch the log holds (-1 for an empty or absent log)."""
    deltas, compacts = _log_ids(sink_log)
    return max(deltas | compacts, default=-1)


def files_through(sink_log: Any, batch_id: int) -> dict[str, int]:
    """Every data file the table's log lists as of batch `batch_id` (none for -1), with the
    size the sink logged for it: the latest compaction at or before it plus the batch files
    after that compaction."""
    if batch_id < 0:
        return {}
    deltas, compacts = _log_ids(sink_log)
    base = max((c for c in compacts if c <= batch_id), default=None)
    files: dict[str, int] = {}
    if base is not None:
        files.update(_sizes(_entries(sink_log, f"{base}.compact") or []))
    for batch in range((base if base is not None else -1) + 1, batch_id + 1):
        if batch not in deltas:
            raise SinkLogGap(
                f"{sink_log.root}: no log file for batch {batch} (needed for the files as of "
                f"batch {batch_id}; Spark deletes superseded log files after a compaction)"
            )
        files.update(_sizes(_entries(sink_log, str(batch)) or []))
    return files


def batch_files(sink_log: Any, batch_id: int, started_ms: int) -> list[str]:
    """The data files a file-sink batch added: the batch's own log file, or for a compaction
    file the entries that were not there as of the batch before (when that can still be
    rebuilt; otherwise those written since the batch started, `started_ms`)."""
    own = _entries(sink_log, str(batch_id))
    if own is not None:
        return _added(own)
    compact = _entries(sink_log, f"{batch_id}.compact")
    if compact is None:
        return []
    try:
        before = files_through(sink_log, batch_id - 1)
    except SinkLogGap:
        recent = [e for e in compact if e["modificationTime"] >= started_ms]
        return _added(recent)
    return [p for p in _added(compact) if p not in before]


def damaged_files(files: dict[str, int]) -> list[str]:
    """The logged files that are gone or not the size the sink logged (local or s3://)."""
    from urllib.parse import urlsplit

    import pyarrow.fs as pafs

    groups: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for uri, size in sorted(files.items()):
        parts = urlsplit(uri)
        scheme = "s3" if parts.scheme in ("s3", "s3a", "s3n") else "file"
        path = f"{parts.netloc}{parts.path}" if scheme == "s3" else parts.path
        groups.setdefault((scheme, parts.netloc), []).append((uri, path, size))
    out: list[str] = []
    for (scheme, bucket), wanted in groups.items():
        filesystem = (
            pafs.FileSystem.from_uri(f"s3://{bucket}")[0]
            if scheme == "s3"
            else pafs.LocalFileSystem()
        )
        infos = filesystem.get_file_info([path for _, path, _ in wanted])
        for (uri, _, size), info in zip(wanted, infos, strict=True):
            if info.type == pafs.FileType.NotFound:
                out.append(f"{uri}: gone")
            elif info.size != size:
                out.append(f"{uri}: {info.size} bytes, the log says {size}")
    return out


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


def next_batch_id(checkpoint: str) -> int:
    """The batch a query started on `checkpoint` runs first: the last planned batch if it was
    never committed (a crash re-runs it), else the one after the last committed."""
    from sensorpipe.jsonstore import JsonStore

    store = JsonStore(checkpoint)

    def ids(folder: str) -> list[int]:
        return [int(n) for n in store.children(folder) if n.isdigit()]

    offsets, commits = ids("offsets"), ids("commits")
    if offsets and (not commits or max(offsets) > max(commits)):
        return max(offsets)
    return max(commits) + 1 if commits else 0
