"""NAB score of a detector, through the same detector core the streaming job uses.

    python benchmarks/nab.py --nab-dir ../shared/nab --scores-out build/nab [--detector rcf]

DIR holds data/<category>/<file>.csv (timestamp,value) and labels/combined_windows.json. Each
file is scored by a fresh detector, in order, one value at a time (causal). Writes
OUT/<category>/<file>.csv (timestamp,anomaly_score; one row per input row, same order) and
prints the NAB score for the three profiles (lib/sensorpipe/anomaly/nab_scoring.py), each with
one threshold optimised over the corpus, and each category's score under that threshold (with
its false detections). No --detector means the default detector.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from sensorpipe.anomaly.detectors import DEFAULT_DETECTOR, make_detector
from sensorpipe.anomaly.nab_scoring import (
    PROFILES,
    category_scores,
    score_corpus,
    score_nab_files,
)

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab-dir", default=str(ROOT.parent / "shared" / "nab"))
    parser.add_argument("--scores-out", default=str(ROOT / "build" / "nab"))
    parser.add_argument("--detector", default=None, help=f"default: {DEFAULT_DETECTOR}")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    nab = Path(args.nab_dir)
    out_root = Path(args.scores_out)
    name = args.detector or DEFAULT_DETECTOR
    points = 0
    seconds = 0.0

    def scores_of(values: np.ndarray) -> np.ndarray:
        nonlocal points, seconds
        detector = make_detector(name, seed=args.seed)
        start = time.perf_counter()
        _, scores = detector.update(values)
        seconds += time.perf_counter() - start
        points += len(values)
        return scores

    def write(path: Path, texts: list[str], scores: np.ndarray) -> None:
        target = out_root / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "anomaly_score"])
            writer.writerows(zip(texts, (f"{s:.6f}" for s in scores), strict=True))

    paths = sorted((nab / "data").glob("*/*.csv"))
    prepared = score_nab_files(nab, paths, scores_of, write)
    print(
        f"detector {name}: {len(prepared)} files, {points} points, "
        f"{points / seconds:,.0f} points/s (one core)"
    )
    print_profiles(prepared)
    print(f"scores written under {out_root}")


def print_profiles(prepared: list) -> None:
    """Each profile's score with its corpus threshold, and each category's under it."""
    for profile in PROFILES:
        result = score_corpus(prepared, profile)
        print(
            f"  {profile:<20} {result.score:6.1f}  (threshold {result.threshold:.4f}, "
            f"TP {result.tp}, FP {result.fp}, FN {result.fn})"
        )
        categories = category_scores(prepared, profile, result.threshold)
        for category, (score, false) in categories.items():
            shown = "     -" if score is None else f"{score:6.1f}"
            print(f"      {category:<24} {shown}  ({false} false detections)")


if __name__ == "__main__":
    main()
