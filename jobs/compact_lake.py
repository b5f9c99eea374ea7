"""Compaction: one day of the events table -> one file per (day, hour) in lake.compacted_path.

    spark-submit --py-files dist/sensorpipe.zip jobs/compact_lake.py \
        --config conf/local.yaml --date 2026-11-01 [--input hdfs:///sensorpipe/staging/events]
    ... jobs/compact_lake.py --config conf/emr.yaml --date 2026-11-01 \
        --write-manifest s3://bucket/sensorpipe/staging/manifests/events/event_date=2026-11-01.txt

--write-manifest writes the day's committed files (for S3DistCp's --srcPrefixesFile) and stops.
Both refuse a day whose late-data horizon has not passed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from sensorpipe.compaction import CompactionError, run_compaction, write_committed_manifest
from sensorpipe.config import load_settings_for_job
from sensorpipe.lineage import recorded_run
from sensorpipe.session import build_session


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/local.yaml")
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--input", help="events table to read (default: lake.events_path)")
    parser.add_argument("--write-manifest", metavar="URI",
                        help="write the day's committed files here, compact nothing")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings_for_job(args.config)
    spark = build_session(settings)
    try:
        if args.write_manifest:
            count = write_committed_manifest(spark, settings, args.date, args.write_manifest)
            print(f"{count} committed files of {args.date} listed in {args.write_manifest}")
            return 0
        # A refused day (horizon not passed, an uncommitted file in the copy) ends the recorded
        # run as failed, with the reason.
        with recorded_run(settings.lineage, "compact_lake", {"date": args.date}) as run:
            result = run_compaction(spark, settings, args.date, args.input)
            run.read("path", result.source, result.rows, event_date=str(args.date))
            run.wrote("path", f"{result.target}/event_date={args.date}", result.rows,
                      schema_fingerprint=None, zone="lake")  # fmt: skip
            print(f"compacted {result.rows} events of {result.day} from {result.source} "
                  f"into {result.target}/event_date={result.day}")  # fmt: skip
    except CompactionError as exc:
        print(f"compaction: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
