"""Operational metrics the estate's alarms watch (infra/sensorpipe_estate/monitoring.py):
warehouse load failures and lake commit lag, published to CloudWatch on EMR, nowhere locally.

Publishing is best effort: a metric that cannot be sent is logged and dropped, never allowed to
fail a batch. An alarm on commit lag treats missing data as breaching, so a job that stops
reporting (dead, stuck, or unable to publish) is noticed all the same."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from sensorpipe.config import MetricsSettings

WAREHOUSE_LOAD_FAILURES = "WarehouseLoadFailures"
LAKE_COMMIT_LAG = "LakeCommitLagSeconds"
ALERT_DEAD_LETTERS = "AlertDeadLetters"  # trains' shadow updates refused for good
# Valid readings of keys beyond anomaly.max_live_keys (in the lake, not scored).
UNSCORED_READINGS = "UnscoredReadings"
# Resident-detector store operations that failed (a full tmpfs, a damaged file): each key
# concerned was restored from the checkpoint instead, exactly, only slower.
RESIDENT_STORE_ERRORS = "ResidentStoreErrors"
# The events query's observation that counts them, per micro-batch (streaming/queries.py).
SCORING_METRICS = "scoring"
# Every metric carries the job that published it (its stream.query_prefix: "sensorpipe" for the
# trains, "sensorpipe_hospital" for the hospital's devices), never a device: the estate's
# alarms are per job, so one job's reports cannot hide another's silence.
JOB_DIMENSION = "Job"

log = logging.getLogger(__name__)


class Metrics(Protocol):
    def put(self, name: str, value: float, unit: str) -> None: ...


class NoMetrics:
    def put(self, name: str, value: float, unit: str) -> None:
        pass


class CloudWatchMetrics:
    def __init__(self, client: Any, namespace: str, job: str) -> None:
        self.client, self.namespace, self.job = client, namespace, job

    def put(self, name: str, value: float, unit: str) -> None:
        try:
            self.client.put_metric_data(
                Namespace=self.namespace,
                MetricData=[{"MetricName": name, "Value": float(value), "Unit": unit,
                             "Dimensions": [{"Name": JOB_DIMENSION, "Value": self.job}]}],
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - monitoring must never stop the pipeline
            log.warning("metric %s not published: %s", name, exc)


def metrics_from_settings(settings: MetricsSettings, job: str) -> Metrics:
    """The configured publisher; `job` names the publishing job in every metric."""
    if settings.kind == "cloudwatch":
        import boto3

        client = boto3.client(
            "cloudwatch", region_name=settings.region, endpoint_url=settings.endpoint_url
        )
        return CloudWatchMetrics(client, settings.namespace, job)
    return NoMetrics()


def commit_lag_listener(metrics: Metrics, query_name: str, clock: Any = time.time) -> Any:
    """A StreamingQueryListener publishing, at each progress report of `query_name` (after each
    of its micro-batches commits, and every idle interval), the seconds since its previous
    commit, and the readings its scorer left unscored (the live-key bound), if any. It runs on
    the driver's listener bus."""
    from sensorpipe.listener import ProgressListener

    class CommitLag(ProgressListener):
        last_commit: float | None = None

        def onQueryStarted(self, event: Any) -> None:
            if event.name == query_name:
                self.last_commit = clock()

        def onQueryProgress(self, event: Any) -> None:
            if event.progress.name != query_name:
                return
            now = clock()
            since = self.last_commit if self.last_commit is not None else now
            metrics.put(LAKE_COMMIT_LAG, max(now - since, 0.0), "Seconds")
            self.last_commit = now
            scoring = event.progress.observedMetrics.get(SCORING_METRICS)
            if scoring is not None and scoring["unscored"]:
                metrics.put(UNSCORED_READINGS, scoring["unscored"], "Count")
            if scoring is not None and scoring["store_errors"]:
                metrics.put(RESIDENT_STORE_ERRORS, scoring["store_errors"], "Count")

    return CommitLag()
