from dataclasses import replace
from pathlib import Path

import pytest
from sensorpipe.config import ConfigError, load_settings

from tests.local_settings import job_module

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text):
    path = tmp_path / "conf.yaml"
    path.write_text(text)
    return path


REDSHIFT_ENV = {
    "SENSORPIPE_REDSHIFT_WORKGROUP": "wg",
    "SENSORPIPE_REDSHIFT_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:x",
    "SENSORPIPE_REDSHIFT_COPY_ROLE_ARN": "arn:aws:iam::000000000000:role/copy",
    "SENSORPIPE_IOT_DATA_ENDPOINT": "https://example-ats.iot.us-east-1.amazonaws.com",
    # What `sensorpipe deploy` gives every step: the EMR configurations have no region of
    # their own.
    "AWS_REGION": "us-east-1",
}
EMR_ENV = {**REDSHIFT_ENV, "SENSORPIPE_BUCKET": "b"}

MINIMAL = """
environment: local
spark: {app_name: t}
source: {kind: replay, stream_name: s}
lake: {format: parquet, events_path: e, quarantine_path: q, checkpoint_root: c}
"""


def test_local_yaml_loads_with_defaults_applied():
    settings = load_settings(ROOT / "conf/local.yaml", environ={})
    assert settings.environment == "local"
    assert settings.lake.format == "parquet"
    assert settings.source.replay_path == "samples/telemetry"
    assert settings.stream.trigger == "available_now"


def test_emr_yaml_interpolates_environment():
    settings = load_settings(
        ROOT / "conf/emr.yaml", environ={**REDSHIFT_ENV, "SENSORPIPE_BUCKET": "my-bkt"}
    )
    assert settings.lake.events_path == "s3://my-bkt/lake/raw/events"
    assert settings.source.stream_name == "train-telemetry"
    assert settings.spark.master is None


def test_emr_yaml_without_bucket_names_the_field():
    with pytest.raises(ConfigError, match=r"lake\.events_path: refers to \$\{SENSORPIPE_BUCKET\}"):
        load_settings(ROOT / "conf/emr.yaml", environ={"AWS_REGION": "eu-west-1"})


@pytest.mark.parametrize("config", ["emr.yaml", "hospital-stream-emr.yaml"])
def test_emr_configurations_have_no_region_of_their_own(config):
    """The region comes from the step's environment, which the deploy sets from the region it
    deploys to; a default here put every endpoint in us-east-1 whatever the cluster's."""
    env = {**EMR_ENV, "SENSORPIPE_PROTECTED_BUCKET": "p"}
    del env["AWS_REGION"]
    with pytest.raises(ConfigError, match=r"^source\.region: refers to \$\{AWS_REGION\}"):
        load_settings(ROOT / "conf" / config, environ=env)
    assert "us-east-1" not in (ROOT / "conf" / config).read_text()


def test_missing_field_is_named(tmp_path):
    path = write(tmp_path, MINIMAL.replace(" quarantine_path: q,", ""))
    with pytest.raises(ConfigError, match=r"^lake\.quarantine_path: required field is missing"):
        load_settings(path, environ={})


def test_wrong_choice_names_field_expected_and_got(tmp_path):
    path = write(tmp_path, MINIMAL.replace("format: parquet", "format: orc"))
    with pytest.raises(
        ConfigError, match=r"lake\.format: expected one of 'parquet', 'delta', got 'orc'"
    ):
        load_settings(path, environ={})


def test_wrong_type_is_named(tmp_path):
    path = write(tmp_path, MINIMAL + "decode: {max_record_bytes: lots}\n")
    with pytest.raises(
        ConfigError, match=r"decode\.max_record_bytes: expected an integer, got 'lots'"
    ):
        load_settings(path, environ={})


def test_non_positive_is_rejected(tmp_path):
    path = write(tmp_path, MINIMAL + "decode: {max_event_lag_hours: 0}\n")
    with pytest.raises(ConfigError, match=r"decode\.max_event_lag_hours: expected a positive"):
        load_settings(path, environ={})


def test_unknown_field_is_named(tmp_path):
    path = write(tmp_path, MINIMAL + "decode: {max_record_byte: 10}\n")
    with pytest.raises(ConfigError, match=r"decode\.max_record_byte: unknown field"):
        load_settings(path, environ={})


def test_bad_trigger_is_named(tmp_path):
    path = write(tmp_path, MINIMAL + "stream: {trigger: sometimes}\n")
    with pytest.raises(ConfigError, match=r"stream\.trigger: expected 'available_now'"):
        load_settings(path, environ={})


def test_forest_trees_are_checked_and_reach_the_scorer(tmp_path):
    from sensorpipe.streaming.queries import scoring_settings

    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"^anomaly\.forest_trees: expected a positive integer"):
        load_settings(path, environ={"SENSORPIPE__ANOMALY__FOREST_TREES": "0"})
    default = load_settings(path, environ={})
    assert scoring_settings(default.anomaly, 2).detector == "contextual"
    fewer = load_settings(path, environ={"SENSORPIPE__ANOMALY__FOREST_TREES": "10"})
    assert scoring_settings(fewer.anomaly, 2).detector == "contextual;trees=10"


def test_environment_overrides_one_field(tmp_path):
    path = write(tmp_path, MINIMAL)
    settings = load_settings(
        path,
        environ={"SENSORPIPE__LAKE__FORMAT": "delta", "SENSORPIPE__DECODE__MAX_RECORD_BYTES": "99"},
    )
    assert settings.lake.format == "delta"
    assert settings.decode.max_record_bytes == 99


def test_bad_environment_override_names_the_field(tmp_path):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"^lake\.format: expected one of"):
        load_settings(path, environ={"SENSORPIPE__LAKE__FORMAT": "csv"})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "a: [b"), environ={})


def test_job_exits_2_naming_the_field(tmp_path, capsys):
    job = job_module("stream_sensor_anomalies")
    path = write(tmp_path, MINIMAL.replace("kind: replay", "kind: kafka"))
    with pytest.raises(SystemExit) as exit_:
        job.main(["--config", str(path)])
    assert exit_.value.code == 2
    assert (
        "source.kind: expected one of 'replay', 'kinesis', 'aws-kinesis', got 'kafka'"
        in capsys.readouterr().err
    )


def test_at_timestamp_needs_a_timestamp(tmp_path):
    path = write(
        tmp_path, MINIMAL.replace("kind: replay", "kind: kinesis, starting_position: AT_TIMESTAMP")
    )
    with pytest.raises(ConfigError, match=r"source\.starting_timestamp: required when"):
        load_settings(path, environ={})


def test_kinesis_reader_options_use_the_connector_names():
    from sensorpipe.sources import kinesis_reader_options

    # conf/emr.yaml runs the project's source; EMR's connector stays available by setting.
    connector = {**EMR_ENV, "SENSORPIPE__SOURCE__KIND": "aws-kinesis",
                 "SENSORPIPE__SOURCE__ENDPOINT_URL": "https://kinesis.us-east-1.amazonaws.com"}
    settings = load_settings(ROOT / "conf/emr.yaml", environ=connector)
    options = kinesis_reader_options(settings.source, "s3://b/checkpoints/x/kinesis")
    assert options["kinesis.streamName"] == "train-telemetry"
    assert options["kinesis.startingPosition"] == "LATEST"
    assert options["kinesis.maxFetchRecordsPerShard"] == "10000"
    # The connector has no default endpoint (issue 16): the regional one.
    assert options["kinesis.endpointUrl"] == "https://kinesis.us-east-1.amazonaws.com"
    # LATEST is pinned once for both lake queries, written as the connector takes a moment.
    pinned = replace(settings.source, starting_position="AT_TIMESTAMP",
                     starting_timestamp="2026-12-01T06:40:05.123Z")  # fmt: skip
    options = kinesis_reader_options(pinned, "s3://b/checkpoints/x/kinesis")
    assert options["kinesis.startingPosition"] == "AT_TIMESTAMP 2026-12-01T06:40:05Z"
    assert "kinesis.startingTimestamp" not in options
    with pytest.raises(ConfigError, match="^source.endpoint_url: required by the aws-kinesis"):
        load_settings(
            ROOT / "conf/emr.yaml", environ={**connector, "SENSORPIPE__SOURCE__ENDPOINT_URL": ""}
        )


def test_shuffle_partitions_apply_on_emr_not_only_locally():
    """Spark's default of 200 shuffle partitions writes 200 small files per aggregate batch on
    EMR; the configured number is set wherever the job runs."""
    from sensorpipe.config import HealthSettings
    from sensorpipe.session import session_conf

    env = {**REDSHIFT_ENV, "SENSORPIPE_BUCKET": "b"}
    emr = load_settings(ROOT / "conf/emr.yaml", environ=env)
    assert session_conf(emr)["spark.sql.shuffle.partitions"] == str(emr.spark.shuffle_partitions)
    assert "spark.default.parallelism" not in session_conf(emr)  # YARN decides on EMR
    health = load_settings(
        ROOT / "conf/health-emr.yaml",
        environ={
            "SENSORPIPE_BUCKET": "b",
            "SENSORPIPE_PROTECTED_BUCKET": "p",
            "SENSORPIPE_HOSPITAL_JDBC_URL": "jdbc:postgresql://h/d?sslmode=verify-full",
        },
        kind=HealthSettings,
    )
    assert session_conf(health)["spark.sql.shuffle.partitions"] == "64"


def test_emr_connections_require_verified_tls_and_local_ones_do_not(tmp_path):
    """On EMR, the hospital's database, the metastore and a PostgreSQL warehouse must use
    sslmode=verify-full; local runs keep plain loopback (conf/local.yaml: sslmode disable)."""
    from sensorpipe.config import DeploySettings, HealthSettings

    health_env = {"SENSORPIPE_BUCKET": "b", "SENSORPIPE_PROTECTED_BUCKET": "p"}
    url = "jdbc:postgresql://db.hospital.example:5432/clinical"
    with pytest.raises(ConfigError, match="^source.url: on EMR the connection must require"):
        load_settings(
            ROOT / "conf/health-emr.yaml",
            kind=HealthSettings,
            environ={**health_env, "SENSORPIPE_HOSPITAL_JDBC_URL": url + "?sslmode=prefer"},
        )
    ok = load_settings(
        ROOT / "conf/health-emr.yaml",
        kind=HealthSettings,
        environ={**health_env, "SENSORPIPE_HOSPITAL_JDBC_URL": url + "?sslmode=verify-full"},
    )
    assert ok.source.url.endswith("sslmode=verify-full")
    assert load_settings(ROOT / "conf/health-local.yaml", kind=HealthSettings, environ={})

    emr = {
        **REDSHIFT_ENV,
        "SENSORPIPE_BUCKET": "b",
        "SENSORPIPE__WAREHOUSE__KIND": "postgres",
        "SENSORPIPE__WAREHOUSE__HOST": "warehouse.corp",
        "SENSORPIPE__WAREHOUSE__SSLMODE": "require",
    }
    with pytest.raises(ConfigError, match="^warehouse.sslmode: on EMR"):
        load_settings(ROOT / "conf/emr.yaml", environ=emr)
    assert load_settings(
        ROOT / "conf/emr.yaml", environ={**emr, "SENSORPIPE__WAREHOUSE__SSLMODE": "verify-full"}
    )
    assert load_settings(ROOT / "conf/local.yaml", environ={}).warehouse.sslmode == "disable"

    deploy = (ROOT / "conf/deploy.yaml").read_text()
    env = {
        "SENSORPIPE_METASTORE_KIND": "jdbc",
        "SENSORPIPE_METASTORE_JDBC_URL": "jdbc:postgresql://meta:5432/hive",
        "SENSORPIPE_METASTORE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:m",
        "LakeBucketName": "b",
        "ProtectedBucketName": "p",
        "EmrSubnetId": "subnet-0abc",
        "EmrServiceRoleName": "r",
        "EmrInstanceProfileName": "i",
        "EmrKeyArn": "k",
        "AWS_REGION": "us-east-1",
        "EmrPrimarySecurityGroupId": "sg-0aaa",
        "EmrCoreSecurityGroupId": "sg-0bbb",
        "EmrServiceAccessSecurityGroupId": "sg-0ccc",
        "EmrOnPremisesSecurityGroupId": "sg-0ddd",
        "EmrKdcFromCorporateSecurityGroupId": "sg-0eee",
        "StreamingJobsRoleArn": "arn:aws:iam::123456789012:role/s",
        "BatchJobsRoleArn": "arn:aws:iam::123456789012:role/b",
        "HospitalJobsRoleArn": "arn:aws:iam::123456789012:role/h",
        "HospitalStreamName": "hospital-devices",
        "WarehouseWorkgroupName": "w",
        "WarehouseLoaderSecretArn": "s",
        "WarehouseCopyRoleArn": "c",
        "IotDataEndpoint": "e",
        "HospitalJdbcUrl": "h",
        "TelemetryStreamName": "t",
    }
    (tmp_path / "deploy.yaml").write_text(deploy)
    with pytest.raises(ConfigError, match="^metastore.jdbc_url: on EMR"):
        load_settings(tmp_path / "deploy.yaml", environ=env, kind=DeploySettings)
    env["SENSORPIPE_METASTORE_JDBC_URL"] += "?sslmode=verify-full"
    assert load_settings(tmp_path / "deploy.yaml", environ=env, kind=DeploySettings)


def test_on_emr_lineage_goes_to_a_shared_location_not_the_yarn_container(tmp_path):
    env = {**REDSHIFT_ENV, "SENSORPIPE_BUCKET": "b"}
    assert load_settings(ROOT / "conf/emr.yaml", environ=env).lineage.path == "s3://b/lineage"
    for path in ("build/lineage", "hdfs:///sensorpipe/lineage"):
        with pytest.raises(ConfigError, match="^lineage.path: on EMR expected an s3:// location"):
            load_settings(
                ROOT / "conf/emr.yaml", environ={**env, "SENSORPIPE__LINEAGE__PATH": path}
            )


def test_the_document_store_refuses_a_scheme_it_would_take_for_a_folder(tmp_path, monkeypatch):
    """hdfs:// or gs:// became a local folder named "hdfs:"; s3a:// is S3 (issue 13, item 12)."""
    from sensorpipe.jsonstore import JsonStore

    monkeypatch.chdir(tmp_path)
    for root in ("hdfs:///sensorpipe/kinesis-metadata", "gs://bucket/prefix"):
        with pytest.raises(ValueError, match="is not supported here; use s3://"):
            JsonStore(root)
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert JsonStore("s3a://bucket/prefix")._bucket == "bucket"
    local = JsonStore(f"file://{tmp_path}/docs")
    local.write("a.json", {"x": 1})
    assert local.read("a.json") == {"x": 1}
    assert load_settings(ROOT / "conf/local.yaml", environ={}).lineage.path == "build/lineage"


def test_the_document_store_creates_a_document_once_locally_and_on_s3_moto(
    tmp_path, moto_server, monkeypatch
):
    """create() is the first-writer-wins write the Kinesis source's end files and the LATEST
    pin rely on: a hard link locally, S3's conditional write (If-None-Match) on S3 (moto, a
    mock: the real S3 is not reachable here)."""
    import boto3
    from sensorpipe.jsonstore import JsonStore

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("s3").create_bucket(Bucket="meta")
    for store in (JsonStore(str(tmp_path / "docs")), JsonStore("s3://meta/prefix")):
        assert store.create("batches/1/s.json", {"records": 10})
        assert not store.create("batches/1/s.json", {"records": 15})
        assert store.read("batches/1/s.json") == {"records": 10}
        assert store.children("batches/1") == ["s.json"]


def test_on_emr_the_sink_log_retention_is_required_and_outlasts_the_compaction():
    """The events sink's log forgets files after lake.sink_log_retention; shorter than a
    day's late-data horizon plus a week, a day could leave it before it is compacted."""
    load_settings(ROOT / "conf/emr.yaml", environ=EMR_ENV)  # 30d
    for value, message in (("3d", "at least 360 hours"), ("a month", "expected a duration")):
        environ = {**EMR_ENV, "SENSORPIPE__LAKE__SINK_LOG_RETENTION": value}
        with pytest.raises(ConfigError, match=f"^lake.sink_log_retention: {message}"):
            load_settings(ROOT / "conf/emr.yaml", environ=environ)


def test_a_local_checkpoint_under_a_distributed_master_fails_at_start_naming_the_field():
    """The Kinesis source's executors write where they stopped under the checkpoint root; with
    a master other than local[N] a local folder is only right if every process shares it."""
    environ = {"SENSORPIPE__SOURCE__KIND": "kinesis",
               "SENSORPIPE__SPARK__MASTER": "spark://10.0.0.5:7077"}  # fmt: skip
    with pytest.raises(ConfigError, match="^lake.checkpoint_root: 'build/checkpoints' is a local "
                       "path, and with master spark://10.0.0.5:7077"):  # fmt: skip
        load_settings(ROOT / "conf/local.yaml", environ=environ)
    shared = {**environ, "SENSORPIPE__SPARK__LOCAL_PATHS_SHARED": "true"}
    assert load_settings(ROOT / "conf/local.yaml", environ=shared).spark.local_paths_shared
    on_s3 = {**environ, "SENSORPIPE__LAKE__CHECKPOINT_ROOT": "s3://bucket/checkpoints"}
    assert load_settings(ROOT / "conf/local.yaml", environ=on_s3).distributed
    assert not load_settings(ROOT / "conf/local.yaml", environ={}).distributed
