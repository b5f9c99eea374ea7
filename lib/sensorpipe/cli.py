"""The `sensorpipe` command: samples and local helpers around the jobs."""

from __future__ import annotations

import argparse
import json
import sys

from sensorpipe import __version__
from sensorpipe.samples import SampleSpec, generate


def _samples(args: argparse.Namespace) -> int:
    spec = SampleSpec(
        seed=args.seed, trains=args.trains, hours=args.hours, interval_seconds=args.interval_seconds
    )
    manifest = generate(spec, args.out)
    print(json.dumps(manifest["counts"], indent=1))
    print(
        f"wrote {manifest['counts']['records']} records to {args.out}/telemetry "
        f"and the manifest to {args.out}/manifest.json"
    )
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
    samples.set_defaults(func=_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
