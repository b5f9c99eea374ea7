"""The Kinesis source against a real Kinesis API server (kinesalite): the lake must hold exactly
the records produced, through restarts, resharding, KPL aggregates and injected faults."""

import threading
import time

import pytest
from pyspark.errors import StreamingQueryException
from sensorpipe.sources.kinesis import (
    KinesisOptionError,
    KinesisOptions,
    MetadataStore,
    Position,
    ShardPartition,
    read_shard,
)
from sensorpipe.streaming import run_lake_job

from tests.fault_proxy import FaultProxy, kinesis_get_records_faults
from tests.kinesis_helpers import (
    assert_lake_exact,
    events,
    new_stream,
    put,
    settings_for,
    wait_active,
)


def test_several_shards_and_restart_from_checkpoint_mid_stream(
    spark, tmp_path, kinesis, kinesalite
):
    stream = new_stream(kinesis, 3)
    first, second = events(0, 600), events(600, 400)
    settings = settings_for(tmp_path, kinesalite.endpoint_url, stream)
    put(kinesis, stream, first)
    summary = run_lake_job(spark, settings)
    assert summary.records_in == 600
    assert_lake_exact(spark, settings, first)
    put(kinesis, stream, second)
    again = run_lake_job(spark, settings)  # a restart: same checkpoint, new records
    assert again.records_in == 400
    assert_lake_exact(spark, settings, first + second)


def shard_payloads(client, stream: str, shard_id: str) -> set[bytes]:
    """Every record's data in one shard, read straight from the stream."""
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    found: set[bytes] = set()
    while iterator:
        page = client.get_records(ShardIterator=iterator, Limit=1000)
        found |= {r["Data"] for r in page["Records"]}
        if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
            break
        iterator = page.get("NextShardIterator")
    return found


def test_shard_split_and_merge_while_producing(spark, tmp_path, kinesis, kinesalite):
    stream = new_stream(kinesis, 2)
    settings = settings_for(tmp_path, kinesalite.endpoint_url, stream)
    produced = events(0, 300)
    put(kinesis, stream, produced)
    run_lake_job(spark, settings)  # parents partly read before they close

    # A producer that keeps going, 20 records at a time, through the split and again through
    # the merge, each time until told to stop (it once put its 900 records before the split
    # began). A finite run cannot drain a stream still being written: the job reads after
    # each burst.
    during: list = []

    def producing() -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()

        def keep_producing() -> None:
            while not stop.is_set():
                chunk = events(300 + len(during), 20)
                put(kinesis, stream, chunk)
                during.extend(chunk)

        thread = threading.Thread(target=keep_producing, daemon=True)
        thread.start()
        return thread, stop

    def finish(burst: tuple[threading.Thread, threading.Event]) -> None:
        # The producer writes into the new shards too: two more chunks after the reshard.
        written, deadline = len(during), time.monotonic() + 30
        while len(during) < written + 40 and burst[0].is_alive():
            assert time.monotonic() < deadline, "the producer stopped writing"
        burst[1].set()
        burst[0].join()

    burst = producing()
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    low, high = (
        int(shards[0]["HashKeyRange"]["StartingHashKey"]),
        int(shards[0]["HashKeyRange"]["EndingHashKey"]),
    )
    try:
        kinesis.split_shard(
            StreamName=stream,
            ShardToSplit=shards[0]["ShardId"],
            NewStartingHashKey=str((low + high) // 2),
        )
        wait_active(kinesis, stream)
    finally:
        finish(burst)
    run_lake_job(spark, settings)  # reads the parents' ends and the children
    open_shards = sorted(
        (
            s
            for s in kinesis.list_shards(StreamName=stream)["Shards"]
            if "EndingSequenceNumber" not in s["SequenceNumberRange"]
        ),
        key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]),
    )
    burst = producing()
    try:
        kinesis.merge_shards(
            StreamName=stream,
            ShardToMerge=open_shards[0]["ShardId"],
            AdjacentShardToMerge=open_shards[1]["ShardId"],
        )
        wait_active(kinesis, stream)
    finally:
        finish(burst)
    after = events(300 + len(during), 300)
    put(kinesis, stream, after)
    run_lake_job(spark, settings)
    listed = kinesis.list_shards(StreamName=stream)["Shards"]
    assert len(listed) == 5, "2 shards, a split (+2) and a merge (+1)"
    # The producer ran through both: its records are in the split's children and in the
    # merge's child, read straight from the stream.
    background = {r.data for r in during}
    children = [s for s in listed if s.get("ParentShardId") == shards[0]["ShardId"]]
    merged = [s for s in listed if s.get("AdjacentParentShardId")]
    assert len(children) == 2 and len(merged) == 1
    assert background & set().union(*(shard_payloads(kinesis, stream, s["ShardId"])
                                      for s in children))  # fmt: skip
    assert background & shard_payloads(kinesis, stream, merged[0]["ShardId"])
    assert_lake_exact(spark, settings, produced + during + after)


def test_kpl_aggregates_are_deaggregated_and_resumed_inside(spark, tmp_path, kinesis, kinesalite):
    stream = new_stream(kinesis, 2)
    produced = events(0, 56)
    put(kinesis, stream, produced, aggregate=7)
    # 10 user records per shard per batch cuts batches inside 7-record aggregates (8 of them:
    # at least 28 records, so 3 batches, on one shard).
    settings = settings_for(
        tmp_path,
        kinesalite.endpoint_url,
        stream,
        SENSORPIPE__SOURCE__MAX_FETCH_RECORDS_PER_SHARD="10",
    )
    summary = run_lake_job(spark, settings)
    assert summary.records_in == 56
    assert summary.batches >= 3
    assert_lake_exact(spark, settings, produced)
    subs = spark.read.parquet(settings.lake.events_path).agg({"sub_sequence_number": "max"})
    assert subs.first()[0] == 6


def test_reader_resumes_inside_an_aggregate_without_skip_or_repeat(tmp_path, kinesis, kinesalite):
    """Read one shard 5 user records at a time over 3-record aggregates, as batches would."""
    stream = new_stream(kinesis, 1)
    produced = events(0, 23)
    put(kinesis, stream, produced, aggregate=3)
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    options = _reader_options(
        tmp_path, stream, kinesalite.endpoint_url, max_fetch_records_per_shard=5
    )
    store = MetadataStore(options.metadata_path)
    position, seen, resumed_inside = Position("TRIM_HORIZON"), [], 0
    for batch in range(1, 10):
        part = ShardPartition(shard, position, batch, options)
        rows = [bytes(r[0]) for r in read_shard(part, store)]
        # A re-execution of the same batch yields exactly the same rows.
        assert [bytes(r[0]) for r in read_shard(part, store)] == rows
        seen += rows
        end = store.read(f"batches/{batch}/{shard}.json")
        position = Position.from_json(end["position"])
        resumed_inside += position.kind == "AT_SEQUENCE_NUMBER"
        if not rows:
            break
    assert len(seen) == len(produced)  # none repeated...
    assert sorted(seen) == sorted(r.data for r in produced)  # ...none skipped
    assert resumed_inside >= 3


def test_reexecuted_batch_reads_exactly_what_it_read_first(tmp_path, kinesis, kinesalite):
    stream = new_stream(kinesis, 1)
    put(kinesis, stream, events(0, 10))
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    options = _reader_options(tmp_path, stream, kinesalite.endpoint_url)
    store = MetadataStore(options.metadata_path)
    part = ShardPartition(shard, Position("TRIM_HORIZON"), 1, options)
    first = [r[3] for r in read_shard(part, store)]
    put(kinesis, stream, events(10, 5))  # new records arrive before the re-execution
    again = [r[3] for r in read_shard(part, store)]
    assert len(first) == 10 and again == first


def test_injected_throttling_and_expired_iterators_are_survived(
    spark, tmp_path, kinesis, kinesalite
):
    stream = new_stream(kinesis, 2)
    produced = events(0, 800)
    put(kinesis, stream, produced)
    proxy = FaultProxy(
        kinesalite.port,
        kinesis_get_records_faults(throttle_every=3, expire_every=4, limit_every=5),
    )
    try:
        settings = settings_for(
            tmp_path,
            proxy.endpoint_url,
            stream,
            SENSORPIPE__SOURCE__MAX_FETCH_RECORDS_PER_SHARD="100",
            SENSORPIPE__SOURCE__OPTIONS='{"kinesis.retryInitialMs": "10"}',
        )
        run_lake_job(spark, settings)
    finally:
        proxy.close()
    assert proxy.faults.get("ProvisionedThroughputExceededException", 0) > 0
    assert proxy.faults.get("LimitExceededException", 0) > 0  # docs/kinesis.md: backed off
    assert proxy.faults.get("ExpiredIteratorException", 0) > 0
    assert_lake_exact(spark, settings, produced)


def test_persistent_throttling_fails_the_batch_clearly_and_a_rerun_is_exact(
    spark, tmp_path, kinesis, kinesalite
):
    stream = new_stream(kinesis, 2)
    produced = events(0, 200)
    put(kinesis, stream, produced)
    options = '{"kinesis.retryInitialMs": "5", "kinesis.maxRetries": "2"}'
    proxy = FaultProxy(kinesalite.port, kinesis_get_records_faults(throttle_always=True))
    try:
        failing = settings_for(
            tmp_path, proxy.endpoint_url, stream, SENSORPIPE__SOURCE__OPTIONS=options
        )
        with pytest.raises(
            StreamingQueryException,
            match="gave up after 2 retries; last error: ProvisionedThroughputExceededException",
        ):
            run_lake_job(spark, failing)
    finally:
        proxy.close()
    healthy = settings_for(
        tmp_path, kinesalite.endpoint_url, stream, SENSORPIPE__SOURCE__OPTIONS=options
    )
    run_lake_job(spark, healthy)
    assert_lake_exact(spark, healthy, produced)


def test_options_are_validated_naming_the_option():
    with pytest.raises(KinesisOptionError, match="kinesis.streamName is required"):
        KinesisOptions.parse({"kinesis.metadataPath": "/tmp/x"})
    with pytest.raises(KinesisOptionError, match="kinesis.startingPosition: expected one of"):
        KinesisOptions.parse(
            {
                "kinesis.streamName": "s",
                "kinesis.metadataPath": "/m",
                "kinesis.startingPosition": "EARLIEST",
            }
        )
    with pytest.raises(KinesisOptionError, match="kinesis.maxFetchRecordsPerShard: expected a"):
        KinesisOptions.parse(
            {
                "kinesis.streamName": "s",
                "kinesis.metadataPath": "/m",
                "kinesis.maxFetchRecordsPerShard": "lots",
            }
        )
    with pytest.raises(KinesisOptionError, match="kinesis.startingTimestamp is required"):
        KinesisOptions.parse(
            {
                "kinesis.streamName": "s",
                "kinesis.metadataPath": "/m",
                "kinesis.startingPosition": "AT_TIMESTAMP",
            }
        )


def _reader_options(tmp_path, stream: str, endpoint: str, **extra) -> KinesisOptions:
    """A reader of `stream` from its first record, its metadata under tmp_path."""
    return KinesisOptions(
        stream_name=stream,
        metadata_path=str(tmp_path / "meta"),
        endpoint_url=endpoint,
        starting_position="TRIM_HORIZON",
        retry_initial_ms=5,
        **extra,
    )


def test_a_stretch_of_empty_answers_while_behind_is_crossed_batch_by_batch_mock_gap(
    tmp_path, kinesis, kinesalite
):
    """Kinesis may answer GetRecords empty while behind, over a stretch of the shard with no
    records (mocked in front of kinesalite: 12 such answers for any new iterator). A batch
    ends after 5 of them; it must keep the advanced iterator, or every batch walks the same
    5 answers from the same position and the shard stalls for good."""
    from tests.fault_proxy import KinesisGap

    stream = new_stream(kinesis, 1)
    produced = events(0, 20)
    put(kinesis, stream, produced)
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    gap = KinesisGap(empty=12)
    proxy = FaultProxy(kinesalite.port, lambda *_: None, rewrite=gap)
    try:
        options = _reader_options(tmp_path, stream, proxy.endpoint_url)
        store = MetadataStore(options.metadata_path)
        position, seen = Position("TRIM_HORIZON"), []
        for batch in range(1, 8):
            part = ShardPartition(shard, position, batch, options)
            rows = [r[3] for r in read_shard(part, store)]
            # A re-execution of a batch reads exactly what it read, iterator or not.
            assert [r[3] for r in read_shard(part, store)] == rows
            seen += rows
            position = Position.from_json(store.read(f"batches/{batch}/{shard}.json")["position"])
            if len(seen) >= len(produced):
                break
    finally:
        proxy.close()
    assert len(seen) == len(produced) == len(set(seen)), f"read {len(seen)} of {len(produced)}"
    assert batch == 3  # 5 + 5 empty answers, then the last 2 and the records
    assert gap.empty_answers >= 12


def test_two_attempts_of_one_shard_task_keep_the_first_end_recorded(
    tmp_path, kinesis, kinesalite, monkeypatch
):
    """A speculative or zombie attempt of a batch's task may read further than the attempt
    Spark commits. The end recorded first wins; an attempt that read otherwise fails instead
    of overwriting it (the next batch would start after records the lake never got)."""
    from sensorpipe.sources import kinesis as source
    from sensorpipe.sources.kinesis import KinesisReadError

    # Answers of 4 records: the slow attempt, holding its first answer, is not at the tip
    # and reads on after more records arrive.
    monkeypatch.setattr(source, "_GET_RECORDS_MAX", 4)

    stream = new_stream(kinesis, 1)
    put(kinesis, stream, events(0, 10))
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    options = _reader_options(tmp_path, stream, kinesalite.endpoint_url)
    store = MetadataStore(options.metadata_path)
    part = ShardPartition(shard, Position("TRIM_HORIZON"), 1, options)
    slow = read_shard(part, store)
    next(slow)  # the slow attempt is under way: no end recorded yet when it started
    fast = [r[3] for r in read_shard(part, store)]  # the attempt Spark will commit
    put(kinesis, stream, events(10, 5))  # more arrive before the slow attempt ends
    with pytest.raises(KinesisReadError, match="another attempt of batch 1 recorded its end"):
        list(slow)
    end = store.read(f"batches/1/{shard}.json")
    assert end["records"] == len(fast) == 10
    assert end["last"][0] == fast[-1]


def test_both_lake_queries_start_from_one_pin_of_latest(
    spark, tmp_path, kinesis, kinesalite, monkeypatch
):
    """With LATEST, each query pinned "now" when it first started: a record arriving between
    the events query's start and the quarantine query's reached the events query only (here
    a malformed one, which no quarantine query then kept)."""
    import time
    from pathlib import Path

    from sensorpipe.sources.kpl import UserRecord
    from sensorpipe.streaming import run as run_module

    stream = new_stream(kinesis, 1)
    put(kinesis, stream, events(0, 5))  # before the start: LATEST leaves them
    settings = settings_for(tmp_path, kinesalite.endpoint_url, stream,
                            SENSORPIPE__SOURCE__STARTING_POSITION="LATEST")  # fmt: skip
    plan = Path(settings.lake.checkpoint_root) / "events/kinesis/batches/0/_offset.json"
    start_events_query = run_module.start_events_query
    start_quarantine_query = run_module.start_quarantine_query
    first_run = [True]

    def events_after_some_arrive(*args, **kwargs):  # noqa: ANN202
        if first_run[0]:
            time.sleep(0.05)
            put(kinesis, stream, events(5, 3))  # after this run's start (kinesalite never
            # answers GetShardIterator AT_TIMESTAMP past the last record: one is there)
        return start_events_query(*args, **kwargs)

    def quarantine_after_a_record_arrives(*args, **kwargs):  # noqa: ANN202
        if first_run[0]:
            first_run[0] = False
            deadline = time.monotonic() + 60
            while not plan.exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # the events query has started and planned its first batch
            time.sleep(1.5)
            put(kinesis, stream, [UserRecord("train-01", b"{not json")])
        return start_quarantine_query(*args, **kwargs)

    monkeypatch.setattr(run_module, "start_events_query", events_after_some_arrive)
    monkeypatch.setattr(run_module, "start_quarantine_query", quarantine_after_a_record_arrives)
    summary = run_lake_job(spark, settings)
    assert summary.reconciled, summary.problems
    assert spark.read.parquet(settings.lake.events_path).count() == 3
    quarantined = spark.read.parquet(settings.lake.quarantine_path)
    assert [r.reason for r in quarantined.select("reason").collect()] == ["not_json"]


def test_an_idle_stream_offers_no_new_offset_until_records_arrive(tmp_path, kinesis, kinesalite):
    """After a batch that read every shard to its tip, the driver offers the same offset
    again (the same JSON text, so Spark runs no batch) until a record is there; then the next
    batch reads exactly the new records. An offset offered again has nothing to read."""
    import json

    from sensorpipe.sources.kinesis import KinesisStreamReader

    stream = new_stream(kinesis, 2)
    put(kinesis, stream, events(0, 10))
    options = _reader_options(tmp_path, stream, kinesalite.endpoint_url)
    reader = KinesisStreamReader(options)

    def run_batch(start: dict, end: dict) -> list[str]:
        read = [r[3] for part in reader.partitions(start, end) for r in reader.read(part)]
        reader.commit(end)
        return read

    first = reader.latestOffset()
    read_first = run_batch(reader.initialOffset(), first)
    assert len(read_first) == 10
    for _ in range(3):  # read to the tip, nothing since: the same offset, as Spark compares it
        again = reader.latestOffset()
        assert json.dumps(again) == json.dumps(first)
        assert reader.partitions(first, again) == []
    put(kinesis, stream, events(10, 5))
    second = reader.latestOffset()
    assert second["batch"] == first["batch"] + 1
    read_second = run_batch(first, second)
    assert len(read_second) == 5 and not set(read_second) & set(read_first)


def test_a_workers_shard_reads_keep_one_client_and_make_import_resets_cheap(
    tmp_path, kinesis, kinesalite, monkeypatch
):
    """What a Python worker pays per shard task: PySpark resets the worker's import caches
    before every task, which on Python 3.11 re-reads pyspark.zip's directory unless
    worker_imports is installed (py-spy: about 100 ms of each read task); and a new boto3
    client per task. The executor side of the reader installs the first and keeps the second."""
    import sys
    import zipimport

    import boto3
    from sensorpipe.sources import kinesis as source
    from sensorpipe.sources.kinesis import KinesisStreamReader

    def unpatched(self) -> None:  # zipimport's own (this process may have the patch already)
        pass

    monkeypatch.setattr(zipimport.zipimporter, "invalidate_caches", unpatched)
    monkeypatch.setattr(source, "_CLIENTS", {}, raising=False)
    created = []
    real_client = boto3.client
    monkeypatch.setattr(boto3, "client", lambda *a, **k: created.append(a) or real_client(*a, **k))
    stream = new_stream(kinesis, 2)
    put(kinesis, stream, events(0, 10))
    options = _reader_options(tmp_path, stream, kinesalite.endpoint_url)
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
    reader = KinesisStreamReader(options)
    read = [
        r[3]
        for shard in shards
        for r in reader.read(ShardPartition(shard, Position("TRIM_HORIZON"), 1, options))
    ]
    assert len(read) == 10
    assert created == [("kinesis",)], "one client for both shards' reads"
    if sys.version_info < (3, 12):  # 3.12+ invalidates zip caches lazily itself
        assert getattr(zipimport.zipimporter.invalidate_caches, "_sensorpipe", False)
