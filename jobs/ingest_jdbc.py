"""Hospital ingest: the on-premises tables over JDBC -> the protected zone, incrementally.

    spark-submit --jars /usr/share/java/postgresql.jar --py-files dist/sensorpipe.zip \
        jobs/ingest_jdbc.py --config conf/health-local.yaml [--table clinical.patients ...]

Each table's rows changed since its high-water mark become a new load; bad rows go to the
quarantine with their reason. A re-run with nothing new writes nothing.
"""

from __future__ import annotations

import argparse
import sys

from sensorpipe.config import HealthSettings, load_settings_for_job
from sensorpipe.health.ingest import import_tables
from sensorpipe.lineage import recorded_run
from sensorpipe.session import build_session


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/health-local.yaml")
    parser.add_argument("--table", action="append", help="only this source table (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings_for_job(args.config, HealthSettings)
    spark = build_session(settings)
    with recorded_run(settings.lineage, "ingest_jdbc", {"tables": args.table or "all"}) as run:
        for t in import_tables(spark, settings, run.run_id, args.table):
            run.read("jdbc", t.table, t.rows_read, after=t.after, high_water_mark=t.high_water_mark)
            if t.load_id is not None:
                run.wrote(
                    "path",
                    f"{t.output_path}/load_id={t.load_id}",
                    t.rows_valid,
                    t.schema_fingerprint,
                    zone="protected",
                )
                if t.rows_quarantined:
                    run.wrote(
                        "path",
                        f"{t.quarantine_path}/load_id={t.load_id}",
                        t.rows_quarantined,
                        quarantine=True,
                        zone="protected",
                    )
            print(
                f"{t.table:26} load {t.load_id or '-':>3}  read {t.rows_read:6}  "
                f"valid {t.rows_valid:6}  quarantined {t.rows_quarantined:4}  "
                f"high-water mark {t.high_water_mark}"
                + (
                    f"  (removed an unfinished load: {', '.join(t.cleaned_up)})"
                    if t.cleaned_up
                    else ""
                )
            )
        print(
            f"lineage run {run.run_id}: {run.rows_in} rows read, {run.rows_out} written, "
            f"{run.rows_quarantined} quarantined"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
