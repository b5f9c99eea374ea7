"""The detectors the job and the benchmarks can use, by name.

Every detector scores a series in order, one value at a time, causally: `update(values)`
returns (raw, score in [0, 1]) for each value, computed before the value is learnt, and
`to_bytes()` / `restore(name, data)` carry its whole state across micro-batches.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sensorpipe.anomaly.likelihood import LikelihoodDetector
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

    def __init__(self, forest: RandomCutForest | None = None, seed: int = 42) -> None:
        self.forest = forest or RandomCutForest(
            trees=100, sample_size=256, shingle_size=1, time_decay=100000.0, seed=seed
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


DETECTORS = {"rcf": RcfDetector, "likelihood": LikelihoodDetector}
DEFAULT_DETECTOR = "likelihood"


def make_detector(name: str | None = None, seed: int = 42) -> Detector:
    name = name or DEFAULT_DETECTOR
    if name not in DETECTORS:
        raise ValueError(f"detector {name!r}: expected one of {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name](seed=seed)


def restore_detector(name: str, data: bytes) -> Detector:
    return DETECTORS[name].from_bytes(data)


def attach_detector(name: str, config: tuple, arrays: dict[str, np.ndarray]) -> Detector:
    return DETECTORS[name].attach(config, arrays)
