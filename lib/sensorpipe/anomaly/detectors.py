"""The detectors the job and the benchmarks can use, by name.

Every detector scores a series in order, one value at a time, causally: `update(values)`
returns (raw, score in [0, 1]) for each value, computed before the value is learnt, and
`to_bytes()` / `restore(name, data)` carry its whole state across micro-batches.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sensorpipe.anomaly.likelihood import CompactDetector, ContextualDetector, LikelihoodDetector
from sensorpipe.anomaly.rcf import RandomCutForest


class Detector(Protocol):
    def update(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def to_bytes(self) -> bytes: ...

    # Its whole state as named arrays (what a shared-memory copy holds), and the parameters
    # that fix their shapes; `attach(config, arrays)` works on such arrays in place.
    def layout(self) -> dict[str, tuple[object, tuple[int, ...]]]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...

    @property
    def config(self) -> tuple: ...


class RcfDetector:
    """AWS's Random Cut Forest as Kinesis Data Analytics ran it on NAB: 100 trees, sample size
    256, time decay 100000, shingle 1, score divided by log2(256)."""

    name = "rcf"

    def __init__(self, forest: RandomCutForest | None = None, seed: int = 42,
                 trees: int = 100) -> None:  # fmt: skip
        self.forest = forest or RandomCutForest(
            trees=trees, sample_size=256, shingle_size=1, time_decay=100000.0, seed=seed
        )

    def update(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = self.forest.update(values)
        return raw, self.forest.score01(raw)

    def to_bytes(self) -> bytes:
        return self.forest.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> RcfDetector:
        return cls(RandomCutForest.from_bytes(data))

    def layout(self) -> dict[str, tuple[object, tuple[int, ...]]]:
        return {f"forest.{k}": v for k, v in self.forest.layout().items()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"forest.{k}": getattr(self.forest, k) for k in self.forest.layout()}

    @property
    def config(self) -> tuple:
        return self.forest.params

    @classmethod
    def attach(cls, config: tuple, arrays: dict[str, np.ndarray]) -> RcfDetector:
        forest = RandomCutForest.attach(config, {k[len("forest.") :]: v for k, v in arrays.items()})
        return cls(forest)


DETECTORS = {
    "rcf": RcfDetector,
    "likelihood": LikelihoodDetector,
    "compact": CompactDetector,
    "contextual": ContextualDetector,
}
DEFAULT_DETECTOR = "contextual"


_TREES = ";trees="


def detector_spec(name: str, trees: int | None = None) -> str:
    """A detector as a key's state records it: its name, and its forest's trees where they
    are not the detector's own ("likelihood", "likelihood;trees=10"). A key keeps the detector
    it started with, so a snapshot-less key replays into the same forest after a change."""
    return name if trees is None else f"{name}{_TREES}{trees}"


def _parsed_spec(spec: str) -> tuple[str, dict[str, int]]:
    name, _, trees = spec.partition(_TREES)
    if name not in DETECTORS:
        raise ValueError(f"detector {name!r}: expected one of {', '.join(sorted(DETECTORS))}")
    return name, ({"trees": int(trees)} if trees else {})


def make_detector(spec: str | None = None, seed: int = 42) -> Detector:
    name, options = _parsed_spec(spec or DEFAULT_DETECTOR)
    return DETECTORS[name](seed=seed, **options)


def restore_detector(spec: str, data: bytes) -> Detector:
    return DETECTORS[_parsed_spec(spec)[0]].from_bytes(data)  # the snapshot has its trees


def attach_detector(spec: str, config: tuple, arrays: dict[str, np.ndarray]) -> Detector:
    return DETECTORS[_parsed_spec(spec)[0]].attach(config, arrays)
