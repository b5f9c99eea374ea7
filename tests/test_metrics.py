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
