"""emr-steps.json (the batch cluster) and emr-streaming-steps.json (the stream's) have the shape
`aws emr add-steps --steps file://...` accepts (awscli's own parsing: test_emr_deploy.py)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS_FILES = ("emr-steps.json", "emr-streaming-steps.json")


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


def test_streaming_step_ships_the_connector_jar_emr_yaml_names():
    from sensorpipe.config import load_settings

    from tests.test_config import EMR_ENV

    settings = load_settings(ROOT / "conf/emr.yaml", environ=EMR_ENV)
    assert settings.source.kind == "aws-kinesis"
    step = next(
        s
        for s in json.loads((ROOT / "emr-streaming-steps.json").read_text())
        if "stream_sensor_anomalies" in s["Name"]
    )
    args = step["Args"]
    assert args[args.index("--jars") + 1] == settings.source.connector_jar
