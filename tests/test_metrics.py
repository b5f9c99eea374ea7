"""The metrics the estate's alarms watch: a failed warehouse load and the events table's commit
lag, published to CloudWatch (moto's server mode: a mock, no CloudWatch runs here)."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from sensorpipe.config import MetricsSettings
from sensorpipe.metrics import (
    LAKE_COMMIT_LAG,
    WAREHOUSE_LOAD_FAILURES,
    commit_lag_listener,
    metrics_from_settings,
)
from sensorpipe.sinks.warehouse import (
    MINUTE_AGGREGATES,
    LoadStats,
    PostgresWarehouse,
    WarehouseError,
    foreach_batch_loader,
)
from sensorpipe_tools.local_services import free_port

JOB = "sensorpipe"  # the publishing job's dimension (stream.query_prefix)


def metric_values(endpoint: str, namespace: str, name: str, statistic: str = "Sum",
                  job: str = JOB) -> list[float]:  # fmt: skip
    """The metric's datapoints as the estate's alarms read it: with the job's dimension."""
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=endpoint)
    now = time.time()
    stats = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=name, StartTime=now - 3600, EndTime=now + 60,
        Period=60, Statistics=["Sum", "Maximum"],
        Dimensions=[{"Name": "Job", "Value": job}],
    )  # fmt: skip
    return sorted(p[statistic] for p in stats["Datapoints"])


def test_a_failed_warehouse_load_publishes_a_failure_and_fails_the_batch_moto_mock(
    spark, moto_server, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = MetricsSettings(kind="cloudwatch", namespace="load-failure-test",
                               endpoint_url=moto_server)  # fmt: skip
    # A real PostgreSQL client against a port where nothing listens: the load fails.
    down = PostgresWarehouse("127.0.0.1", free_port(), "telemetry", "nobody", connect_timeout=2)
    load = foreach_batch_loader(
        lambda: down, MINUTE_AGGREGATES, "test_aggregates", LoadStats(),
        on_failure=lambda: metrics_from_settings(settings, JOB).put(
            WAREHOUSE_LOAD_FAILURES, 1, "Count"
        ),
    )  # fmt: skip
    batch = spark.createDataFrame([("t1", "speed")], "device_id string, sensor string")
    with pytest.raises(WarehouseError):
        load(batch, 0)
    assert metric_values(moto_server, "load-failure-test", WAREHOUSE_LOAD_FAILURES) == [1.0]


def test_commit_lag_is_published_after_each_events_commit_moto_mock(
    spark, moto_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = MetricsSettings(kind="cloudwatch", namespace="commit-lag-test",
                               endpoint_url=moto_server)  # fmt: skip
    ticks = iter([100.0, 107.5, 109.0, 200.0, 201.0])
    cloudwatch = metrics_from_settings(settings, JOB)
    published = threading.Event()

    sent = []

    class Published:  # the real CloudWatch publisher, and a signal once it has sent
        def put(self, name, value, unit):
            cloudwatch.put(name, value, unit)
            sent.append(value)
            published.set()

    listener = commit_lag_listener(Published(), "lag_test_events", clock=lambda: next(ticks))
    source = tmp_path / "in"
    spark.range(3).write.parquet(str(source / "a"))
    spark.streams.addListener(listener)
    query = None
    try:
        query = (
            spark.readStream.schema("id long").option("maxFilesPerTrigger", 1)
            .parquet(str(source / "*")).writeStream.queryName("lag_test_events")
            .format("noop").option("checkpointLocation", str(tmp_path / "cp"))
            .trigger(availableNow=True).start()
        )  # fmt: skip
        query.awaitTermination(120)
        # The listener bus delivers progress asynchronously: wait for the publication, bounded.
        assert published.wait(60), "no commit-lag metric was published"
    finally:
        if query is not None and query.isActive:
            query.stop()
        spark.streams.removeListener(listener)
    # started at 100, committed at 107.5: 7.5 s since the query started. A later report of
    # the run (at 109: 1.5 s) may land in the same minute, so CloudWatch's maximum, not its sum.
    assert sent[0] == 7.5
    assert max(metric_values(moto_server, "commit-lag-test", LAKE_COMMIT_LAG, "Maximum")) == 7.5
    # Per job, not per device: another job's dimension holds none of it.
    assert metric_values(moto_server, "commit-lag-test", LAKE_COMMIT_LAG, "Maximum",
                         job="sensorpipe_hospital") == []  # fmt: skip


def test_no_metrics_locally_and_unknown_kinds_refused(tmp_path):
    from sensorpipe.config import ConfigError, Settings, load_settings

    local = load_settings("conf/local.yaml", environ={}, kind=Settings)
    assert local.metrics.kind == "none"
    metrics_from_settings(local.metrics, JOB).put(LAKE_COMMIT_LAG, 1, "Seconds")  # a no-op
    emr = tmp_path / "bad.yaml"
    emr.write_text(open("conf/local.yaml").read() + "\nmetrics:\n  kind: statsd\n")
    with pytest.raises(ConfigError, match="metrics.kind: expected one of"):
        load_settings(emr, environ={}, kind=Settings)


def test_a_dead_lettered_shadow_update_publishes_alert_dead_letters_moto_mock(
    moto_server, tmp_path, monkeypatch
):
    """docs/alerts.md: a train's update the shadow refuses for good is a dead letter and the
    AlertDeadLetters metric the estate alarms on goes up, through the run's own callback
    (only the callback's calls were counted before: issue 30's audit)."""
    from sensorpipe.jsonstore import JsonStore
    from sensorpipe.metrics import ALERT_DEAD_LETTERS
    from sensorpipe.sinks.alerts import AlertStats, IotShadowStore
    from sensorpipe.sinks.alerts.delivery import deliver_batch
    from sensorpipe.streaming.run import metric_counter

    from tests.fault_proxy import FaultProxy
    from tests.local_settings import local_settings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = local_settings(
        tmp_path, SENSORPIPE__METRICS__KIND="cloudwatch",
        SENSORPIPE__METRICS__NAMESPACE="dead-letter-test",
        SENSORPIPE__METRICS__ENDPOINT_URL=moto_server,
    )  # fmt: skip

    def refuse(method: str, path: str, target: str):  # noqa: ANN202
        return (413, "RequestEntityTooLargeException") if method == "POST" else None

    proxy = FaultProxy(int(moto_server.rsplit(":", 1)[1]), refuse)
    try:
        client = boto3.client("iot-data", endpoint_url=proxy.endpoint_url,
                              region_name="us-east-1")  # fmt: skip
        store = IotShadowStore(client, retry_initial_s=0.01)
        patch = {"s#20261101T000000Z": {"status": "open", "event_time": "2026-11-01T00:00:00Z"}}
        stats = AlertStats()
        deliver_batch(store, {"train-09": patch}, JsonStore(str(tmp_path / "dead")), "b=1", 1,
                      stats, metric_counter(settings, ALERT_DEAD_LETTERS))  # fmt: skip
    finally:
        proxy.close()
    assert stats.dead_letters == 1
    assert metric_values(moto_server, "dead-letter-test", ALERT_DEAD_LETTERS) == [1.0]


def test_readings_left_unscored_by_the_key_bound_are_published_moto_mock(
    spark, moto_server, tmp_path, monkeypatch
):
    """docs/anomaly-detection.md: readings of keys beyond anomaly.max_live_keys land unscored
    and the UnscoredReadings metric counts them, in a real run (no test published it)."""
    from sensorpipe.metrics import UNSCORED_READINGS
    from sensorpipe.streaming import run_lake_job
    from sensorpipe_tools.samples import SampleSpec, generate

    from tests.local_settings import local_settings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    samples = tmp_path / "samples"
    generate(SampleSpec(trains=1, hours=2, anomalies_per_train=0, malformed_per_kind=0,
                        oversize_records=0), samples)  # fmt: skip
    settings = local_settings(
        tmp_path, SENSORPIPE__SOURCE__KIND="replay",
        SENSORPIPE__SOURCE__REPLAY_PATH=str(samples / "telemetry"),
        SENSORPIPE__METRICS__KIND="cloudwatch", SENSORPIPE__METRICS__NAMESPACE="unscored-test",
        SENSORPIPE__METRICS__ENDPOINT_URL=moto_server,
        SENSORPIPE__ANOMALY__MAX_LIVE_KEYS="2", SENSORPIPE__ANOMALY__STATE_BUCKETS="1",
    )  # fmt: skip
    summary = run_lake_job(spark, settings)
    unscored = spark.read.parquet(settings.lake.events_path).where("is_anomaly IS NULL").count()
    assert unscored > 0 and summary.unscored == unscored
    deadline = time.monotonic() + 30  # the listener bus publishes asynchronously
    while sum(metric_values(moto_server, "unscored-test", UNSCORED_READINGS)) < unscored:
        assert time.monotonic() < deadline, "UnscoredReadings not published"
        time.sleep(0.5)
    assert sum(metric_values(moto_server, "unscored-test", UNSCORED_READINGS)) == unscored
