"""Hospital snapshot: patient profiles and clinical-billing discrepancies as of a date.

    spark-submit --py-files dist/sensorpipe.zip jobs/patient_profile_snapshot.py \
        --config conf/health-local.yaml --as-of 2026-06-30

Identified outputs go to the protected zone; their declared crossings (tokens, generalised
dates, no identifiers or free text) to the general zone. Re-running a date replaces it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from sensorpipe.config import HealthSettings, load_settings_for_job
from sensorpipe.health.snapshot import run_snapshot
from sensorpipe.lineage import recorded_run
from sensorpipe.session import build_session


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/health-local.yaml")
    parser.add_argument("--as-of", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings_for_job(args.config, HealthSettings)
    spark = build_session(settings)
    params = {"as_of": args.as_of}
    with recorded_run(settings.lineage, "patient_profile_snapshot", params, protected=True) as run:
        result = run_snapshot(spark, settings, args.as_of, run)
        print(
            f"as of {result.as_of}: {result.patients} patient profiles; discrepancies "
            f"{dict(sorted(result.discrepancies.items()))}"
        )
        for path in result.protected_paths + result.general_paths:
            print(f"  wrote {path}")
        print(f"lineage run {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
