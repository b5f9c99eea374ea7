"""NAB scoring on hand-worked cases: one file of 100 rows (probation: 15 rows), one window over
rows 40..49 (width 10) unless said otherwise."""

import math
from pathlib import Path

import numpy as np
import pytest
from sensorpipe.anomaly.nab_scoring import (
    MAX_TP,
    category_scores,
    prepare_file,
    probation_rows,
    raw_at_threshold,
    scaled_sigmoid,
    score_corpus,
)

T = np.datetime64("2026-01-01T00:00") + np.arange(100).astype("timedelta64[m]")


def file_with(detections, windows=((40, 49),), n=100, name="f"):
    scores = np.zeros(n)
    for row, value in detections.items():
        scores[row] = value
    ts = T[:n]
    return prepare_file(name, ts, scores, [(ts[a], ts[b]) for a, b in windows])


def test_constants_match_nab():
    assert MAX_TP == pytest.approx(0.9866142981514305)
    assert probation_rows(100) == 15 and probation_rows(10000) == 750
    assert scaled_sigmoid(3.5) == -1.0


def test_detection_at_the_left_edge_earns_the_full_reward():
    f = file_with({40: 1.0})
    assert raw_at_threshold([f], "standard", 0.5) == pytest.approx(1.0)
    result = score_corpus([f], "standard")
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)
    assert result.score == pytest.approx(100.0)


def test_late_detection_earns_less():
    f = file_with({49: 1.0})
    late = 2 / (1 + math.exp(0.5)) * -1 + 1  # 2*sigmoid(0.5) - 1
    expected = late / MAX_TP
    assert expected == pytest.approx(0.248242, abs=1e-6)
    assert raw_at_threshold([f], "standard", 0.5) == pytest.approx(expected)
    assert score_corpus([f], "standard").score == pytest.approx(100 * (expected + 1) / 2)


def test_only_the_earliest_detection_in_a_window_counts():
    f = file_with({45: 0.9, 41: 0.8, 49: 1.0})
    assert raw_at_threshold([f], "standard", 0.7) == pytest.approx(
        scaled_sigmoid(-(49 - 41 + 1) / 10) / MAX_TP
    )


def test_detection_just_after_the_window_is_a_cheap_false_positive():
    f = file_with({50: 1.0})
    fp = (2 / (1 + math.exp(5 * (1 / 9))) - 1) * 0.11
    assert fp == pytest.approx(-0.029794, abs=1e-6)
    assert raw_at_threshold([f], "standard", 0.5) == pytest.approx(fp - 1.0)
    # Not worth it: the best threshold detects nothing and the score is the null detector's.
    assert score_corpus([f], "standard").score == pytest.approx(0.0)


def test_false_positive_far_from_any_window_costs_the_full_fp_weight():
    far = file_with({90: 1.0, 40: 1.0})  # 41 rows past a width-10 window: > 3 widths
    before = file_with({20: 1.0, 40: 1.0})  # before any window
    for f in (far, before):
        assert raw_at_threshold([f], "standard", 0.5) == pytest.approx(1.0 - 0.11)
        assert raw_at_threshold([f], "reward_low_FP_rate", 0.5) == pytest.approx(1.0 - 0.22)


def test_missed_window_costs_fn_weight():
    f = file_with({})
    assert raw_at_threshold([f], "standard", 0.5) == pytest.approx(-1.0)
    assert raw_at_threshold([f], "reward_low_FN_rate", 0.5) == pytest.approx(-2.0)


def test_probationary_period_is_not_scored():
    f = file_with({10: 1.0, 40: 1.0})  # row 10 < 15: ignored, not a false positive
    assert raw_at_threshold([f], "standard", 0.5) == pytest.approx(1.0)


def test_threshold_sweep_finds_the_best_threshold_over_the_corpus():
    a = file_with({40: 0.9, 80: 0.95, 90: 0.5}, name="a")
    b = file_with({45: 0.6, 95: 0.7}, name="b")
    result = score_corpus([a, b], "standard")
    candidates = sorted({0.95, 0.9, 0.7, 0.6, 0.5}, reverse=True)
    best = max(raw_at_threshold([a, b], "standard", t) for t in candidates)
    assert result.raw == pytest.approx(best)
    assert result.threshold == 0.6  # takes b's late TP at the price of two FPs
    assert (result.tp, result.fp) == (2, 2)


def test_normalisation_null_zero_perfect_hundred():
    windows = ((30, 39), (60, 69))
    perfect = file_with({30: 1.0, 60: 1.0}, windows=windows)
    null = file_with({}, windows=windows)
    half = file_with({30: 1.0}, windows=windows)
    assert score_corpus([perfect], "standard").score == pytest.approx(100.0)
    assert score_corpus([null], "standard").score == pytest.approx(0.0)
    assert score_corpus([half], "standard").score == pytest.approx(50.0)
    result = score_corpus([half], "reward_low_FN_rate")
    assert (result.null, result.perfect) == (-4.0, 2.0)
    assert result.score == pytest.approx(100 * (1 - 2 + 4) / 6)


def test_each_category_is_scored_at_the_corpus_threshold_from_its_own_totals():
    """Issue 32: per-category scores. Category A: its window found at the left edge (100) and
    one far false positive; B: its window missed (0); C: no window, one false detection."""
    a = file_with({40: 1.0, 90: 1.0}, name="A/a.csv")
    b = file_with({}, name="B/b.csv")
    c = file_with({70: 1.0}, windows=(), name="C/c.csv")
    got = category_scores([a, b, c], "standard", 0.5)
    assert got["A"][0] == pytest.approx(100 * (1.0 - 0.11 + 1) / 2) and got["A"][1] == 1
    assert got["B"] == (pytest.approx(0.0), 0)
    assert got["C"] == (None, 1)


def test_sweep_equals_direct_definition_on_random_scores():
    rng = np.random.default_rng(3)
    files = [
        file_with(
            {int(r): float(rng.random()) for r in rng.integers(0, 100, 30)},
            windows=((20, 29), (70, 79)),
            name=str(k),
        )
        for k in range(4)
    ]
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        result = score_corpus(files, profile)
        thresholds = np.unique(np.concatenate([f.scores for f in files]))
        direct = max(raw_at_threshold(files, profile, t) for t in thresholds)
        assert result.raw == pytest.approx(max(direct, result.null))


def test_benchmark_writes_one_score_per_row_and_prints_three_profiles(tmp_path):
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    data = tmp_path / "nab" / "data" / "demo"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    windows = {}
    for name in ("a.csv", "b.csv"):
        stamps = np.datetime64("2026-01-01T00:00") + np.arange(600).astype("timedelta64[m]")
        values = rng.normal(10, 1, 600)
        values[450] = 40
        with open(data / name, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value"])
            for t, v in zip(stamps, values, strict=True):
                writer.writerow([str(t).replace("T", " ") + ":00", f"{v:.3f}"])
        windows[f"demo/{name}"] = [
            [
                str(stamps[440]).replace("T", " ") + ":00.000000",
                str(stamps[470]).replace("T", " ") + ":00.000000",
            ]
        ]
    (tmp_path / "nab" / "labels").mkdir()
    (tmp_path / "nab" / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    out = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "nab.py"),
            "--nab-dir",
            str(tmp_path / "nab"),
            "--scores-out",
            str(tmp_path / "out"),
            "--detector",
            "rcf",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert all(p in out for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"))
    with open(tmp_path / "out" / "demo" / "a.csv") as f:
        rows = list(csv.DictReader(f))
    with open(data / "a.csv") as f:
        source = list(csv.DictReader(f))
    assert [r["timestamp"] for r in rows] == [r["timestamp"] for r in source]
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in rows)


def test_published_windows_are_rebuilt_from_the_label_runs():
    """benchmarks/nab_corpus.py: each run of rows labelled 1 is one window, first to last row,
    in NAB's timestamp format; a run that reaches the file's end is closed there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "nab_corpus", Path(__file__).resolve().parent.parent / "benchmarks" / "nab_corpus.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    labels = "0110001100011"
    rows = [{"timestamp": f"2014-01-01 00:{i:02d}:00", "label": c} for i, c in enumerate(labels)]
    assert module.windows_of(rows) == [
        ["2014-01-01 00:01:00.000000", "2014-01-01 00:02:00.000000"],
        ["2014-01-01 00:06:00.000000", "2014-01-01 00:07:00.000000"],
        ["2014-01-01 00:11:00.000000", "2014-01-01 00:12:00.000000"],
    ]
