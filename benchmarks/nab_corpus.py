"""The whole NAB corpus as `benchmarks/nab.py --nab-dir` reads it, rebuilt from a published
detector's result files (github.com/numenta/NAB, results/<detector>/<category>/*.csv: every
row's timestamp, value and label, 1 inside a labelled window), for a held-out check of what
the development subset does not have (realAdExchange, realTraffic, realTweets, and the other
files of its categories). Written under build/, never into the project.

    python benchmarks/nab_corpus.py --results DIR [--detector numenta] [--out build/nab-corpus]
    python benchmarks/nab.py --nab-dir build/nab-corpus --scores-out build/nab-corpus-scores

A window is a run of rows labelled 1, from its first row's timestamp to its last's: NAB's
windows hold whole rows, so the run is the window. `nab_published.py --nab-dir` on the same
folder reproduces NAB's published scores (docs/anomaly-detection.md), which checks both this
rebuild and our scorer.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def windows_of(rows: list[dict[str, str]]) -> list[list[str]]:
    """The labelled windows of a file's rows: each run of label 1, as [first, last]
    timestamps in NAB's format."""
    windows: list[list[str]] = []
    inside = False
    for row in rows:
        labelled = row["label"] == "1"
        if labelled and not inside:
            windows.append([row["timestamp"] + ".000000", ""])
        if labelled:
            windows[-1][1] = row["timestamp"] + ".000000"
        inside = labelled
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="NAB's results folder")
    parser.add_argument("--detector", default="numenta")
    parser.add_argument("--out", default=str(ROOT / "build" / "nab-corpus"))
    args = parser.parse_args()
    source, out = Path(args.results) / args.detector, Path(args.out)
    prefix = f"{args.detector}_"
    labels: dict[str, list[list[str]]] = {}
    for path in sorted(source.glob("*/*.csv")):
        with open(path) as f:
            rows = list(csv.DictReader(f))
        name = f"{path.parent.name}/{path.name[len(prefix):]}"
        target = out / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value"])
            writer.writerows((row["timestamp"], row["value"]) for row in rows)
        labels[name] = windows_of(rows)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "labels" / "combined_windows.json").write_text(json.dumps(labels, indent=1))
    print(f"{len(labels)} files, {sum(map(len, labels.values()))} windows under {out}")


if __name__ == "__main__":
    main()
