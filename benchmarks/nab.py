"""NAB score of a detector, through the same detector core the streaming job uses.

    python benchmarks/nab.py --nab-dir ../shared/nab --scores-out build/nab [--detector rcf]

DIR holds data/<category>/<file>.csv (timestamp,value) and labels/combined_windows.json. Each
file is scored by a fresh detector, in order, one value at a time (causal). Writes
OUT/<category>/<file>.csv (timestamp,anomaly_score; one row per input row, same order) and
prints the NAB score for the three profiles (lib/sensorpipe/anomaly/nab_scoring.py), each with
one threshold optimised over the corpus. No --detector means the default detector.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from sensorpipe.anomaly.detectors import DEFAULT_DETECTOR, make_detector
from sensorpipe.anomaly.nab_scoring import PROFILES, prepare_file, score_corpus

ROOT = Path(__file__).resolve().parent.parent


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    texts = [r["timestamp"] for r in rows]
    stamps = np.array([t.replace(" ", "T") for t in texts], dtype="datetime64[s]")
    values = np.array([float(r["value"]) for r in rows])
    return stamps, values, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab-dir", default=str(ROOT.parent / "shared" / "nab"))
    parser.add_argument("--scores-out", default=str(ROOT / "build" / "nab"))
    parser.add_argument("--detector", default=None, help=f"default: {DEFAULT_DETECTOR}")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    nab = Path(args.nab_dir)
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    out_root = Path(args.scores_out)
    name = args.detector or DEFAULT_DETECTOR
    prepared = []
    points = 0
    seconds = 0.0
    for path in sorted((nab / "data").glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name}"
        stamps, values, texts = read_series(path)
        detector = make_detector(name, seed=args.seed)
        start = time.perf_counter()
        _, scores = detector.update(values)
        seconds += time.perf_counter() - start
        points += len(values)
        target = out_root / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "anomaly_score"])
            writer.writerows(zip(texts, (f"{s:.6f}" for s in scores), strict=True))
        file_windows = [
            (np.datetime64(a.replace(" ", "T")[:19]), np.datetime64(b.replace(" ", "T")[:19]))
            for a, b in windows.get(key, [])
        ]
        prepared.append(prepare_file(key, stamps, np.round(scores, 6), file_windows))
    print(
        f"detector {name}: {len(prepared)} files, {points} points, "
        f"{points / seconds:,.0f} points/s (one core)"
    )
    for profile in PROFILES:
        result = score_corpus(prepared, profile)
        print(
            f"  {profile:<20} {result.score:6.1f}  (threshold {result.threshold:.4f}, "
            f"TP {result.tp}, FP {result.fp}, FN {result.fn})"
        )
    print(f"scores written under {out_root}")


if __name__ == "__main__":
    main()
