"""Streaming job: Kinesis records -> decode + validate -> lake (events | quarantine).

    spark-submit --py-files dist/sensorpipe.zip jobs/stream_sensor_anomalies.py \
        --config conf/local.yaml [--summary-json build/run-summary.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sensorpipe.config import load_settings_for_job
from sensorpipe.lineage import recorded_run
from sensorpipe.session import build_session
from sensorpipe.streaming import check_against_manifest, record_lineage, run_lake_job


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/local.yaml", help="settings file (YAML)")
    parser.add_argument("--summary-json", help="also write the run summary here as JSON")
    parser.add_argument(
        "--summary-text", help="write the run summary here instead of printing it (make run)"
    )
    parser.add_argument(
        "--manifest", help="generated samples' manifest.json: check the run against it too"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings_for_job(args.config)
    spark = build_session(settings)
    protected = settings.lake.protected_root is not None
    with recorded_run(settings.lineage, "stream_sensor_anomalies", protected=protected) as run:
        summary = run_lake_job(spark, settings)
        record_lineage(run, settings, summary)
    text = summary.render()
    as_planted = True
    if args.manifest:
        check = check_against_manifest(
            spark, settings, summary, json.loads(Path(args.manifest).read_text())
        )
        text, as_planted = text + "\n" + check.render(), check.as_planted
    if args.summary_text:
        Path(args.summary_text).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_text).write_text(text + "\n")
    else:
        print(text)
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(summary.to_json())
    return 0 if summary.reconciled and as_planted else 1


if __name__ == "__main__":
    sys.exit(main())
