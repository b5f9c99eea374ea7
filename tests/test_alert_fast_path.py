"""The alert fast path: in a continuous run, a scoring batch's transitions reach the shadow
from the lake sink's log as soon as the batch commits, and the alerts query, coming second,
sends nothing twice."""

from __future__ import annotations

import json
import time

import pytest
from sensorpipe.jsonstore import JsonStore
from sensorpipe.sinks.alerts import ALERTS_KEY, alert_patches, batch_files, transitions_in
from sensorpipe.streaming import start_lake_run
from sensorpipe_tools.samples import SampleSpec, generate

from tests.local_settings import local_settings


def test_batch_files_reads_a_batch_and_a_compaction_of_the_sink_log(tmp_path):
    log = tmp_path / "_spark_metadata"
    log.mkdir()
    entry = {"path": "file:///lake/a.parquet", "size": 1, "isDir": False, "action": "add",
             "modificationTime": 1000, "blockReplication": 1, "blockSize": 1}  # fmt: skip
    (log / "3").write_text("v1\n" + json.dumps(entry) + "\n")
    later = {**entry, "path": "file:///lake/b.parquet", "modificationTime": 5000}
    (log / "9.compact").write_text("v1\n" + json.dumps(entry) + "\n" + json.dumps(later) + "\n")
    store = JsonStore(str(log))
    assert batch_files(store, 3, started_ms=9999) == ["file:///lake/a.parquet"]
    # A compaction lists every file so far: only those written since the batch started count.
    assert batch_files(store, 9, started_ms=4000) == ["file:///lake/b.parquet"]
    assert batch_files(store, 12, started_ms=0) == []


@pytest.mark.slow
def test_continuous_run_delivers_through_the_fast_path_without_duplicates(spark, tmp_path):
    samples = tmp_path / "samples"
    manifest = generate(SampleSpec(trains=1, hours=20, anomalies_per_train=2, malformed_per_kind=0,
                        oversize_records=0), samples)  # fmt: skip
    settings = local_settings(
        tmp_path,
        SENSORPIPE__SOURCE__KIND="replay",
        SENSORPIPE__SOURCE__REPLAY_PATH=str(samples / "telemetry"),
        SENSORPIPE__ALERTS__KIND="outbox",
        SENSORPIPE__ALERTS__OUTBOX_PATH=str(tmp_path / "outbox"),
        SENSORPIPE__STREAM__TRIGGER="1 second",
        SENSORPIPE__STREAM__SIDE_TRIGGER="5 seconds",
        SENSORPIPE__STREAM__QUERY_PREFIX="fastpath",
    )
    records = manifest["counts"]["records"]
    run = start_lake_run(spark, settings)
    try:
        # Continuous queries never end: wait (bounded) until the lake holds every record and
        # the anomalies table every transition, then until the fast path has caught up.
        lake = settings.lake

        def transitions_committed(path: str) -> int:
            try:
                return spark.read.parquet(path).where("alert_action IS NOT NULL").count()
            except Exception:  # noqa: BLE001 - the table's first files are not there yet
                return -1

        deadline = time.monotonic() + 300
        while not (
            spark.read.parquet(lake.events_path).count() == records
            and transitions_committed(lake.anomalies_path)
            == transitions_committed(lake.events_path)
        ):
            assert run.events.exception() is None and run.alerts.exception() is None
            if time.monotonic() > deadline:  # it used to end silently and test what it had
                pytest.fail("the lake or the anomalies table did not catch up within 300 s")
            time.sleep(1)
        run.alert_fast_path.drain()
    finally:
        run.stop()
    anomalies = spark.read.parquet(settings.lake.anomalies_path)
    transitions = anomalies.where("alert_action IS NOT NULL").toPandas()
    assert len(transitions) > 0
    expected = alert_patches(transitions)
    for thing, patch in expected.items():
        doc = json.loads((tmp_path / "outbox" / f"{thing}.json").read_text())
        assert doc["state"]["desired"][ALERTS_KEY] == patch
    updates = [json.loads(u) for u in (tmp_path / "outbox/updates.jsonl").read_text().splitlines()]
    assert run.alert_stats.fast_path_updates > 0
    # No update sent twice: each entry an update carried (a train's alert at one state) was
    # sent once, by whichever path came first. (This once compared the updates logged with
    # the updates counted, two numbers that rise together by construction; issue 30's audit.)
    sent = [(u["thing"], key, json.dumps(entry, sort_keys=True))
            for u in updates for key, entry in u["alerts"].items()]  # fmt: skip
    assert len(sent) == len(set(sent)) and len(updates) == run.alert_stats.updates_sent
    # What the fast path reads is what the lake committed.
    files = sorted(str(p) for p in (tmp_path / "lake/events").rglob("*.parquet"))
    assert len(transitions_in([f"file://{f}" for f in files])) == len(transitions)


def test_sink_log_files_as_of_a_batch_from_its_compaction_and_the_batches_after(tmp_path):
    from sensorpipe.sinks.sink_log import SinkLogGap, files_through

    log = tmp_path / "_spark_metadata"
    log.mkdir()

    def entry(name: str, size: int = 1) -> str:
        return json.dumps({"path": f"file:///lake/{name}", "size": size, "action": "add",
                           "modificationTime": 1, "isDir": False})  # fmt: skip

    (log / "9.compact").write_text("v1\n" + entry("a") + "\n" + entry("b", 7) + "\n")
    (log / "10").write_text("v1\n" + entry("c") + "\n")
    (log / "11").write_text("v1\n")  # an empty batch
    (log / "12").write_text("v1\n" + entry("d") + "\n")
    store = JsonStore(str(log))
    assert files_through(store, 9) == {"file:///lake/a": 1, "file:///lake/b": 7}
    assert set(files_through(store, 12)) == {f"file:///lake/{n}" for n in "abcd"}
    assert files_through(store, -1) == {}
    # A compaction's own batch: the files it added are those not there as of the batch before.
    (log / "13").unlink(missing_ok=True)
    (log / "19.compact").write_text("v1\n" + "\n".join(entry(n) for n in "abcde") + "\n")
    for batch in range(13, 19):
        (log / str(batch)).write_text("v1\n")
    assert batch_files(store, 19, started_ms=0) == ["file:///lake/e"]
    # Batches before the compaction whose log files are gone cannot be rebuilt: said, not guessed.
    (log / "9.compact").unlink()
    with pytest.raises(SinkLogGap, match="no log file for batch 0"):
        files_through(store, 12)
