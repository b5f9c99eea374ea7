"""Streaming detector state that costs what a micro-batch scores, not what a key has seen.

A detector is about 150 KB in memory and 60 KB stored (the default, contextual: 6 trees of 128
points; likelihood's 40 trees of 256 are 2 MB and 0.5 MB). Saving and restoring the larger one
every micro-batch cost about 11 ms per key; so instead:

- **Resident detectors.** Each executor keeps its keys' detectors in shared memory
  (anomaly/resident.py). A detector is used only if it is exactly the state the checkpoint
  holds: same number of points and the same digest (a hash chain over every value the key has
  scored, in order). Anything else (a batch was retried, the query restarted on an older
  checkpoint, the key moved to another executor) is a miss.
- **A snapshot now and then, a log of the values since.** The state store keeps, per key, a
  snapshot of the detector taken every `snapshot_every` points (staggered across keys), and the
  values scored since, as per-batch chunks shared by the keys of a bucket. A miss restores the
  snapshot and replays the chunks: the detector is deterministic, so the replay is exact.
- **Per-bucket bookkeeping.** Keys are grouped in buckets (a hash of the key): one state read
  and one write per bucket per batch carry every key's points, digest, snapshot position and
  incident, instead of several state-store round trips per key.

Checkpoint bytes per micro-batch are then the bucket records (~100 bytes a key) and the chunk
(8 bytes a value) plus the snapshots due, one per key every `snapshot_every` points.
"""

from __future__ import annotations

import hashlib
import pickle
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from sensorpipe.anomaly.incidents import IncidentState

Key = tuple[str, str]  # (device_id, sensor)


def chain_digest(previous: bytes, values: np.ndarray) -> bytes:
    """The digest of a key's history after `values` (16 bytes; b"" before the first)."""
    block = np.ascontiguousarray(values, dtype=np.float64).tobytes()
    return hashlib.blake2b(previous + block, digest_size=16).digest()


def key_phase(key: Key, every: int) -> int:
    """Where in its `every`-point cycle a key takes its snapshots: spread over the keys, so a
    batch does not snapshot every key at once."""
    digest = hashlib.blake2b("\x00".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % every


@dataclass
class KeyState:
    """What the state store knows of one key."""

    detector: str
    points: int = 0
    digest: bytes = b""
    # The snapshot: points and digest it holds, the last chunk it includes (-1: none).
    snapshot_points: int = 0
    snapshot_digest: bytes = b""
    snapshot_chunk: int = -1
    # The latest arrival time (ms) of its readings: the clock of its time to live.
    last_seen_ms: int = 0
    # Incident state (anomaly/incidents.py)
    open: bool = False
    number: int = 0
    severity: int = 0
    last_anomaly: datetime | None = None
    # The expected range's statistics (IncidentState.learn); records pickled before they
    # existed read the class defaults.
    level: float = 0.0
    deviation: float = 0.0
    learned: int = 0

    @property
    def incident(self) -> IncidentState:
        return IncidentState(self.open, self.number, self.severity, self.last_anomaly,
                             self.level, self.deviation, self.learned)  # fmt: skip

    def keep_incident(self, incident: IncidentState) -> None:
        self.open, self.number = incident.open, incident.number
        self.severity, self.last_anomaly = incident.severity, incident.last_anomaly
        self.level, self.deviation = incident.level, incident.deviation
        self.learned = incident.learned

    def snapshot_due(self, points_before: int, every: int, phase: int) -> bool:
        """A snapshot when the key's points cross its next multiple of `every` (shifted by its
        phase)."""
        return (self.points + phase) // every > (points_before + phase) // every


@dataclass
class BucketState:
    """The record of one bucket: its keys, and the chunks of values not yet in a snapshot."""

    keys: dict[Key, KeyState] = field(default_factory=dict)
    chunks: list[int] = field(default_factory=list)  # ascending
    next_chunk: int = 0

    def new_key(self, detector: str) -> KeyState:
        """A key starting in the batch of chunk `next_chunk`: no earlier chunk is its (one may
        hold the values of an earlier life of the key, forgotten since)."""
        return KeyState(detector, snapshot_chunk=self.next_chunk - 1)

    def to_bytes(self) -> bytes:
        return zlib.compress(pickle.dumps(self, protocol=5), 1)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> BucketState:
        return cls() if not data else pickle.loads(zlib.decompress(data))

    def needed_chunks(self) -> list[int]:
        """Chunks some key has not snapshotted past (a chunk every key's snapshot includes
        can go)."""
        if not self.keys:
            return []
        oldest = min(k.snapshot_chunk for k in self.keys.values())
        return [c for c in self.chunks if c > oldest]


def pack_chunk(entries: list[tuple[Key, np.ndarray]]) -> bytes:
    """A batch's values of some keys of a bucket, each key's in the order it scored them."""
    keys = [k for k, _ in entries]
    counts = np.array([len(v) for _, v in entries], dtype=np.int32)
    values = np.concatenate([v for _, v in entries]) if entries else np.empty(0)
    return pickle.dumps((keys, counts, values.astype(np.float64)), protocol=5)


def unpack_chunk(data: bytes) -> dict[Key, np.ndarray]:
    keys, counts, values = pickle.loads(data)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {tuple(k): values[bounds[i] : bounds[i + 1]] for i, k in enumerate(keys)}


def detector_nbytes(detector: Any) -> int:
    """Memory a detector's arrays hold (what the resident set is bounded by)."""
    total = 0
    for obj in (detector, getattr(detector, "forest", None)):
        if obj is not None:
            total += sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))
    return total


class StateMismatch(RuntimeError):
    """A key's snapshot and chunks do not replay to the points and digest its record holds."""
