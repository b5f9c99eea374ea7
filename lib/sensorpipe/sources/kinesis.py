"""A Kinesis Data Streams source for Structured Streaming, with Spark 4's Python Data Source API.

    spark.dataSource.register(KinesisDataSource)
    spark.readStream.format("sensorpipe-kinesis")
        .option("kinesis.streamName", "train-telemetry")
        .option("kinesis.metadataPath", "<checkpoint>/kinesis")
        .load()

Columns are those of EMR's `aws-kinesis` connector (`data`, `streamName`, `partitionKey`,
`sequenceNumber`, `approximateArrivalTimestamp`) plus `subSequenceNumber`, the position of a
user record inside a KPL aggregate (0 for plain records).

How offsets work. Only executors read records, one input partition per shard, so the driver
cannot know in advance where a batch will end. The offset of batch N therefore holds, per shard,
where batch N starts reading: the last sequence number (and user record within an aggregate)
read by the batches before it. Batch N's tasks read from there, up to
`kinesis.maxFetchRecordsPerShard` user records or until the shard is caught up or closed, and
write where they stopped to `<metadataPath>/batches/N/<shard>.json`; the driver builds batch N+1's
offset from those files. A re-executed batch (after a crash or a task retry) finds its own end
files and reads exactly up to them, so it yields the same records: with Spark's file sink this
makes the lake exactly-once. A shard that split or merged is read to its end before its
children are planned; children start at their beginning.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.types import StructType

from sensorpipe.jsonstore import JsonStore
from sensorpipe.retry import RetriesExhausted, aws_throttling_or_network, call_with_backoff
from sensorpipe.schemas import KINESIS_SOURCE_SCHEMA
from sensorpipe.sources.kpl import deaggregate
from sensorpipe.worker_imports import install as cheap_import_cache_resets

SHORT_NAME = "sensorpipe-kinesis"
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
THROTTLING = {
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "KMSThrottlingException",
    "ThrottlingException",
}
_GET_RECORDS_MAX = 10000
# Empty GetRecords answers while behind after which a task ends its batch (keeping the
# advanced iterator for the next batch).
EMPTY_POLLS_BEHIND = 5


class KinesisReadError(RuntimeError):
    """Reading a shard failed after the bounded retries; the batch fails and can be re-run."""


class KinesisOptionError(ValueError):
    """A source option is missing or wrong; the message names the option."""


@dataclass(frozen=True)
class KinesisOptions:
    stream_name: str
    metadata_path: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    starting_position: str = "LATEST"
    starting_timestamp: float | None = None
    max_fetch_records_per_shard: int = 100000
    max_retries: int = 8
    retry_initial_ms: int = 100
    retry_max_ms: int = 5000

    @classmethod
    def parse(cls, options: dict[str, str]) -> KinesisOptions:
        opts = {k.lower(): v for k, v in options.items()}

        def get(name: str, default: Any = None, required: bool = False) -> Any:
            value = opts.get(name.lower())
            if value in (None, ""):
                if required:
                    raise KinesisOptionError(f"option {name} is required")
                return default
            return value

        def integer(name: str, default: int) -> int:
            value = get(name, default)
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise KinesisOptionError(
                    f"option {name}: expected a positive integer, got {value!r}"
                ) from None
            if number <= 0:
                raise KinesisOptionError(f"option {name}: expected a positive integer, got {value}")
            return number

        position = str(get("kinesis.startingPosition", "LATEST")).upper()
        if position not in STARTING_POSITIONS:
            raise KinesisOptionError(
                "option kinesis.startingPosition: expected one of "
                f"{', '.join(STARTING_POSITIONS)}, "
                f"got {position!r}"
            )
        timestamp = None
        if position == "AT_TIMESTAMP":
            text = get("kinesis.startingTimestamp", required=True)
            try:
                timestamp = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise KinesisOptionError(
                    f"option kinesis.startingTimestamp: expected an ISO-8601 time, got {text!r}"
                ) from None
        return cls(
            stream_name=get("kinesis.streamName", required=True),
            metadata_path=get("kinesis.metadataPath", required=True),
            region=get(
                "kinesis.region",
                os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
            ),
            endpoint_url=get("kinesis.endpointUrl"),
            starting_position=position,
            starting_timestamp=timestamp,
            max_fetch_records_per_shard=integer("kinesis.maxFetchRecordsPerShard", 100000),
            max_retries=integer("kinesis.maxRetries", 8),
            retry_initial_ms=integer("kinesis.retryInitialMs", 100),
            retry_max_ms=integer("kinesis.retryMaxMs", 5000),
        )


_CLIENTS: dict[tuple[str, str | None], Any] = {}


def kinesis_client(options: KinesisOptions) -> Any:
    """A boto3 Kinesis client: default credential chain; our retry policy, not botocore's.
    One per process and endpoint, kept: a Python worker reads a shard in every micro-batch,
    and a new client cost 6-13 ms a task (service model, endpoint resolution) and its
    connections. boto3's clients are thread-safe; refreshable credentials (an instance
    profile's) renew inside the client."""
    key = (options.region, options.endpoint_url)
    client = _CLIENTS.get(key)
    if client is None:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        )
        client = _CLIENTS[key] = boto3.client(
            "kinesis", region_name=options.region, endpoint_url=options.endpoint_url, config=config
        )
    return client


def call_with_retries(options: KinesisOptions, what: str, fn: Any, **kwargs: Any) -> Any:
    """Call `fn`, backing off on throttling and network errors, at most `max_retries` times."""
    try:
        return call_with_backoff(
            fn,
            what,
            aws_throttling_or_network(THROTTLING),
            options.max_retries,
            options.retry_initial_ms / 1000,
            options.retry_max_ms / 1000,
            **kwargs,
        )
    except RetriesExhausted as exc:
        raise KinesisReadError(str(exc)) from None


# -- where a shard is read from -------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where reading a shard starts: an iterator type, and for AT/AFTER a sequence number.

    AT_SEQUENCE_NUMBER comes with `skip`, the user records of that (aggregated) record that
    were already read: resumption inside a KPL aggregate.
    """

    kind: str  # TRIM_HORIZON | AT_TIMESTAMP | AT_SEQUENCE_NUMBER | AFTER_SEQUENCE_NUMBER
    seq: str | None = None
    skip: int = 0
    timestamp: float | None = None
    closed: bool = False  # the shard has been read to its end
    # A shard iterator already advanced past empty answers beyond the position (a stretch of
    # the shard with no records, while still behind): the next batch continues from it rather
    # than walking the same stretch again. It expires after 5 minutes; the position stands.
    iterator: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, 0, False)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Position:
        return cls(**data)

    def iterator_args(self) -> dict[str, Any]:
        if self.kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            return {"ShardIteratorType": self.kind, "StartingSequenceNumber": self.seq}
        if self.kind == "AT_TIMESTAMP":
            return {
                "ShardIteratorType": self.kind,
                "Timestamp": datetime.fromtimestamp(self.timestamp, tz=UTC),
            }
        return {"ShardIteratorType": "TRIM_HORIZON"}


def after(seq: str, sub: int, subs_in_record: int) -> Position:
    """The position just after user record `sub` of the record `seq`."""
    if sub + 1 >= subs_in_record:
        return Position("AFTER_SEQUENCE_NUMBER", seq)
    return Position("AT_SEQUENCE_NUMBER", seq, skip=sub + 1)


def shard_iterator(client: Any, options: KinesisOptions, shard_id: str, position: Position) -> str:
    """A shard iterator at `position` (GetShardIterator, with the source's retries)."""
    return call_with_retries(
        options,
        f"GetShardIterator shard {shard_id} of {options.stream_name}",
        client.get_shard_iterator,
        StreamName=options.stream_name,
        ShardId=shard_id,
        **position.iterator_args(),
    )["ShardIterator"]


# -- metadata: where each batch's tasks stopped ---------------------------------------------


class MetadataStore(JsonStore):
    """Where each batch's tasks stopped: tasks write, the driver reads."""

    def batches(self) -> list[int]:
        return sorted(int(n) for n in self.children("batches") if n.isdigit())

    def delete_batch(self, batch: int) -> None:
        self.delete(f"batches/{batch}/")


def _plan_file(batch: int) -> str:
    return f"batches/{batch}/_offset.json"


def _end_file(batch: int, shard: str) -> str:
    return f"batches/{batch}/{shard}.json"


# -- the reader -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardPartition(InputPartition):
    shard_id: str
    start: Position
    batch: int
    options: KinesisOptions


class KinesisStreamReader(DataSourceStreamReader):
    def __init__(self, options: KinesisOptions) -> None:
        self.options = options
        self.store = MetadataStore(options.metadata_path)

    # Driver side ---------------------------------------------------------------------------

    def _shards(self) -> list[dict[str, Any]]:
        client = kinesis_client(self.options)
        shards, token = [], None
        while True:
            kwargs = {"NextToken": token} if token else {"StreamName": self.options.stream_name}
            page = call_with_retries(
                self.options, f"ListShards {self.options.stream_name}", client.list_shards, **kwargs
            )
            shards += page["Shards"]
            token = page.get("NextToken")
            if not token:
                return shards

    def _start_position(self) -> Position:
        if self.options.starting_position == "TRIM_HORIZON":
            return Position("TRIM_HORIZON")
        if self.options.starting_position == "AT_TIMESTAMP":
            return Position("AT_TIMESTAMP", timestamp=self.options.starting_timestamp)
        # LATEST is pinned to the query's first start, so a re-run reads the same records.
        return Position("AT_TIMESTAMP", timestamp=time.time())

    def _with_new_shards(
        self, positions: dict[str, Position], listed: list[dict[str, Any]] | None = None
    ) -> dict[str, Position]:
        """Add shards ready to read: no parent we know of, or every parent read to its end."""
        listed = self._shards() if listed is None else listed
        listed_ids = {s["ShardId"] for s in listed}
        start = (
            self._start_position()
            if not positions
            else Position("AT_TIMESTAMP", timestamp=self.options.starting_timestamp)
            if self.options.starting_position == "AT_TIMESTAMP"
            else Position("TRIM_HORIZON")
        )
        if not positions and self.options.starting_position == "LATEST":
            # Closed shards hold nothing newer than now; open ones start at the pinned time.
            return {
                s["ShardId"]: (
                    Position("TRIM_HORIZON", closed=True)
                    if "EndingSequenceNumber" in s["SequenceNumberRange"]
                    else start
                )
                for s in listed
            }
        out = dict(positions)
        for shard in listed:
            sid = shard["ShardId"]
            if sid in out:
                continue
            parents = [shard.get("ParentShardId"), shard.get("AdjacentParentShardId")]
            ready = all(
                p is None or p not in listed_ids and p not in out or (p in out and out[p].closed)
                for p in parents
            )
            if ready:
                out[sid] = start
        return out

    def initialOffset(self) -> dict:
        existing = self.store.read(_plan_file(0))
        if existing is not None:
            return existing
        offset = {
            "batch": 0,
            "shards": {k: v.to_json() for k, v in self._with_new_shards({}).items()},
        }
        self.store.write(_plan_file(0), offset)
        return offset

    def _positions_after(self, batch: int) -> dict[str, Position] | None:
        """Where batch `batch`'s tasks stopped, or None if it has not run to completion."""
        plan = self.store.read(_plan_file(batch))
        if plan is None:
            return None
        out = {}
        for sid, raw in plan["shards"].items():
            start = Position.from_json(raw)
            if batch == 0 or start.closed:
                out[sid] = start
                continue
            end = self.store.read(_end_file(batch, sid))
            if end is None:
                return None
            out[sid] = Position.from_json(end["position"])
        return out

    def latestOffset(self) -> dict:
        batches = self.store.batches()
        if not batches:
            self.initialOffset()
            batches = [0]
        batch = batches[-1]
        positions = self._positions_after(batch)
        if positions is None:
            # Handed out but not run to completion: offer the same offset again, so a batch
            # that Spark logged is re-run as it was, and one it never logged runs now.
            return self.store.read(_plan_file(batch))
        listed = self._shards()
        shards = self._with_new_shards(positions, listed)
        if self._idle(batch, positions, shards, listed):
            # The batch before read up to the tip and nothing has arrived since: the same
            # offset again, so Spark runs no batch. An empty batch costs a whole batch's fixed
            # part (state stores, checkpoint and sink commits), at every trigger of an idle
            # stream, and delays the records arriving while it runs (issue 14).
            return self.store.read(_plan_file(batch))
        offset = {"batch": batch + 1, "shards": {k: v.to_json() for k, v in shards.items()}}
        self.store.write(_plan_file(batch + 1), offset)  # before Spark logs it
        # As the plan file holds it (keys sorted): Spark tells "no new data" by the offset's
        # JSON text, and an offset offered again (above) is read back from that file.
        return json.loads(json.dumps(offset, sort_keys=True, default=str))

    def _idle(self, batch: int, positions: dict[str, Position], shards: dict[str, Position],
              listed: list[dict[str, Any]]) -> bool:  # fmt: skip
        """Whether batch `batch` read every open shard up to its tip, no shard appeared or
        closed since, and no open shard has a record past its position now. The look is one
        GetShardIterator and one GetRecords of at most one record per shard, and stops at the
        first shard with a record: under load that is one shard's, in place of the two empty
        answers a task used to wait for at the tip of every shard."""
        if batch == 0 or shards.keys() != positions.keys():
            return False
        # A shard closed by a split or merge: its end can take more than one call to show, and
        # its children are planned only once a batch has read it there.
        ended = {s["ShardId"] for s in listed if "EndingSequenceNumber" in s["SequenceNumberRange"]}
        if any(sid in ended for sid, p in positions.items() if not p.closed):
            return False
        plan = self.store.read(_plan_file(batch))
        for sid, raw in plan["shards"].items():
            if raw.get("closed"):
                continue
            end = self.store.read(_end_file(batch, sid))
            if end is None or not end.get("caught_up"):
                return False
        client = kinesis_client(self.options)
        for sid, position in positions.items():
            if position.closed:
                continue
            what = f"shard {sid} of {self.options.stream_name}"
            try:
                iterator = position.iterator or shard_iterator(client, self.options, sid, position)
                answer = call_with_retries(
                    self.options, f"GetRecords {what}", client.get_records,
                    ShardIterator=iterator, Limit=1,
                )  # fmt: skip
            except Exception:  # noqa: BLE001 - e.g. an expired iterator: a batch will look
                return False
            if (answer["Records"] or answer.get("MillisBehindLatest", 0) > 0
                    or answer.get("NextShardIterator") is None):  # fmt: skip
                return False
        return True

    def partitions(self, start: dict, end: dict) -> list[ShardPartition]:
        if start is not None and start.get("batch") == end["batch"]:
            # An offset offered again that Spark took for new data (its text differing from
            # the one it logged, as a checkpoint from before offsets were read back can):
            # nothing to read, and reading batch `end`'s shards again would repeat it.
            return []
        return [
            ShardPartition(sid, Position.from_json(raw), end["batch"], self.options)
            for sid, raw in sorted(end["shards"].items())
            if not raw.get("closed")
        ]

    def commit(self, end: dict) -> None:
        # Keep the last few batches' files: a re-run of batch N needs only batch N's.
        for batch in self.store.batches():
            if batch < end["batch"] - 2:
                self.store.delete_batch(batch)

    # Executor side -------------------------------------------------------------------------

    def read(self, partition: ShardPartition) -> Iterator[tuple]:
        # The worker resets its import caches before every task; on Python 3.11 that re-read
        # pyspark.zip's directory, about 100 ms of each shard's read (py-spy, 2026-12-02).
        cheap_import_cache_resets()  # this worker's next tasks (worker_imports.py)
        yield from read_shard(partition, MetadataStore(partition.options.metadata_path))


def read_shard(part: ShardPartition, store: MetadataStore) -> Iterator[tuple]:
    """Yield the shard's user records for this batch, then record where reading stopped."""
    opts = part.options
    client = kinesis_client(opts)
    what = f"shard {part.shard_id} of {opts.stream_name}"
    # A re-executed batch reads exactly what its first execution read.
    bound = store.read(_end_file(part.batch, part.shard_id))
    bound_last = tuple(bound["last"]) if bound and bound.get("last") else None
    if bound is not None and bound_last is None and not bound["position"].get("closed"):
        store.write(_end_file(part.batch, part.shard_id), bound)
        return
    limit = opts.max_fetch_records_per_shard
    position = part.start
    last: tuple[str, int] | None = None
    count = 0
    closed = False

    def iterator_from(pos: Position) -> str:
        return shard_iterator(client, opts, part.shard_id, pos)

    iterator = position.iterator or iterator_from(position)
    position = replace(position, iterator=None)
    empty_polls = 0
    advanced: str | None = None  # an iterator past empty answers, while behind
    caught_up = False  # stopped at the shard's tip (the driver looks before the next batch)
    done = False
    while not done:
        asked = min(_GET_RECORDS_MAX, max(1, limit - count))
        try:
            resp = call_with_retries(
                opts,
                f"GetRecords {what}",
                client.get_records,
                ShardIterator=iterator,
                Limit=asked,
            )
        except client.exceptions.ExpiredIteratorException:
            # After the last record fully read (a kept iterator older than 5 minutes, too).
            iterator = iterator_from(position)
            continue
        for record in resp["Records"]:
            seq = record["SequenceNumber"]
            users = deaggregate(record["Data"], record["PartitionKey"])
            first = (
                part.start.skip
                if (part.start.kind == "AT_SEQUENCE_NUMBER" and seq == part.start.seq)
                else 0
            )
            for sub in range(first, len(users)):
                user = users[sub]
                yield (
                    user.data,
                    opts.stream_name,
                    user.partition_key,
                    seq,
                    record["ApproximateArrivalTimestamp"].astimezone(UTC),
                    sub,
                )
                last, count = (seq, sub), count + 1
                position = after(seq, sub, len(users))
                if bound_last == last or (bound_last is None and count >= limit):
                    done = True
                    break
            if done:
                break
        if done:
            break
        next_iterator = resp.get("NextShardIterator")
        if next_iterator is None:
            closed = True
            break
        iterator = next_iterator
        at_tip = resp.get("MillisBehindLatest", 0) == 0
        if not resp["Records"]:
            empty_polls += 1
            # Kinesis may answer empty while records lie further on ("it might take multiple
            # calls to get to a portion of the shard that contains records", GetRecords, the
            # Kinesis API Reference): behind, an empty answer still moves the iterator on.
            advanced = None if at_tip else next_iterator
            if bound_last is None:
                # Two empty answers in a row: the end of a closed shard can take a second call
                # to show (NextShardIterator null), and an open shard is then caught up. While
                # behind, a few, then the batch ends keeping the advanced iterator.
                if at_tip and empty_polls >= 2:
                    caught_up = True
                    break
                if empty_polls >= EMPTY_POLLS_BEHIND:
                    break
            elif (at_tip and empty_polls >= 50) or empty_polls >= 10000:
                raise KinesisReadError(f"{what}: could not re-read up to {bound_last}")
        else:
            empty_polls = 0
            advanced = None
            if bound_last is None and at_tip and len(resp["Records"]) < asked:
                # At the tip: 0 ms behind, and fewer records than asked (kinesalite answers
                # 0 ms behind however many records remain). A closed shard's end shows to a
                # later batch's call.
                caught_up = True
                break
    if bound is not None and bound["position"].get("closed") and not closed:
        closed = last == bound_last
    final = replace(position, closed=closed, iterator=None if closed else advanced)
    end = {"position": final.to_json(), "last": list(last) if last else None, "records": count,
           "caught_up": caught_up and not closed}  # fmt: skip
    if bound is not None:
        store.write(_end_file(part.batch, part.shard_id), end)
    elif not store.create(_end_file(part.batch, part.shard_id), end):
        _check_same_end(store.read(_end_file(part.batch, part.shard_id)), end, what, part.batch)


def _check_same_end(first: dict[str, Any] | None, mine: dict[str, Any], what: str,
                    batch: int) -> None:  # fmt: skip
    """Two attempts of one task (a speculative copy, a zombie) may read different amounts:
    the first to record its end wins, and an attempt that read otherwise fails, so the batch
    Spark commits and the end the next batch starts from are the same attempt's."""

    def where(end: dict[str, Any] | None) -> Any:
        if end is None:
            return None
        position = {k: v for k, v in end["position"].items() if k != "iterator"}
        return position, end["last"], end["records"]

    if where(first) != where(mine):
        raise KinesisReadError(
            f"{what}: another attempt of batch {batch} recorded its end first "
            f"(last record {first and first['last']}, this attempt {mine['last']}); this "
            "attempt fails so that the batch keeps one end"
        )


class KinesisDataSource(DataSource):
    """Structured Streaming source for Kinesis Data Streams, registered as `sensorpipe-kinesis`."""

    @classmethod
    def name(cls) -> str:
        return SHORT_NAME

    def schema(self) -> StructType:
        return KINESIS_SOURCE_SCHEMA

    def streamReader(self, schema: StructType) -> KinesisStreamReader:
        return KinesisStreamReader(KinesisOptions.parse(dict(self.options)))
