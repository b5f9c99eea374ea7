"""Publish telemetry to a Kinesis stream with PutRecords, the way a fleet gateway would.

At most 500 records and 5 MiB per call; partition key = device id; after a partial failure only
the failed entries are sent again (with backoff, within a bound); optional KPL aggregation; a
target rate; a progress line on stderr.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
from base64 import b64decode
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sensorpipe.sources.kpl import UserRecord, aggregate

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024
MAX_AGGREGATE_BYTES = 50 * 1024  # keeps aggregates well under the 1 MiB record limit
_EVENT_TIME = re.compile(rb'("event_time"\s*:\s*")([^"]*)(")')


class ProduceError(RuntimeError):
    """Records could not be published within the retry bound."""


@dataclass
class ProduceStats:
    user_records: int = 0
    kinesis_records: int = 0
    calls: int = 0
    retried_entries: int = 0
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.user_records / self.seconds if self.seconds else 0.0


def sample_records(samples_dir: str | Path) -> list[tuple[datetime, UserRecord]]:
    """The recorded records of a sample set, in arrival order, with their recorded arrival."""
    out = []
    for path in sorted((Path(samples_dir) / "telemetry").glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            for line in f:
                rec = json.loads(line)
                data = b64decode(rec["dataBase64"]) if "dataBase64" in rec else rec["data"].encode()
                arrival = _parse(rec["approximateArrivalTimestamp"].encode())
                out.append((arrival, UserRecord(rec["partitionKey"], data)))
    return out


def _parse(text: bytes) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.decode().replace("Z", "+00:00"))
    except (ValueError, UnicodeDecodeError):
        return None
    return moment if moment.tzinfo else None


def rebase_event_time(data: bytes, shift: timedelta) -> bytes:
    """Move an ISO event_time by `shift`, touching no other byte (malformed records stay so)."""

    def moved(match: re.Match[bytes]) -> bytes:
        moment = _parse(match.group(2))
        if moment is None:
            return match.group(0)
        text = (moment + shift).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return match.group(1) + text.encode() + match.group(3)

    return _EVENT_TIME.sub(moved, data, count=1)


def rebased(recorded: list[tuple[datetime, UserRecord]], now: datetime) -> list[UserRecord]:
    """Shift event times by whole hours so the last recorded arrival falls in the last hour
    before `now`: recorded samples then relate to their new arrival as they did to the old one
    (the decoder's event-time checks give the same verdicts), and hour partitions stay whole."""
    if not recorded:
        return []
    last_arrival = max(arrival for arrival, _ in recorded)
    shift = timedelta(hours=(now - last_arrival) // timedelta(hours=1))
    return [UserRecord(r.partition_key, rebase_event_time(r.data, shift)) for _, r in recorded]


def aggregated(records: Iterable[UserRecord], per_aggregate: int) -> Iterator[UserRecord]:
    """KPL-style: consecutive records of one partition key packed into one Kinesis record."""
    pending: dict[str, list[UserRecord]] = {}
    sizes: dict[str, int] = {}
    for rec in records:
        group = pending.setdefault(rec.partition_key, [])
        if group and (
            len(group) >= per_aggregate
            or sizes[rec.partition_key] + len(rec.data) > MAX_AGGREGATE_BYTES
        ):
            yield UserRecord(rec.partition_key, aggregate(group))
            group.clear()
            sizes[rec.partition_key] = 0
        group.append(rec)
        sizes[rec.partition_key] = sizes.get(rec.partition_key, 0) + len(rec.data) + 16
    for key, group in pending.items():
        if group:
            yield UserRecord(key, aggregate(group))


def batches(records: Iterable[UserRecord]) -> Iterator[list[UserRecord]]:
    batch: list[UserRecord] = []
    size = 0
    for rec in records:
        rec_size = len(rec.data) + len(rec.partition_key.encode())
        if batch and (len(batch) == MAX_RECORDS_PER_CALL or size + rec_size > MAX_BYTES_PER_CALL):
            yield batch
            batch, size = [], 0
        batch.append(rec)
        size += rec_size
    if batch:
        yield batch


def put_batch(
    client: Any, stream: str, batch: list[UserRecord], stats: ProduceStats, max_attempts: int = 10
) -> None:
    """PutRecords one batch; resend only the entries that failed, with backoff."""
    from botocore.exceptions import ClientError

    pending = batch
    delay = 0.1
    for attempt in range(max_attempts):
        try:
            resp = client.put_records(
                StreamName=stream,
                Records=[{"Data": r.data, "PartitionKey": r.partition_key} for r in pending],
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("ProvisionedThroughputExceededException", "LimitExceededException"):
                raise
            failed = pending
        else:
            stats.calls += 1
            failed = [
                r
                for r, result in zip(pending, resp["Records"], strict=True)
                if "ErrorCode" in result
            ]
        if not failed:
            return
        stats.retried_entries += len(failed)
        pending = failed
        if attempt < max_attempts - 1:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise ProduceError(
        f"{len(pending)} records not accepted by {stream} after {max_attempts} tries"
    )


def produce(
    client: Any,
    stream: str,
    records: list[UserRecord],
    *,
    aggregate_records: int = 0,
    rate: float | None = None,
    progress: bool = False,
) -> ProduceStats:
    """Publish `records` (user records) to `stream`; returns what was sent and how fast."""
    stats = ProduceStats()
    total = len(records)
    kinesis_records = (
        list(aggregated(records, aggregate_records)) if aggregate_records > 1 else records
    )
    users_per_record = total / max(1, len(kinesis_records))
    start = last_shown = time.monotonic()
    for batch in batches(kinesis_records):
        put_batch(client, stream, batch, stats)
        stats.kinesis_records += len(batch)
        stats.user_records = min(total, round(stats.kinesis_records * users_per_record))
        if rate:
            ahead = stats.user_records / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        if progress and time.monotonic() - last_shown >= 0.5:
            last_shown = time.monotonic()
            elapsed = last_shown - start
            done = stats.user_records / total if total else 1.0
            bar = "#" * int(30 * done)
            print(
                f"\r[{bar:<30}] {stats.user_records}/{total} records, "
                f"{stats.user_records / max(elapsed, 1e-9):,.0f}/s",
                end="",
                file=sys.stderr,
            )
    stats.user_records = total
    stats.seconds = time.monotonic() - start
    if progress:
        print(file=sys.stderr)
    return stats


def ensure_stream(client: Any, stream: str, shards: int) -> None:
    """Create the stream with `shards` shards unless it exists; wait until it is ACTIVE."""
    try:
        client.create_stream(StreamName=stream, ShardCount=shards)
    except client.exceptions.ResourceInUseException:
        pass
    client.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
