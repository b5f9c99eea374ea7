"""Published NAB detectors on the same files, by the same scorer: their per-row scores from
NAB's repository (results/<detector>/<category>/<detector>_<file>.csv, column anomaly_score)
scored with lib/sensorpipe/anomaly/nab_scoring.py on the files of --nab-dir, each profile's
threshold optimised over those files as `benchmarks/nab.py` does for ours. So the published
detectors and ours are compared on the development subset per category, not our subset
against their whole-corpus figures.

    python benchmarks/nab_published.py --results DIR [--nab-dir ../shared/nab] \\
        [--detectors ARTime numenta contextOSE randomCutForest]

DIR is the `results` folder of a checkout of github.com/numenta/NAB (not part of this
project; nothing of it is copied here).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from nab import print_profiles  # benchmarks/nab.py, beside this script
from sensorpipe.anomaly.nab_scoring import score_nab_files

ROOT = Path(__file__).resolve().parent.parent


def published_scores(results: Path, detector: str, path: Path) -> np.ndarray:
    with open(results / detector / path.parent.name / f"{detector}_{path.name}") as f:
        return np.array([float(row["anomaly_score"]) for row in csv.DictReader(f)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="NAB's results folder")
    parser.add_argument("--nab-dir", default=str(ROOT.parent / "shared" / "nab"))
    parser.add_argument("--detectors", nargs="+",
                        default=["ARTime", "numenta", "contextOSE", "randomCutForest"])  # fmt: skip
    args = parser.parse_args()
    nab, results = Path(args.nab_dir), Path(args.results)
    paths = sorted((nab / "data").glob("*/*.csv"))
    for detector in args.detectors:
        pending = iter(paths)

        def scores_of(values: np.ndarray, detector: str = detector, pending=pending) -> np.ndarray:
            # score_nab_files asks for the files' scores in `paths` order
            scores = published_scores(results, detector, next(pending))
            if len(scores) != len(values):
                raise ValueError(f"{detector}: {len(scores)} scores for {len(values)} rows")
            return scores

        prepared = score_nab_files(nab, paths, scores_of)
        print(f"{detector}: {len(prepared)} files")
        print_profiles(prepared)


if __name__ == "__main__":
    main()
