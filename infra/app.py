"""The AWS estate around sensorpipe's jobs: `make synth` writes build/cdk.out/.

    python infra/app.py [--config infra/estate.yaml] [--out build/cdk.out]

Deployment order (each stack names what earlier ones made): access, dr, keys-storage, network,
streams-iot, warehouse-reporting, monitoring (docs/estate.md)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sensorpipe_estate.build import build_app  # noqa: E402
from sensorpipe_estate.settings import load_estate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(Path(__file__).parent / "estate.yaml"))
    parser.add_argument("--out", default="build/cdk.out")
    args = parser.parse_args(argv)
    # `cdk deploy` (cdk.json) runs this app and tells it where to write with CDK_OUTDIR.
    outdir = os.environ.get("CDK_OUTDIR") or args.out
    app = build_app(load_estate(args.config), outdir=outdir)
    assembly = app.synth()
    for stack in assembly.stacks:
        print(
            f"{stack.stack_name}: {stack.environment.region} -> "
            f"{Path(outdir) / stack.template_file}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
