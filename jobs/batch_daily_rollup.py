"""Daily rollup: lake events -> daily aggregates per (device, sensor) -> warehouse, replacing
each day atomically, so a re-run leaves the warehouse as it was.

    spark-submit --py-files dist/sensorpipe.zip jobs/batch_daily_rollup.py \
        --config conf/local.yaml (--date 2026-11-01 [--to 2026-11-02] | --all-days)
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from sensorpipe.config import load_settings_for_job
from sensorpipe.lineage import recorded_run
from sensorpipe.rollup import run_daily_rollup
from sensorpipe.session import build_session
from sensorpipe.sinks.warehouse import DAILY_AGGREGATES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/local.yaml")
    days = parser.add_mutually_exclusive_group(required=True)
    days.add_argument("--date", type=date.fromisoformat, help="first (or only) day, YYYY-MM-DD")
    days.add_argument("--all-days", action="store_true", help="every day the lake holds")
    parser.add_argument("--to", type=date.fromisoformat, help="last day, inclusive")
    args = parser.parse_args(argv)
    if args.to and not args.date:
        parser.error("--to needs --date")
    if args.date and args.to and args.to < args.date:
        parser.error(f"--to {args.to} is before --date {args.date}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings_for_job(args.config)
    spark = build_session(settings)
    params = {"date": args.date, "to": args.to, "all_days": args.all_days}
    with recorded_run(settings.lineage, "batch_daily_rollup", params) as run:
        result = run_daily_rollup(spark, settings, args.date, args.to or args.date)
        run.read("path", settings.lake.events_path, result.events)
        run.wrote(
            "table",
            f"warehouse.{DAILY_AGGREGATES.name}",
            result.rows,
            first=result.first,
            last=result.last,
        )
    print(result.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
