"""A device's sensors judged together (issue 32, item 4): one detector per device, over the
vector of its sensors' readings at each moment, which flags a moment whose combination is
unlike any normal one although each value is inside its own normal range (traction current
with the wheels still; brake-pipe pressure falling while the train accelerates), and names
the sensors that make it so.

How: each sensor's value is predicted from the others: the moments of the device's recent
normal history (a ring of the last RING unflagged moments: a day of minutes, parked,
accelerating, cruising and braking all in it) nearest to this one in the other sensors (each
on its own scale: an exponentially weighted level and mean absolute deviation over about a
week) give their mean value of that sensor. How far the reading is from that prediction, in
units of how far that sensor's readings usually are from theirs, is the sensor's z. A moment
is flagged when a sensor's z reaches Z_FLAG, and attributed to the sensors whose z reaches
Z_NAME: the ones that do not fit what the others say.

The first LEARN moments are all learnt (a device must have been seen in each of its regimes
before its combinations can be judged); after that a flagged moment teaches nothing (neither
the scales, the prediction errors nor the ring), so a fault that lasts is not learnt as
normal while it is being reported. Deterministic, causal (a moment is scored before it is
learnt), the whole state in arrays (about 58 KB for five sensors): restored from `to_bytes`,
a detector continues exactly, and scores do not depend on how the moments are cut into
batches.

In the stream (`DeviceMoments`, anomaly/joint_spark.py): a device's readings arrive one sensor at
a time, maybe in different micro-batches, so they are gathered into moments (`moment_seconds`
of event time; a sensor's value in a moment is the mean of its readings there), and a moment is
judged once the device's own clock (its newest event time) is `hold_seconds` past the moment's
end. A sensor with no reading in it carries its last value forward; a moment before some
sensor's first reading is skipped. Moments are judged in order, each once. Given the readings
in the same order, the moments judged and their scores do not depend on how the readings are
cut into batches, as long as no reading comes after its moment was judged (such a late reading
is counted and dropped).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sensorpipe.anomaly.rcf import pack_arrays, unpack_arrays

RING = 1440  # normal moments remembered: a day at one reading a minute
K = 5  # neighbours whose mean predicts a sensor
ALPHA = 1 / (7 * RING)  # weight of a new moment in the scales: about a week
LEARN = RING  # a day of moments learnt, whatever they are, before anything is flagged
Z_FLAG = 8.0  # a sensor this many usual errors from its prediction flags the moment
Z_NAME = 4.0  # and the flag names every sensor at least this far from its prediction


@nb.njit(cache=True)
def _update(x, out_score, out_flag, out_z, scale, error, ring, state):
    # scale: (2, d) level and mean absolute deviation of each sensor's learnt values; error:
    # (d,) mean absolute error of each sensor's prediction; ring: (RING, d) normal moments;
    # state: [seen, ring_used, ring_head].
    n, d = x.shape
    inverse = np.empty(d)
    best = np.empty(K)
    best_row = np.empty(K, dtype=np.int64)
    distance = np.empty(ring.shape[0])
    residual = np.empty(d)
    for i in range(n):
        seen = int(state[0])
        used = int(state[1])
        for j in range(d):
            inverse[j] = 1.0 / max(1.2533 * scale[1, j], 1e-9 * abs(scale[0, j]), 1e-12)
        for r in range(used):  # the squared scaled distance over all sensors
            total = 0.0
            for j in range(d):
                diff = (x[i, j] - ring[r, j]) * inverse[j]
                total += diff * diff
            distance[r] = total
        top = 0.0
        for j in range(d):
            residual[j] = 0.0
            out_z[i, j] = 0.0
            if used < K:
                continue
            for k in range(K):
                best[k] = np.inf
                best_row[k] = -1
            for r in range(used):  # nearest in the other sensors: drop sensor j's term
                diff = (x[i, j] - ring[r, j]) * inverse[j]
                other = distance[r] - diff * diff
                if other < best[K - 1]:
                    k = K - 1
                    while k > 0 and best[k - 1] > other:
                        best[k] = best[k - 1]
                        best_row[k] = best_row[k - 1]
                        k -= 1
                    best[k] = other
                    best_row[k] = r
            predicted = 0.0
            for k in range(K):
                predicted += ring[best_row[k], j]
            residual[j] = x[i, j] - predicted / K
            if seen > K:
                z = abs(residual[j]) / max(1.2533 * error[j], 1e-9 * abs(scale[0, j]), 1e-12)
                out_z[i, j] = z
                top = max(top, z)
        flagged = seen >= LEARN and top >= Z_FLAG
        out_score[i] = top
        out_flag[i] = 1.0 if flagged else 0.0
        if flagged:
            state[0] = seen + 1
            continue
        # Learn the moment: scales and prediction errors (the first evenly, later weighted),
        # and the ring of normal moments.
        learned = seen + 1
        alpha = max(1.0 / learned, ALPHA)
        for j in range(d):
            if learned > 1:
                scale[1, j] += alpha * (abs(x[i, j] - scale[0, j]) - scale[1, j])
            scale[0, j] += alpha * (x[i, j] - scale[0, j])
            if used >= K:
                error[j] += max(1.0 / max(learned - K, 1), ALPHA) * (abs(residual[j]) - error[j])
        head = int(state[2])
        for j in range(d):
            ring[head, j] = x[i, j]
        state[2] = (head + 1) % ring.shape[0]
        state[1] = min(used + 1, ring.shape[0])
        state[0] = learned


class JointDetector:
    """One device's sensors together; `update(matrix)` takes one row per moment, one column
    per sensor (the device's sensors in a fixed order), and returns for each moment its score
    (the largest sensor z), whether it is flagged, and each sensor's z."""

    name = "joint"

    _ARRAYS = ("scale", "error", "ring", "state")

    def __init__(self, sensors: int) -> None:
        self.scale = np.zeros((2, sensors))
        self.error = np.zeros(sensors)
        self.ring = np.zeros((RING, sensors))
        self.state = np.zeros(3)

    def update(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(matrix, dtype=np.float64)
        score, flagged = np.empty(len(x)), np.empty(len(x))
        z = np.empty_like(x)
        _update(x, score, flagged, z, self.scale, self.error, self.ring, self.state)
        return score, flagged.astype(bool), z

    def to_bytes(self) -> bytes:
        return pack_arrays({name: getattr(self, name) for name in self._ARRAYS})

    @classmethod
    def from_bytes(cls, data: bytes) -> JointDetector:
        arrays = unpack_arrays(data)
        detector = cls(arrays["scale"].shape[1])
        for name in cls._ARRAYS:
            setattr(detector, name, arrays[name].copy())
        return detector


def attributed(z: np.ndarray, sensors: list[str]) -> list[str]:
    """The sensors a flagged moment is attributed to: those at least Z_NAME usual errors from
    what the other sensors predict, furthest first."""
    order = np.argsort(-z, kind="stable")
    return [sensors[j] for j in order if z[j] >= Z_NAME]


class DeviceMoments:
    """One device's joint detector in a stream: gathers readings into moments, judges each
    moment once (see the module docstring), and keeps its whole state in `to_bytes`."""

    def __init__(self, sensors: list[str], moment_seconds: int, hold_seconds: int) -> None:
        self.sensors = list(sensors)
        self.index = {name: j for j, name in enumerate(self.sensors)}
        self.moment_seconds, self.hold_seconds = moment_seconds, hold_seconds
        self.detector = JointDetector(len(sensors))
        # moment number -> each sensor's sum of readings (row 0) and their count (row 1)
        self.pending: dict[int, np.ndarray] = {}
        self.last = np.full(len(sensors), np.nan)  # each sensor's latest judged value
        self.clock = -np.inf  # the device's newest event time (seconds)
        self.next_moment: int | None = None  # moments before it are judged
        self.late = 0  # readings dropped: their moment was already judged

    def add(self, seconds: np.ndarray, sensors: np.ndarray,
            values: np.ndarray) -> list[tuple[int, np.ndarray, list[str]]]:  # fmt: skip
        """Readings in event-time order (event seconds, sensor names, values); the moments
        judged as a result: (moment number, each sensor's value, the sensors carried forward).

        In order, no reading of the batch belongs to a moment judged earlier in the batch (a
        moment is judged only once the clock is a hold past its end), so the batch is summed
        at once, each reading added in its turn (the same sums, bit for bit, as one by one),
        and then the moments due by the batch's newest reading are judged."""
        seconds = np.asarray(seconds, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if np.any(np.diff(seconds) < 0):
            raise ValueError("readings must come in event-time order")
        names, which = np.unique(np.asarray(sensors, dtype=object), return_inverse=True)
        column = np.array([self.index.get(name, -1) for name in names], dtype=np.int64)[which]
        moments = np.floor_divide(seconds, self.moment_seconds).astype(np.int64)
        keep = (column >= 0) & np.isfinite(values)
        if self.next_moment is not None:
            late = keep & (moments < self.next_moment)
            self.late += int(late.sum())
            keep &= ~late
        if not keep.any():
            return []
        moments, column, values = moments[keep], column[keep], values[keep]
        numbers, row = np.unique(moments, return_inverse=True)
        sums = np.stack([self.pending.get(int(m), np.zeros((2, len(self.sensors))))
                         for m in numbers])  # fmt: skip
        np.add.at(sums, (row, 0, column), values)  # in reading order, as one by one
        np.add.at(sums, (row, 1, column), 1.0)
        for m, moment_sums in zip(numbers, sums, strict=True):
            self.pending[int(m)] = moment_sums
        self.clock = max(self.clock, float(seconds[keep].max()))
        return self._judge_due()

    def _judge_due(self) -> list[tuple[int, np.ndarray, list[str]]]:
        out = []
        while self.pending:
            moment = min(self.pending)
            if self.clock < (moment + 1) * self.moment_seconds + self.hold_seconds:
                break
            sums, counts = self.pending.pop(moment)
            self.next_moment = moment + 1
            missing = counts == 0
            carried = [self.sensors[j] for j in np.flatnonzero(missing)]
            row = np.where(missing, self.last, sums / np.maximum(counts, 1.0))
            self.last = row
            if not np.isnan(row).any():  # a sensor never seen yet: nothing to judge
                out.append((moment, row, carried))
        return out

    def judge(self, moments: list[tuple[int, np.ndarray, list[str]]]) -> list[dict]:
        """Score judged moments in order: each one's score, flag and attributed sensors."""
        if not moments:
            return []
        score, flagged, z = self.detector.update(np.vstack([row for _, row, _ in moments]))
        return [
            {
                "moment": moment,
                "joint_score": float(score[i]),
                "is_joint_anomaly": bool(flagged[i]),
                "sensors": ",".join(attributed(z[i], self.sensors)) if flagged[i] else "",
                "carried": ",".join(carried),
            }
            for i, (moment, _, carried) in enumerate(moments)
        ]

    def to_bytes(self) -> bytes:
        moments = sorted(self.pending)
        pending = (np.stack([self.pending[m] for m in moments]) if moments
                   else np.zeros((0, 2, len(self.sensors))))  # fmt: skip
        head = np.array([self.clock, -1 if self.next_moment is None else self.next_moment,
                         self.late], dtype=np.float64)  # fmt: skip
        return pack_arrays({
            **{f"detector.{name}": getattr(self.detector, name) for name in JointDetector._ARRAYS},
            "pending_moments": np.array(moments, dtype=np.int64), "pending": pending,
            "last": self.last, "head": head,
        })  # fmt: skip

    def restore(self, data: bytes) -> None:
        """Continue from `to_bytes`'s state (same sensors and moment settings)."""
        arrays = unpack_arrays(data)
        for name in JointDetector._ARRAYS:
            setattr(self.detector, name, arrays[f"detector.{name}"].copy())
        self.pending = {int(m): arrays["pending"][i].copy()
                        for i, m in enumerate(arrays["pending_moments"])}  # fmt: skip
        self.last = arrays["last"].copy()
        clock, next_moment, late = arrays["head"]
        self.clock, self.late = float(clock), int(late)
        self.next_moment = None if next_moment < 0 else int(next_moment)
