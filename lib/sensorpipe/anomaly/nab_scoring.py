"""The Numenta Anomaly Benchmark's scoring, implemented from its published description
(Lavin & Ahmad 2015; NAB v1.x scorer and sweeper).

Per file: the first 15% of rows (at most 750) are a probationary period and are not scored.
A row inside a labelled window, if detected, is worth ``scaled_sigmoid(-(right - i + 1) / width)
* tp / max_tp`` where width is the window's length in rows: 1 x tp at the window's first row,
falling towards its end; only the earliest detection in a window counts. A window with no
detection costs ``-fn``. A detection outside every window costs ``scaled_sigmoid(d) * fp``
(negative), where ``d`` is the distance past the previous window's right edge in units of that
window's width minus one (``-fp`` before any window, or more than 3 widths after one).

One threshold per profile is chosen over the whole corpus (here: the exact optimum over every
distinct score), and the total is normalised so that the null detector (no detection) scores 0
and the perfect one (each window's first row) scores 100.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}
PROBATION_PERCENT = 0.15


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def scaled_sigmoid(relative_position: float) -> float:
    """NAB's scaled sigmoid: +1 well before a window's end, about 0 at it, -1 far after."""
    if relative_position > 3.0:
        return -1.0
    return 2.0 * sigmoid(-5.0 * relative_position) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_rows(file_length: int) -> int:
    return int(min(math.floor(PROBATION_PERCENT * file_length), PROBATION_PERCENT * 5000))


@dataclass
class ScoredFile:
    """One file's rows, prepared for the sweep: unweighted sigmoid per row and window ids."""

    name: str
    scores: np.ndarray  # detector score per row
    window_of_row: np.ndarray  # window index (global) or -1 outside windows
    unweighted: np.ndarray  # scaled sigmoid value per row
    scored: np.ndarray  # bool: after the probationary period
    windows: int


def prepare_file(
    name: str, timestamps: Sequence, scores: Sequence[float], windows: Iterable[tuple]
) -> ScoredFile:
    """Align windows ([start, end] timestamps, inclusive) with rows, as NAB's sweeper does."""
    ts = np.asarray(timestamps)
    n = len(ts)
    window_of_row = np.full(n, -1, dtype=np.int64)
    unweighted = np.full(n, -1.0)
    bounds = []
    for start, end in sorted(windows):
        left = int(np.searchsorted(ts, np.asarray(start, dtype=ts.dtype), side="left"))
        right = int(np.searchsorted(ts, np.asarray(end, dtype=ts.dtype), side="right")) - 1
        if right < left:
            continue
        bounds.append((left, right, len(bounds)))
    prev_right = prev_width = None
    cursor = 0
    for left, right, wid in bounds:
        for i in range(cursor, left):
            unweighted[i] = _past_window(i, prev_right, prev_width)
        width = right - left + 1
        for i in range(left, right + 1):
            window_of_row[i] = wid
            unweighted[i] = scaled_sigmoid(-(right - i + 1) / width)
        prev_right, prev_width, cursor = right, width, right + 1
    for i in range(cursor, n):
        unweighted[i] = _past_window(i, prev_right, prev_width)
    scored = np.arange(n) >= probation_rows(n)
    return ScoredFile(
        name, np.asarray(scores, dtype=float), window_of_row, unweighted, scored, len(bounds)
    )


def _past_window(i: int, prev_right: int | None, prev_width: int | None) -> float:
    if prev_right is None:
        return -1.0
    if prev_width <= 1:
        return scaled_sigmoid(abs(prev_right - i) / 1e-9)
    return scaled_sigmoid(abs(prev_right - i) / float(prev_width - 1))


@dataclass(frozen=True)
class ProfileResult:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int

    @property
    def score(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def score_corpus(files: Sequence[ScoredFile], profile: str) -> ProfileResult:
    """The best total over every threshold, for one profile, and its normalised score."""
    weights = PROFILES[profile]
    total_windows = sum(f.windows for f in files)
    null = -weights["fn"] * total_windows
    perfect = weights["tp"] * total_windows
    scores = np.concatenate([f.scores[f.scored] for f in files])
    offsets = np.cumsum([0] + [f.windows for f in files])
    windows = np.concatenate(
        [
            np.where(f.window_of_row >= 0, f.window_of_row + off, -1)[f.scored]
            for f, off in zip(files, offsets, strict=False)
        ]
    )
    unweighted = np.concatenate([f.unweighted[f.scored] for f in files])
    value = np.where(windows >= 0, unweighted * weights["tp"] / MAX_TP, unweighted * weights["fp"])
    order = np.argsort(-scores, kind="stable")
    scores, windows, value = scores[order], windows[order], value[order]

    best_window: dict[int, float] = {}
    tp_total = fp_total = 0.0
    fp_count = 0
    best = ProfileResult(profile, math.inf, null, null, perfect, 0, 0, total_windows)
    n = len(scores)
    for i in range(n):
        wid = int(windows[i])
        if wid >= 0:
            previous = best_window.get(wid)
            if previous is None:
                best_window[wid] = value[i]
                tp_total += value[i]
            elif value[i] > previous:
                best_window[wid] = value[i]
                tp_total += value[i] - previous
        else:
            fp_total += value[i]
            fp_count += 1
        if i + 1 < n and scores[i + 1] == scores[i]:
            continue  # a threshold admits every row with the same score
        detected = len(best_window)
        raw = tp_total + fp_total - weights["fn"] * (total_windows - detected)
        if raw > best.raw:
            best = ProfileResult(
                profile,
                float(scores[i]),
                raw,
                null,
                perfect,
                detected,
                fp_count,
                total_windows - detected,
            )
    return best


def raw_at_threshold(files: Sequence[ScoredFile], profile: str, threshold: float) -> float:
    """The corpus total when every scored row with score >= threshold is a detection (the
    direct definition, without the sweep: used to check it)."""
    weights = PROFILES[profile]
    total = 0.0
    for f in files:
        detected = f.scored & (f.scores >= threshold)
        best: dict[int, float] = {}
        for i in np.flatnonzero(detected):
            wid = int(f.window_of_row[i])
            if wid >= 0:
                best[wid] = max(best.get(wid, -math.inf), f.unweighted[i] * weights["tp"] / MAX_TP)
            else:
                total += f.unweighted[i] * weights["fp"]
        total += sum(best.values()) - weights["fn"] * (f.windows - len(best))
    return total


def category_scores(
    files: Sequence[ScoredFile], profile: str, threshold: float
) -> dict[str, tuple[float | None, int]]:
    """Each category's normalised score at the corpus's threshold (NAB picks one threshold
    per profile for the whole corpus; a category is scored as its files fare under it, from
    its own null and perfect totals), and its detections outside every window; a category
    without windows has no score. Categories are the folder part of the files' names."""
    weights = PROFILES[profile]
    by_category: dict[str, list[ScoredFile]] = {}
    for f in files:
        by_category.setdefault(f.name.split("/", 1)[0], []).append(f)
    out = {}
    for category, members in sorted(by_category.items()):
        windows = sum(f.windows for f in members)
        false = sum(int(np.sum(f.scored & (f.scores >= threshold) & (f.window_of_row < 0)))
                    for f in members)  # fmt: skip
        if not windows:
            out[category] = (None, false)
            continue
        null, perfect = -weights["fn"] * windows, weights["tp"] * windows
        raw = raw_at_threshold(members, profile, threshold)
        out[category] = (100.0 * (raw - null) / (perfect - null), false)
    return out


# -- a NAB corpus on disk: data/<category>/<file>.csv (timestamp,value), labels/*.json --------


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A NAB data file: its timestamps (datetime64[s]), values, and the timestamps as written."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    texts = [r["timestamp"] for r in rows]
    stamps = np.array([t.replace(" ", "T") for t in texts], dtype="datetime64[s]")
    values = np.array([float(r["value"]) for r in rows])
    return stamps, values, texts


def score_nab_files(
    nab_dir: Path,
    paths: Iterable[Path],
    scores_of: Callable[[np.ndarray], np.ndarray],
    on_file: Callable[[Path, list[str], np.ndarray], None] | None = None,
) -> list[ScoredFile]:
    """Each file scored by `scores_of(values)` (a fresh detector per file) and aligned with its
    labelled windows, ready for `score_corpus`."""
    windows = json.loads((nab_dir / "labels" / "combined_windows.json").read_text())
    prepared = []
    for path in paths:
        key = f"{path.parent.name}/{path.name}"
        stamps, values, texts = read_series(path)
        scores = scores_of(values)
        if on_file is not None:
            on_file(path, texts, scores)
        file_windows = [
            (np.datetime64(a.replace(" ", "T")[:19]), np.datetime64(b.replace(" ", "T")[:19]))
            for a, b in windows.get(key, [])
        ]
        prepared.append(prepare_file(key, stamps, np.round(scores, 6), file_windows))
    return prepared
