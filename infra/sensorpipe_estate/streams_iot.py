"""Collect: the train telemetry stream and the hospital device stream, each encrypted with a
customer-managed key; AWS IoT Core's topic rule that puts each train reading on the stream with
the train as partition key, with an error action; the IoT policy that lets each train publish
only on its own topic and read or update only its own device shadow."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iot as iot
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from sensorpipe_estate.common import Names, output
from sensorpipe_estate.settings import EstateSettings

THING = "${iot:Connection.Thing.ThingName}"


def train_policy_document(settings: EstateSettings) -> dict:
    """Each train (an IoT thing whose certificate is attached to it) may connect as itself,
    publish its readings on trains/<its name>/telemetry, and use only its own shadow's topics."""
    base = f"arn:aws:iot:{settings.region}:{settings.account}"
    prefix = settings.streams.train_topic_prefix
    shadow = f"$aws/things/{THING}/shadow"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ConnectAsItself",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": f"{base}:client/{THING}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
            },
            {
                "Sid": "PublishOwnReadingsAndShadowRequests",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [
                    f"{base}:topic/{prefix}/{THING}/telemetry",
                    f"{base}:topic/{shadow}/*",
                ],
            },
            {
                "Sid": "SubscribeOwnShadow",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{base}:topicfilter/{shadow}/*",
            },
            {
                "Sid": "ReceiveOwnShadow",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": f"{base}:topic/{shadow}/*",
            },
            {
                "Sid": "OwnShadowOverHttps",
                "Effect": "Allow",
                "Action": ["iot:GetThingShadow", "iot:UpdateThingShadow"],
                "Resource": f"{base}:thing/{THING}",
            },
        ],
    }


class StreamsIotStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id_: str,
        settings: EstateSettings,
        stream_key: kms.IKey,
        protected_key: kms.IKey,
        ops_key: kms.IKey,
        **kwargs,  # noqa: ANN003
    ) -> None:
        super().__init__(scope, id_, **kwargs)
        names = Names(settings)
        st = settings.streams
        retention = Duration.hours(st.retention_hours)

        def stream(id_: str, name: str, shards: int, key: kms.IKey) -> kinesis.Stream:
            return kinesis.Stream(
                self,
                id_,
                stream_name=name,
                shard_count=shards,
                encryption=kinesis.StreamEncryption.KMS,
                encryption_key=key,
                retention_period=retention,
                removal_policy=RemovalPolicy.RETAIN,
            )

        self.telemetry = stream(
            "TelemetryStream", st.telemetry_stream, st.telemetry_shards, stream_key
        )
        # Hospital readings map device serials to patients (PHI): the protected zone's key.
        self.hospital = stream(
            "HospitalStream", st.hospital_stream, st.hospital_shards, protected_key
        )

        errors = logs.LogGroup(
            self,
            "RuleErrors",
            log_group_name=f"/{settings.name}/iot-rule-errors",
            encryption_key=ops_key,
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.rule_name = f"{settings.name.replace('-', '_')}_train_telemetry"
        rule_role = names.role_arn(names.iot_rule_role)
        self.rule = iot.CfnTopicRule(
            self,
            "TelemetryRule",
            rule_name=self.rule_name,
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                sql=f"SELECT * FROM '{st.train_topic_prefix}/+/telemetry'",
                aws_iot_sql_version="2016-03-23",
                rule_disabled=False,
                actions=[
                    iot.CfnTopicRule.ActionProperty(
                        kinesis=iot.CfnTopicRule.KinesisActionProperty(
                            stream_name=self.telemetry.stream_name,
                            role_arn=rule_role,
                            partition_key="${topic(2)}",
                        )
                    )
                ],  # the train: trains/<train>/telemetry
                error_action=iot.CfnTopicRule.ActionProperty(
                    cloudwatch_logs=iot.CfnTopicRule.CloudwatchLogsActionProperty(
                        log_group_name=errors.log_group_name, role_arn=rule_role
                    )
                ),
            ),
        )
        self.train_policy = iot.CfnPolicy(
            self,
            "TrainPolicy",
            policy_name=f"{settings.name}-train",
            policy_document=train_policy_document(settings),
        )

        output(self, "TelemetryStreamName", self.telemetry.stream_name, "train telemetry stream")
        output(self, "HospitalStreamName", self.hospital.stream_name, "hospital device stream")
        output(self, "TelemetryRuleName", self.rule_name, "IoT topic rule: trains -> stream")
        output(self, "TrainPolicyName", f"{settings.name}-train", "IoT policy for every train")
