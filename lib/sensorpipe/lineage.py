"""Lineage: what every job run read and wrote, and the answer to "what produced this?".

Each run writes one JSON document, `<lineage.path>/runs/<run_id>.json`, when it ends (also when
it fails): run id, job, code version, parameters, inputs (paths, tables, streams, with
high-water marks and load ids where there are any), outputs, row counts in / out /
quarantined, schema fingerprints, start and end. The folder reads as a table:

    spark.read.json("build/lineage/runs")

and `sensorpipe lineage what-produced PATH_OR_TABLE` finds the runs whose outputs contain it,
and the runs upstream of them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sensorpipe import __version__
from sensorpipe.config import LineageSettings
from sensorpipe.jsonstore import JsonStore

ROOT = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """The deployed version (set by `sensorpipe deploy`), else the checkout's commit."""
    if os.environ.get("SENSORPIPE_CODE_VERSION"):
        return os.environ["SENSORPIPE_CODE_VERSION"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()

    try:
        sha = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def schema_fingerprint(schema: Any) -> str:
    """A short hash of a Spark schema (a StructType or a DataFrame's)."""
    import hashlib

    schema = getattr(schema, "schema", schema)
    return hashlib.sha256(schema.json().encode()).hexdigest()[:16]


def dataset_name(kind: str, name: str) -> str:
    """Paths are compared as absolute locations; tables and streams by name."""
    if kind == "path" and "://" not in name:
        return os.path.abspath(name)
    return name.rstrip("/")


@dataclass
class LineageRun:
    job: str
    params: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    code_version: str = ""
    started_at: str = ""
    ended_at: str | None = None
    status: str = "running"
    error: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    # Parts of the run that failed while the others went on (an ingest's tables).
    failures: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        self.run_id = self.run_id or f"{self.job}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        self.code_version = self.code_version or code_version()
        self.started_at = self.started_at or now.isoformat()

    def read(self, kind: str, name: str, rows: int | None = None, **detail: Any) -> None:
        self.inputs.append({"kind": kind, "name": dataset_name(kind, name), "rows": rows, **detail})
        self.rows_in += rows or 0

    def wrote(
        self,
        kind: str,
        name: str,
        rows: int | None = None,
        schema_fingerprint: str | None = None,
        quarantine: bool = False,
        **detail: Any,
    ) -> None:
        self.outputs.append(
            {
                "kind": kind,
                "name": dataset_name(kind, name),
                "rows": rows,
                "schema_fingerprint": schema_fingerprint,
                "quarantine": quarantine,
                **detail,
            }
        )
        if quarantine:
            self.rows_quarantined += rows or 0
        else:
            self.rows_out += rows or 0

    def failed(self, part: str, error: BaseException) -> None:
        self.failures.append({"part": part, "error": f"{type(error).__name__}: {error}"[:2000]})

    def checkpoint(self) -> None:
        """Write the record as it stands (status "running"): what a run committed is on record
        even if the process is killed before the run ends."""
        store = getattr(self, "store", None)  # set by recorded_run; not part of the record
        if store is not None:
            store.write(f"runs/{self.run_id}.json", self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def recorded_run(
    settings: LineageSettings, job: str, params: dict[str, Any] | None = None,
    *, protected: bool = False,
) -> Iterator[LineageRun]:  # fmt: skip
    """Yield a run to describe. Its record is written when the run starts (status "running",
    so a killed run leaves one), at each `checkpoint()`, and when the block ends, failed or
    not. A `protected` run (it reads protected health information) records a failure by its
    exception's type alone: the message may quote what the run read (a serial, a value)."""
    run = LineageRun(job, {k: str(v) for k, v in (params or {}).items()})
    run.store = JsonStore(settings.path)
    run.checkpoint()
    try:
        yield run
        run.status = "succeeded"
    except BaseException as exc:
        if protected:
            run.status, run.error = "failed", (
                f"{type(exc).__name__} (the message is in the job's log, not here: the run "
                "reads protected health information)"
            )
        else:
            run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        raise
    finally:
        run.ended_at = datetime.now(UTC).isoformat()
        run.checkpoint()


def load_runs(settings: LineageSettings) -> list[dict[str, Any]]:
    store = JsonStore(settings.path)
    runs = [store.read(f"runs/{name}") for name in store.children("runs") if name.endswith(".json")]
    return sorted((r for r in runs if r), key=lambda r: r["started_at"])


def _contains(output: str, target: str) -> bool:
    """A run that wrote `output` produced `target` if target is the output, lies inside it
    (a partition or file), or is a folder of outputs (a table of loads)."""
    return (
        target == output
        or target.startswith(output + "/")
        or output.startswith(target + "/")
        or output.endswith("." + target)  # a table asked for without its schema
    )


def producers(
    runs: list[dict[str, Any]], target: str, before: str | None = None
) -> list[dict[str, Any]]:
    """Succeeded runs (newest first) that wrote `target`, optionally ended before a time."""
    found = [
        r
        for r in runs
        if r["status"] == "succeeded"
        and (before is None or (r["ended_at"] or "") <= before)
        and any(_contains(o["name"], target) for o in r["outputs"])
    ]
    return sorted(found, key=lambda r: r["ended_at"] or "", reverse=True)


def what_produced(settings: LineageSettings, target: str, depth: int = 4) -> list[dict[str, Any]]:
    """The runs that produced `target`, each with `upstream`: the latest run before it that
    produced each of its inputs (recursively, `depth` levels)."""
    runs = load_runs(settings)
    kind = "path" if ("/" in target or "://" in target) else "table"
    name = dataset_name(kind, target)

    def trace(run: dict[str, Any], level: int) -> dict[str, Any]:
        upstream: dict[str, dict[str, Any]] = {}
        if level < depth:
            for source in run["inputs"]:
                for before in producers(runs, source["name"], before=run["started_at"]):
                    entry = upstream.setdefault(before["run_id"], {"run": before, "inputs": []})
                    entry["inputs"].append(source["name"])
        return {
            **run,
            "upstream": [
                {"inputs": u["inputs"], "run": trace(u["run"], level + 1)}
                for u in upstream.values()
            ],
        }

    return [trace(r, 1) for r in producers(runs, name)]


def render(answers: list[dict[str, Any]], target: str) -> str:
    if not answers:
        return f"no recorded run produced {target}"
    lines = [f"{target} was produced by {len(answers)} run(s), newest first:"]

    def describe(run: dict[str, Any], indent: str) -> None:
        lines.append(
            f"{indent}{run['run_id']}  job={run['job']}  code={run['code_version']}  "
            f"{run['started_at']} -> {run['ended_at']}  rows in/out/quarantined="
            f"{run['rows_in']}/{run['rows_out']}/{run['rows_quarantined']}"
        )
        for source in run["inputs"]:
            marks = {k: v for k, v in source.items() if k not in ("kind", "name", "rows")}
            extra = f"  {marks}" if marks else ""
            rows = f" ({source['rows']} rows)" if source["rows"] is not None else ""
            lines.append(f"{indent}  read  {source['kind']} {source['name']}{rows}{extra}")
        for out in run["outputs"]:
            lines.append(f"{indent}  wrote {out['kind']} {out['name']} ({out['rows']} rows)")
        for up in run["upstream"]:
            lines.append(f"{indent}  {', '.join(up['inputs'])} came from:")
            describe(up["run"], indent + "    ")

    for answer in answers:
        describe(answer, "  ")
    return "\n".join(lines)
