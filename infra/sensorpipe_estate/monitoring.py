"""Watch it: an encrypted SNS topic and the alarms that notify it: stream consumer lag
(iterator age) and write throttling on both streams, failed EMR steps (an EventBridge rule, as
EMR reports step state changes as events, not metrics), per streaming job its lake commit lag,
unscored readings, warehouse load failures and alert dead letters (published by the job with
its Job dimension, lib/sensorpipe/metrics.py), the warehouse itself, and the IoT rule's failures.

The topic's policy admits what publishes to it: CloudWatch alarms of this account and
EventBridge ("Amazon SNS topic policies for CloudWatch alarms"; `enforce_ssl` writes a policy
that, once present, replaces the default one, so each publisher must be named)."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as events_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct
from sensorpipe.metrics import (
    ALERT_DEAD_LETTERS,
    JOB_DIMENSION,
    LAKE_COMMIT_LAG,
    RESIDENT_STORE_ERRORS,
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
        warehouse_workgroup: str,
        warehouse_namespace: str,
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
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": settings.account},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:aws:cloudwatch:{settings.region}:"
                        f"{settings.account}:alarm:*"
                    },
                },
            )
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
        for job in mon.stream_jobs:
            label = "".join(part.capitalize() for part in job.split("_"))

            def job_metric(name: str, statistic: str, job: str = job) -> cloudwatch.Metric:
                return cloudwatch.Metric(namespace=ns, metric_name=name, period=five,
                                         statistic=statistic,
                                         dimensions_map={JOB_DIMENSION: job})  # fmt: skip

            alarm(
                f"{label}LakeCommitLag",
                job_metric(LAKE_COMMIT_LAG, "Maximum"),
                mon.lake_commit_lag_alarm_seconds,
                f"{job}: the events table has not committed recently (or the job stopped "
                "reporting)",
                missing=cloudwatch.TreatMissingData.BREACHING,
            )
            alarm(
                f"{label}UnscoredReadings",
                job_metric(UNSCORED_READINGS, "Sum"),
                1,
                f"{job}: readings of keys beyond anomaly.max_live_keys went unscored (a producer "
                "inventing device ids, or the fleet outgrew the bound)",
            )
            alarm(
                f"{label}ResidentStoreErrors",
                job_metric(RESIDENT_STORE_ERRORS, "Sum"),
                1,
                f"{job}: resident detectors could not be written or read (a full /dev/shm, "
                "anomaly.resident_mb above what the nodes hold): those keys are restored from "
                "the checkpoint, exact but slower",
            )
            alarm(
                f"{label}WarehouseLoadFailures",
                job_metric(WAREHOUSE_LOAD_FAILURES, "Sum"),
                1,
                f"{job}: a warehouse load failed (the job retries the batch on restart)",
            )
            alarm(
                f"{label}AlertDeadLetters",
                job_metric(ALERT_DEAD_LETTERS, "Sum"),
                1,
                f"{job}: a shadow refused an alert update for good (lake.anomalies_path/"
                "_dead_letters)",
            )

        # The warehouse (AWS/Redshift-Serverless, Amazon Redshift Management Guide, "Amazon
        # Redshift Serverless metrics"): connections by workgroup and database, statement
        # duration (microseconds), and the namespace's stored bytes.
        database = settings.warehouse.database
        redshift_ns = "AWS/Redshift-Serverless"
        alarm(
            "WarehouseConnections",
            cloudwatch.Metric(namespace=redshift_ns, metric_name="DatabaseConnections",
                              period=five, statistic="Maximum",
                              dimensions_map={"Workgroup": warehouse_workgroup,
                                              "DatabaseName": database}),
            mon.warehouse_connections_alarm,
            "the warehouse's database connections near the workgroup's limit",
        )  # fmt: skip
        alarm(
            "WarehouseQueryDuration",
            cloudwatch.Metric(namespace=redshift_ns, metric_name="QueryDuration",
                              period=five, statistic="p99",
                              dimensions_map={"Workgroup": warehouse_workgroup,
                                              "DatabaseName": database}),
            mon.warehouse_query_seconds_alarm * 1_000_000,
            f"warehouse statements take longer than {mon.warehouse_query_seconds_alarm} s "
            "(p99 over 5 minutes): loads fall behind the stream",
            periods=3,
        )  # fmt: skip
        alarm(
            "WarehouseStorage",
            cloudwatch.Metric(namespace=redshift_ns, metric_name="DataStorage",
                              period=Duration.hours(1), statistic="Maximum",
                              dimensions_map={"Namespace": warehouse_namespace}),
            mon.warehouse_storage_alarm_gb * 1024 * 1024,  # DataStorage is in megabytes
            f"the warehouse stores more than {mon.warehouse_storage_alarm_gb} GB",
        )  # fmt: skip
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
