"""emr-steps.json (the batch cluster) and emr-streaming-steps.json (the stream's) have the shape
`aws emr add-steps --steps file://...` accepts (awscli's own parsing: test_emr_deploy.py)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS_FILES = ("emr-steps.json", "emr-streaming-steps.json", "emr-hospital-streaming-steps.json")


def all_steps() -> list[dict]:
    return [s for f in STEPS_FILES for s in json.loads((ROOT / f).read_text())]


CLI_STEP_KEYS = {"Type", "Name", "ActionOnFailure", "Args", "Jar", "MainClass", "Properties"}


def test_steps_use_the_cli_shape_not_the_api_shape():
    steps = all_steps()
    assert steps
    for step in steps:
        assert set(step) <= CLI_STEP_KEYS, f"{step['Name']}: {set(step) - CLI_STEP_KEYS}"
        assert "HadoopJarStep" not in step
        assert step["Type"] in {"Spark", "CUSTOM_JAR", "STREAMING", "HIVE", "PIG", "IMPALA"}
        assert step["ActionOnFailure"] in {"TERMINATE_CLUSTER", "CANCEL_AND_WAIT", "CONTINUE"}
        assert all(isinstance(a, str) for a in step["Args"])


def test_every_step_runs_a_job_that_exists_with_its_config():
    for step in all_steps():
        if step["Type"] != "Spark":
            continue
        args = step["Args"]
        script = next(a for a in args if a.endswith(".py"))
        assert (ROOT / "jobs" / Path(script).name).is_file()
        assert "cluster" == args[args.index("--deploy-mode") + 1]
        conf_file = args[args.index("--config") + 1]
        assert (ROOT / "conf" / conf_file).is_file()


def test_on_emr_the_streams_read_with_the_source_the_tests_prove_exactly_once():
    """The project's Kinesis source is the one tests/test_kinesis_*.py prove exactly-once across
    kills, restarts and resharding; EMR's connector is not proven that way, so neither stream
    uses it and no step ships its jar. Both stream configurations take the deploy's region."""
    from sensorpipe.config import load_settings

    from tests.test_config import EMR_ENV

    env = {**EMR_ENV, "AWS_REGION": "eu-west-1", "SENSORPIPE_PROTECTED_BUCKET": "p"}
    for config in ("emr.yaml", "hospital-stream-emr.yaml"):
        settings = load_settings(ROOT / "conf" / config, environ=env)
        assert settings.source.kind == "kinesis", config
        assert settings.source.region == settings.metrics.region == "eu-west-1", config
        assert settings.source.endpoint_url is None  # boto3's regional endpoint
    for step in all_steps():
        assert not any("kinesis" in a for a in step["Args"] if a.endswith(".jar")), step["Name"]
        assert "--jars" not in step["Args"] or "postgresql" in " ".join(step["Args"])


def test_the_emr_trigger_is_the_one_the_alert_latency_was_measured_with():
    """benchmarks/alert_latency.py measures the alert path (p99 under 2 s at 100 records/s) with
    a 1 s trigger; a 10 s trigger on EMR added up to 10 s to every alert."""
    import re

    from sensorpipe.config import load_settings

    from tests.test_config import EMR_ENV

    def trigger_seconds(text: str) -> int:
        count, unit = text.split()
        return int(count) * {"second": 1, "minute": 60}[unit.rstrip("s")]

    benchmark = (ROOT / "benchmarks/alert_latency.py").read_text()
    measured = re.search(r'"SENSORPIPE__STREAM__TRIGGER": "([^"]+)"', benchmark).group(1)
    env = {**EMR_ENV, "SENSORPIPE_PROTECTED_BUCKET": "p"}
    for config in ("emr.yaml", "hospital-stream-emr.yaml"):
        stream = load_settings(ROOT / "conf" / config, environ=env).stream
        assert trigger_seconds(stream.trigger) <= trigger_seconds(measured), config
        assert stream.side_trigger, config  # the side queries stay off the alert path
