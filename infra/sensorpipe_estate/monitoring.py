"""Watch it: an encrypted SNS topic and the alarms that notify it: stream consumer lag
(iterator age) and write throttling on both streams, failed EMR steps (an EventBridge rule, as
EMR reports step state changes as events, not metrics), warehouse load failures and lake commit
lag (published by the streaming job, lib/sensorpipe/metrics.py), and the IoT rule's failures."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct
from sensorpipe.metrics import (
    ALERT_DEAD_LETTERS,
    LAKE_COMMIT_LAG,
    UNSCORED_READINGS,
    WAREHOUSE_LOAD_FAILURES,
)

from sensorpipe_estate.settings import EstateSettings


class MonitoringStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        settings: EstateSettings,
        ops_key: kms.IKey,
        streams: list[kinesis.IStream],
        iot_rule_name: str,
        **kwargs,  # noqa: ANN003
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        mon = settings.monitoring
        self.topic = sns.Topic(
            self,
            "Alarms",
            topic_name=f"{settings.name}-alarms",
            master_key=ops_key,
            enforce_ssl=True,
        )
        if mon.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(mon.alarm_email))
        notify = actions.SnsAction(self.topic)

        def alarm(
            id_: str,
            metric: cloudwatch.Metric,
            threshold: float,
            description: str,
            missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
            periods: int = 1,
        ) -> cloudwatch.Alarm:
            a = cloudwatch.Alarm(
                self,
                id_,
                alarm_name=f"{settings.name}-{id_}",
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                alarm_description=description,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=missing,
            )
            a.add_alarm_action(notify)
            a.add_ok_action(notify)
            return a

        five = Duration.minutes(5)
        for stream in streams:
            label = stream.node.id.replace("Stream", "")
            alarm(
                f"{label}ConsumerLag",
                stream.metric_get_records_iterator_age_milliseconds(
                    period=Duration.minutes(1), statistic="Maximum"
                ),
                mon.iterator_age_alarm_ms,
                f"{label}: the oldest unread record is older than {mon.iterator_age_alarm_ms} ms",
                periods=3,
            )
            alarm(
                f"{label}WriteThrottling",
                stream.metric_write_provisioned_throughput_exceeded(period=five, statistic="Sum"),
                1,
                f"{label}: producers throttled (add shards)",
            )

        ns = settings.metrics_namespace
        alarm(
            "WarehouseLoadFailures",
            cloudwatch.Metric(
                namespace=ns, metric_name=WAREHOUSE_LOAD_FAILURES, period=five, statistic="Sum"
            ),
            1,
            "a warehouse load failed (the streaming job retries the batch on restart)",
        )
        alarm(
            "AlertDeadLetters",
            cloudwatch.Metric(
                namespace=ns, metric_name=ALERT_DEAD_LETTERS, period=five, statistic="Sum"
            ),
            1,
            "a train's shadow refused an alert update for good (lake.anomalies_path/_dead_letters)",
        )
        alarm(
            "UnscoredReadings",
            cloudwatch.Metric(
                namespace=ns, metric_name=UNSCORED_READINGS, period=five, statistic="Sum"
            ),
            1,
            "readings of keys beyond anomaly.max_live_keys went unscored (a producer inventing "
            "device ids, or the fleet outgrew the bound)",
        )
        alarm(
            "LakeCommitLag",
            cloudwatch.Metric(
                namespace=ns, metric_name=LAKE_COMMIT_LAG, period=five, statistic="Maximum"
            ),
            mon.lake_commit_lag_alarm_seconds,
            "the events table has not committed recently (or the job stopped reporting)",
            missing=cloudwatch.TreatMissingData.BREACHING,
        )
        alarm(
            "IotRuleFailures",
            cloudwatch.Metric(
                namespace="AWS/IoT",
                metric_name="Failure",
                period=five,
                statistic="Sum",
                dimensions_map={"RuleName": iot_rule_name, "ActionType": "Kinesis"},
            ),
            1,
            "the IoT rule failed to put train readings on the stream (see its error log group)",
        )

        failed_steps = events.Rule(
            self,
            "EmrStepFailed",
            rule_name=f"{settings.name}-emr-step-failed",
            description="an EMR step failed",
            event_pattern=events.EventPattern(
                source=["aws.emr"],
                detail_type=["EMR Step Status Change"],
                detail={"state": ["FAILED"]},
            ),
        )
        failed_steps.add_target(events_targets.SnsTopic(self.topic))
