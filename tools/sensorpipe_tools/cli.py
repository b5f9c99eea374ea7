"""The `sensorpipe` command: samples and local helpers around the jobs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sensorpipe import __version__

from sensorpipe_tools.samples import SampleSpec, generate


def _samples(args: argparse.Namespace) -> int:
    if args.catalogue == "hospital":
        from sensorpipe_tools import hospital_telemetry

        spec = hospital_telemetry.HospitalTelemetrySpec(
            hospital_seed=args.hospital_seed, hospital_patients=args.hospital_patients
        )
        if args.start == "latest":
            spec = replace(spec, start=hospital_telemetry.latest_start(spec, datetime.now(UTC)))
        elif args.start:
            spec = replace(spec, start=args.start)
        manifest = hospital_telemetry.generate(spec, args.out)
    else:
        spec = SampleSpec(
            seed=args.seed, trains=args.trains, hours=args.hours,
            interval_seconds=args.interval_seconds,
        )  # fmt: skip
        manifest = generate(spec, args.out)
    print(json.dumps(manifest["counts"], indent=1))
    print(
        f"wrote {manifest['counts']['records']} records to {args.out}/telemetry "
        f"and the manifest to {args.out}/manifest.json"
    )
    return 0


def _kinesis_client(args: argparse.Namespace):  # noqa: ANN202
    import boto3

    return boto3.client("kinesis", region_name=args.region, endpoint_url=args.endpoint_url)


def _produce(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from sensorpipe_tools.producer import ensure_stream, produce, rebased, sample_records

    client = _kinesis_client(args)
    if args.create_shards:
        ensure_stream(client, args.stream, args.create_shards)
    recorded = sample_records(args.samples)
    if args.keep_event_times:
        records = [record for _, record in recorded]
    else:
        records = rebased(recorded, datetime.now(UTC))
    stats = produce(
        client,
        args.stream,
        records,
        aggregate_records=args.aggregate,
        rate=args.rate,
        progress=not args.quiet,
    )
    print(
        f"produced {stats.user_records} records in {stats.kinesis_records} Kinesis records "
        f"({stats.calls} PutRecords calls, {stats.retried_entries} entries retried) to "
        f"{args.stream} in {stats.seconds:.1f} s: {stats.records_per_second:,.0f} records/s"
    )
    return 0


def _local(args: argparse.Namespace) -> int:
    import json as _json
    from pathlib import Path

    from sensorpipe_tools.local_services import Kinesalite, Postgres, stop_pid

    state = Path(args.state_dir) / f"{args.service}.json"
    if args.action == "start":
        state.parent.mkdir(parents=True, exist_ok=True)
        if args.service == "kinesalite":
            kinesalite = Kinesalite.start(args.port, log_path=state.with_suffix(".log"))
            info = {"pid": kinesalite.proc.pid, "endpoint_url": kinesalite.endpoint_url}
        else:
            pg = Postgres.start(args.data_dir, args.port)
            info = {"data_dir": str(pg.data_dir), "port": pg.port, "dsn": pg.dsn}
        state.write_text(_json.dumps(info))
        print(f"{args.service} started: {info}")
    elif state.exists():
        info = _json.loads(state.read_text())
        if args.service == "kinesalite":
            stop_pid(info["pid"])
        else:
            Postgres(info["port"], Path(info["data_dir"])).stop()
        state.unlink()
        print(f"{args.service} stopped")
    return 0


def _view(args: argparse.Namespace) -> int:
    from sensorpipe.config import ViewConfig, load_settings

    from sensorpipe_tools.view import reader_from_settings, serve

    settings = load_settings(args.config, kind=ViewConfig)
    if args.grant_read_only:
        from sensorpipe_tools.watch import grant_read_only

        grant_read_only(settings)
        print(f"read-only login {settings.view.user}: SELECT on the incidents, the minute "
              "aggregates and the load log")  # fmt: skip
        return 0
    server = serve(reader_from_settings(settings), settings.view, args.host, args.port)
    print(f"operations page: {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


def _watch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sensorpipe_tools.watch import watch

    return watch(args.samples, args.rate, args.port, args.seconds, Path(args.workdir))


def _plot(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from sensorpipe.config import load_settings

    from sensorpipe_tools.plot import (
        around,
        plot_series,
        read_series,
        sample_anomaly_range,
        strongest_anomaly,
    )

    settings = load_settings(args.config)
    lake = args.lake or settings.lake.events_path
    if args.sample_anomaly is not None:
        manifest = json.loads(Path(args.manifest).read_text())
        device, sensor, start, end = sample_anomaly_range(lake, manifest, args.sample_anomaly)
    elif args.strongest:
        device, sensor, moment = strongest_anomaly(lake)
        start, end = around(moment, args.hours)
    else:
        if not (args.device and args.sensor):
            raise SystemExit("plot: --device and --sensor are required (or --strongest)")
        device, sensor = args.device, args.sensor
        start = datetime.fromisoformat(args.start) if args.start else None
        end = datetime.fromisoformat(args.end) if args.end else None
    frame = read_series(lake, device, sensor, start, end)
    out = args.out or f"build/plots/{device}_{sensor}.png"
    path = plot_series(frame, device, sensor, settings.anomaly.threshold, out)
    print(
        f"plot of {device} {sensor} ({len(frame)} events, {int(frame['is_anomaly'].sum())} "
        f"flagged) written to {path}"
    )
    return 0


def _hospital_seed(args: argparse.Namespace) -> int:
    from pathlib import Path

    import psycopg

    from sensorpipe_tools.synthetic_hospital import (
        HospitalSpec,
        generate,
        load_into_postgres,
    )

    data = generate(HospitalSpec(seed=args.seed, patients=args.patients))
    server = f"host={args.host} port={args.port} user={args.user}"
    with psycopg.connect(f"{server} dbname=postgres", autocommit=True) as conn:
        if args.recreate:
            conn.execute(f"DROP DATABASE IF EXISTS {args.database}")
        if not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (args.database,)
        ).fetchone():
            conn.execute(f"CREATE DATABASE {args.database}")
    load_into_postgres(f"{server} dbname={args.database}", data)
    Path(args.manifest).parent.mkdir(parents=True, exist_ok=True)
    Path(args.manifest).write_text(json.dumps(data.manifest, indent=1, default=str))
    print(json.dumps(data.manifest["counts"], indent=1))
    print(
        f"seeded {args.database} on {args.host}:{args.port}; manifest in {args.manifest} "
        f"({len(data.manifest['discrepancies'])} planted discrepancies, "
        f"{len(data.manifest['bad_rows'])} bad rows)"
    )
    return 0


def write_secret_file(path: Path, text: str) -> bool:
    """Write a secret readable by its owner only (mode 0600 from its creation, whatever the
    umask); an existing non-empty file is kept. True if written."""
    if path.exists() and path.stat().st_size:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # a file that existed empty keeps its old mode otherwise
    return True


def _phi_key(args: argparse.Namespace) -> int:
    import secrets

    written = write_secret_file(Path(args.out), secrets.token_hex(32) + "\n")
    print(f"{args.out}: {'new token key' if written else 'kept'} (mode 0600)", file=sys.stderr)
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from sensorpipe.config import LineageSettings
    from sensorpipe.lineage import render, what_produced

    answers = what_produced(LineageSettings(args.lineage_path), args.target, depth=args.depth)
    print(json.dumps(answers, indent=1) if args.json else render(answers, args.target))
    return 0 if answers else 1


def _config_reference(args: argparse.Namespace) -> int:
    from sensorpipe_tools.config_reference import render_reference

    sys.stdout.write(render_reference())
    return 0


def _deploy(args: argparse.Namespace) -> int:
    import subprocess
    from datetime import date

    import boto3
    from sensorpipe.config import ConfigError, DeploySettings, load_settings
    from sensorpipe.lineage import code_version
    from sensorpipe.sinks.alerts.stores import iot_data_endpoint

    from sensorpipe_tools.deploy import (
        DeployError,
        add_steps_requests,
        build_plan,
        dry_run_requests,
        execute,
        outputs_from_file,
        project_root,
        render,
        stack_outputs,
    )

    # One region for everything: the deploy's own (AWS_REGION, or AWS_DEFAULT_REGION when only
    # that is set, as the AWS CLI reads it). No default: conf/deploy.yaml fails naming it.
    environ = dict(os.environ)
    if not environ.get("AWS_REGION") and environ.get("AWS_DEFAULT_REGION"):
        environ["AWS_REGION"] = environ["AWS_DEFAULT_REGION"]
    region = environ.get("AWS_REGION")
    try:
        if args.stack_outputs:
            outputs = outputs_from_file(args.stack_outputs)
        else:
            if not region:
                raise DeployError("no region: set AWS_REGION to the estate's region")
            cfn = boto3.client("cloudformation", region_name=region, endpoint_url=args.endpoint_url)
            outputs = stack_outputs(cfn, args.stack_prefix)
        if "IotDataEndpoint" not in outputs and region and not args.dry_run:
            # not a CloudFormation attribute: ask IoT (a dry run leaves it to the job)
            iot = boto3.client("iot", region_name=region, endpoint_url=args.endpoint_url)
            outputs["IotDataEndpoint"] = iot_data_endpoint(iot)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    # ${Name} in the deploy configuration: the estate's outputs first, then the environment.
    try:
        settings = load_settings(args.config, environ={**environ, **outputs}, kind=DeploySettings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    root = project_root()
    if not (args.skip_build or args.dry_run):
        subprocess.run(["make", "--no-print-directory", "dist"], cwd=root, check=True)
    day = date.fromisoformat(args.date) if args.date else date.today()
    try:
        plan = build_plan(settings, root, args.code_version or code_version(), day, args.cluster)
        emr = boto3.client("emr", region_name=settings.region, endpoint_url=args.endpoint_url)
        if args.dry_run:
            add_steps = None
            if args.cluster_id:  # read-only: which steps the running cluster still needs
                add_steps, _ = add_steps_requests(plan, emr, args.cluster_id, args.restart_stream)
            if args.json:
                print(json.dumps(dry_run_requests(plan, add_steps), indent=1))
            else:
                print(render(plan, None))
            return 0
        s3 = boto3.client("s3", region_name=settings.region, endpoint_url=args.endpoint_url)
        result = execute(plan, settings, s3, emr, args.cluster_id, args.restart_stream)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    print(render(plan, result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sensorpipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sensorpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    samples = sub.add_parser("samples", help="generate seeded sample telemetry and its manifest")
    defaults = SampleSpec()
    samples.add_argument("--out", default="samples")
    samples.add_argument("--seed", type=int, default=defaults.seed)
    samples.add_argument("--trains", type=int, default=defaults.trains)
    samples.add_argument("--hours", type=int, default=defaults.hours)
    samples.add_argument("--interval-seconds", type=int, default=defaults.interval_seconds)
    samples.add_argument(
        "--catalogue", choices=["train", "hospital"], default="train",
        help="hospital: the synthetic hospital's monitors and pacemakers (hospital_telemetry.py)",
    )  # fmt: skip
    samples.add_argument("--hospital-seed", type=int, default=7, help="the hospital-seed seed")
    samples.add_argument("--hospital-patients", type=int, default=120)
    samples.add_argument(
        "--start", help="hospital: first reading (ISO-8601 with zone), or latest: the default "
        "start moved by whole days to the latest that ends before now (make run-hospital, "
        "which publishes it with --keep-event-times)",
    )  # fmt: skip
    samples.set_defaults(func=_samples)

    produce = sub.add_parser("produce", help="publish sample telemetry to a Kinesis stream")
    produce.add_argument("--stream", default="train-telemetry")
    produce.add_argument("--samples", default="samples", help="a folder made by `samples`")
    produce.add_argument("--endpoint-url", help="e.g. http://127.0.0.1:4567 for kinesalite")
    produce.add_argument("--region", default="us-east-1")
    produce.add_argument(
        "--create-shards",
        type=int,
        default=0,
        help="create the stream with this many shards if it does not exist",
    )
    produce.add_argument(
        "--aggregate",
        type=int,
        default=0,
        metavar="N",
        help="KPL-aggregate up to N records of one device per Kinesis record",
    )
    produce.add_argument("--rate", type=float, help="target records per second")
    produce.add_argument(
        "--keep-event-times",
        action="store_true",
        help="send recorded event times as they are (default: shift them by "
        "whole hours so the recorded arrivals end in the last hour)",
    )
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=_produce)

    plot = sub.add_parser("plot", help="PNG of a sensor's values and anomaly score from the lake")
    plot.add_argument("--config", default="conf/local.yaml")
    plot.add_argument("--lake", help="events table (default: lake.events_path)")
    plot.add_argument("--device")
    plot.add_argument("--sensor")
    plot.add_argument("--start", help="UTC, ISO-8601")
    plot.add_argument("--end", help="UTC, ISO-8601")
    plot.add_argument(
        "--strongest", action="store_true", help="around the highest-scoring flagged event instead"
    )
    plot.add_argument("--hours", type=float, default=4.0, help="with --strongest: +/- hours")
    plot.add_argument(
        "--sample-anomaly",
        type=int,
        metavar="K",
        help="around the K-th anomaly of the samples' manifest (0-based)",
    )
    plot.add_argument("--manifest", default="samples/manifest.json")
    plot.add_argument("--out")
    plot.set_defaults(func=_plot)

    local = sub.add_parser("local", help="start or stop a local stand-in for make run")
    local.add_argument("action", choices=["start", "stop"])
    local.add_argument("service", choices=["kinesalite", "postgres"])
    local.add_argument("--port", type=int)
    local.add_argument("--state-dir", default="build/local")
    local.add_argument(
        "--data-dir",
        default="/tmp/sensorpipe-local-pgdata",
        help="postgres: data directory (the postgres user must reach it)",
    )
    local.set_defaults(func=_local)

    hospital = sub.add_parser(
        "hospital-seed", help="create and fill the synthetic hospital database (no real PHI)"
    )
    hospital.add_argument("--host", default="127.0.0.1")
    hospital.add_argument("--port", type=int, default=55433)
    hospital.add_argument("--user", default="sensorpipe")
    hospital.add_argument("--database", default="hospital")
    hospital.add_argument("--seed", type=int, default=7)
    hospital.add_argument("--patients", type=int, default=120)
    hospital.add_argument("--recreate", action="store_true", help="drop the database first")
    hospital.add_argument("--manifest", default="build/hospital/manifest.json")
    hospital.set_defaults(func=_hospital_seed)

    lineage = sub.add_parser("lineage", help="what produced this path or table")
    lineage.add_argument("question", choices=["what-produced"])
    lineage.add_argument("target", help="a path (local or s3://) or a table name")
    lineage.add_argument("--lineage-path", default="build/lineage", help="lineage.path")
    lineage.add_argument("--depth", type=int, default=4, help="levels of upstream runs")
    lineage.add_argument("--json", action="store_true")
    lineage.set_defaults(func=_lineage)

    phi_key = sub.add_parser(
        "phi-key", help="create a random PHI token key file, readable by its owner only"
    )
    phi_key.add_argument("--out", default="build/phi-token-key")
    phi_key.set_defaults(func=_phi_key)

    reference = sub.add_parser(
        "config-reference", help="print docs/configuration.md from the settings classes"
    )
    reference.set_defaults(func=_config_reference)

    view = sub.add_parser("view", help="serve the operations page (fleet, incidents) live")
    view.add_argument("--config", default="conf/local.yaml")
    view.add_argument("--host", help="address to bind (default view.host: loopback)")
    view.add_argument("--port", type=int, help="default view.port; 0 picks a free one")
    view.add_argument(
        "--grant-read-only", action="store_true",
        help="PostgreSQL: as the warehouse's writer, create the tables and the view's "
        "read-only login, then exit",
    )  # fmt: skip
    view.set_defaults(func=_view)

    watch = sub.add_parser(
        "watch", help="local services, the samples replayed in real time, the streaming job "
        "and the operations page (make watch)",
    )  # fmt: skip
    watch.add_argument("--samples", default="samples")
    watch.add_argument("--rate", type=float, default=300.0, help="records per second")
    watch.add_argument("--port", type=int, default=8765, help="the page's port (0: any free)")
    watch.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    watch.add_argument("--workdir", default="build/watch", help="lake, checkpoints, outbox")
    watch.set_defaults(func=_watch)

    deploy = sub.add_parser(
        "deploy", help="build, upload to S3, add the steps to a cluster or create one"
    )
    deploy.add_argument("--config", default="conf/deploy.yaml")
    deploy.add_argument(
        "--cluster", choices=("stream", "hospital-stream", "batch"), required=True,
        help="stream: the trains' streaming cluster; hospital-stream: the hospital's device "
        "stream, on nodes of its own (PHI); batch: the daily batch steps",
    )  # fmt: skip
    deploy.add_argument("--json", action="store_true", help="with --dry-run: the requests as JSON")
    deploy.add_argument(
        "--restart-stream", action="store_true",
        help="add the streaming step again to a stream cluster whose stream ended",
    )  # fmt: skip
    deploy.add_argument("--cluster-id", help="add the steps to this running cluster")
    deploy.add_argument("--date", help="the batch steps' day (default: today), YYYY-MM-DD")
    deploy.add_argument("--code-version", help="artifact prefix (default: the git commit)")
    deploy.add_argument("--skip-build", action="store_true", help="use dist/ as it is")
    deploy.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    deploy.add_argument("--endpoint-url", help="S3, EMR and CloudFormation endpoint (tests: moto)")
    deploy.add_argument(
        "--stack-prefix",
        default="sensorpipe",
        help="read the outputs of the estate's stacks <prefix>-* (infra/)",
    )
    deploy.add_argument(
        "--stack-outputs",
        metavar="FILE",
        help="take the outputs from this `cdk deploy --outputs-file` JSON instead",
    )
    deploy.set_defaults(func=_deploy)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
