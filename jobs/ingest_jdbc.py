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
from sensorpipe.health.ingest import import_tables, render_imports
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
    params = {"tables": args.table or "all"}
    with recorded_run(settings.lineage, "ingest_jdbc", params, protected=True) as run:
        imports = import_tables(spark, settings, run, args.table)
        print(render_imports(imports))
        print(f"lineage run {run.run_id}: {run.rows_in} rows read, {run.rows_out} written, "
              f"{run.rows_quarantined} quarantined")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
