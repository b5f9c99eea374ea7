"""Detector throughput: points per second per core for each detector on the same NAB series,
with the public `rrcf` package (same shingle size, tree count and tree size as the project's
RCF, its sliding-window recipe) as the anchor run in the same process.

    .venv/bin/python benchmarks/detector_speed.py [--nab-dir ../shared/nab] [--repeats 3]
        [--rrcf-points 600]

rrcf is slow (pure Python), so it scores the first --rrcf-points points of the series; rates
are points/s, medians of --repeats, single-threaded.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
from sensorpipe.anomaly.detectors import DEFAULT_DETECTOR, DETECTORS, make_detector

ROOT = Path(__file__).resolve().parent.parent
SERIES = "realKnownCause/machine_temperature_system_failure.csv"


def rrcf_rate(values: np.ndarray, trees: int, tree_size: int, shingle: int) -> float:
    """The rrcf package's streaming recipe (insert, score by CoDisp, forget the oldest)."""
    import rrcf

    forest = [rrcf.RCTree() for _ in range(trees)]
    points = rrcf.shingle(values, size=shingle) if shingle > 1 else ([v] for v in values)
    start = time.perf_counter()
    count = 0
    for index, point in enumerate(points):
        for tree in forest:
            if len(tree.leaves) > tree_size:
                tree.forget_point(index - tree_size)
            tree.insert_point(point, index=index)
            tree.codisp(index)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab-dir", default=str(ROOT.parent / "shared" / "nab"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rrcf-points", type=int, default=600)
    args = parser.parse_args()
    with open(Path(args.nab_dir) / "data" / SERIES) as f:
        values = np.array([float(r["value"]) for r in csv.DictReader(f)])
    for name in DETECTORS:  # compile (numba) outside the timings
        make_detector(name).update(values[:50])
    rates: dict[str, list[float]] = {name: [] for name in DETECTORS}
    anchor: list[float] = []
    for _ in range(args.repeats):
        for name in DETECTORS:
            detector = make_detector(name)
            start = time.perf_counter()
            detector.update(values)
            rates[name].append(len(values) / (time.perf_counter() - start))
        anchor.append(rrcf_rate(values[: args.rrcf_points], trees=100, tree_size=256, shingle=1))
    med = statistics.median
    print(f"{SERIES}: {len(values)} points, median of {args.repeats}, one core")
    print(f"  anchor  rrcf 0.4 (100 trees, 256 points, shingle 1)  {med(anchor):>10,.0f} points/s")
    for name in DETECTORS:
        label = f"{name}{' (default)' if name == DEFAULT_DETECTOR else ''}"
        print(
            f"  {label:<48} {med(rates[name]):>10,.0f} points/s "
            f"({med(rates[name]) / med(anchor):,.0f}x the anchor)"
        )


if __name__ == "__main__":
    main()
