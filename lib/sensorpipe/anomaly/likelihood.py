"""The default detector: a Random Cut Forest over shingles of recent values, whose raw scores go
through an anomaly likelihood (Ahmad, Lavin, Purdy, Agha 2017), plus a range check and a
stuck-sensor check.

Why: a raw anomaly score is noisy, and how unusual a score is depends on the series: a score
that is routine for a jittery CPU metric is alarming for a smooth bearing temperature. The
likelihood learns each series' distribution of (10-point averaged) raw scores, re-estimated
every 100 points over a long history, and reports how far in the tail the current average is;
a run of very unlikely points reports once, then stays quiet (the published filter). A value
beyond the range seen so far by more than 5% of that range is an anomaly outright.
Parameters are the published defaults (learning 288 points, 100 estimation samples, averaging
window 10, history 8640, tolerance 5%), not tuned to any benchmark.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from sensorpipe.anomaly.rcf import RandomCutForest, pack_arrays, unpack_arrays

LEARNING_PERIOD = 288
ESTIMATION_SAMPLES = 100
REESTIMATION_PERIOD = 100
AVERAGING_WINDOW = 10
HISTORIC_WINDOW = 8640
SPATIAL_TOLERANCE = 0.05
# A stuck sensor: this many identical readings in a row, at a value the series has never held
# that long before (a parked train's 0 km/h is a run it knows), reported once per run.
STUCK_RUN = 10
RUN_VALUES = 16  # values remembered for having held that long
_RED = 1.0 - 0.99999
_YELLOW = 1.0 - 0.999


@nb.njit(cache=True)
def _tail_probability(x: float, mean: float, stdev: float) -> float:
    if x < mean:
        x = 2.0 * mean - x
    z = (x - mean) / stdev
    return 0.5 * math.erfc(z / 1.4142)


@nb.njit(cache=True)
def _estimate(scores, values, count, head, skip, out_params):
    """Mean/stdev of the moving averages of the historic raw scores (after `skip` records);
    the null distribution if the metric itself barely moves."""
    n = min(count, scores.shape[0])
    start = (head - n) % scores.shape[0]
    window = np.zeros(AVERAGING_WINDOW)
    total = 0.0
    s1 = 0.0
    s2 = 0.0
    m1 = 0.0
    m2 = 0.0
    used = 0
    for j in range(n):
        idx = (start + j) % scores.shape[0]
        slot = j % AVERAGING_WINDOW
        if j >= AVERAGING_WINDOW:
            total -= window[slot]
        window[slot] = scores[idx]
        total += scores[idx]
        avg = total / min(j + 1, AVERAGING_WINDOW)
        if j >= skip:
            used += 1
            s1 += avg
            s2 += avg * avg
            m1 += values[idx]
            m2 += values[idx] * values[idx]
    _distribution(used, s1, s2, m1, m2, out_params)


@nb.njit(cache=True)
def _distribution(used, s1, s2, m1, m2, out_params):
    """Mean and stdev of `used` averaged scores from their sum and sum of squares (and the
    metric's); the null distribution if there are none or the metric itself barely moves."""
    if used == 0:
        out_params[0], out_params[1] = 0.5, 1e3
        return
    mean = s1 / used
    var = max(s2 / used - mean * mean, 0.0)
    metric_mean = m1 / used
    metric_var = max(m2 / used - metric_mean * metric_mean, 0.0)
    if metric_var < 1.5e-5:
        out_params[0], out_params[1] = 0.5, 1e3
        return
    mean = max(mean, 0.03)
    var = max(var, 0.0003)
    out_params[0], out_params[1] = mean, math.sqrt(var)


@nb.njit(cache=True)
def _moving_average(x: float, iteration: int, sums, at: int, window) -> float:
    """The mean of the last len(window) inputs, this one (x) included; sums[at] keeps their
    sum."""
    size = window.shape[0]
    slot = iteration % size
    if iteration >= size:
        sums[at] -= window[slot]
    window[slot] = x
    sums[at] += x
    return sums[at] / min(iteration + 1, size)


@nb.njit(cache=True)
def _estimate_due(iteration: int, state) -> bool:
    """Whether the distribution is (re-)estimated before this point: once learning is over,
    the first time and every REESTIMATION_PERIOD points."""
    return iteration > LEARNING_PERIOD + ESTIMATION_SAMPLES and (
        state[5] == 0.0 or iteration % REESTIMATION_PERIOD == 0
    )


@nb.njit(cache=True)
def _point_score(average: float, value: float, iteration: int, state, params,
                 run_values) -> float:  # fmt: skip
    """A point's score: its likelihood's log score, then the range and stuck checks."""
    log_score = _log_score(_likelihood(average, iteration, params, state, 4))
    return _range_and_stuck(value, iteration, log_score, state, run_values)


@nb.njit(cache=True)
def _log_score(likelihood: float) -> float:
    """A likelihood on a log scale: 0.5 at 1 - 1e-5, 0.3 at 1 - 1e-3."""
    return math.log(1.0000000001 - likelihood) / -23.02585084720009


@nb.njit(cache=True)
def _likelihood(average: float, iteration: int, params, previous, at: int) -> float:
    """The likelihood of an averaged score, once the distribution is estimated (params: mean,
    stdev); 0.5 while learning. A run of very unlikely points reports once: previous[at]
    keeps the last point's tail probability."""
    if iteration <= LEARNING_PERIOD + ESTIMATION_SAMPLES:
        return 0.5
    p = _tail_probability(average, params[0], params[1])
    filtered = p
    if p <= _RED and previous[at] <= _RED:
        filtered = _YELLOW
    previous[at] = p
    return 1.0 - filtered


@nb.njit(cache=True)
def _range_and_stuck(value: float, iteration: int, log_score: float, state, run_values) -> float:
    """The point's score after the range check (beyond what has been seen so far by more than
    SPATIAL_TOLERANCE of that range) and the stuck-sensor check, both of which give 1.0; the
    state's min, max and run of repeats moved past the point."""
    if state[8] == 1.0 and state[7] != state[6]:
        tolerance = (state[7] - state[6]) * SPATIAL_TOLERANCE
        if value > state[7] + tolerance or value < state[6] - tolerance:
            log_score = 1.0
    if state[8] == 0.0:
        state[6] = value
        state[7] = value
        state[8] = 1.0
    else:
        state[6] = min(state[6], value)
        state[7] = max(state[7], value)
    # Stuck sensor: a run of exact repeats at a value never held that long before.
    if iteration > 0 and value == state[9]:
        state[10] += 1.0
    else:
        state[10] = 1.0
    if state[10] == STUCK_RUN:
        known = int(state[11])
        seen = False
        for k in range(min(known, RUN_VALUES)):
            if run_values[k] == value:
                seen = True
        if not seen:
            if iteration > LEARNING_PERIOD + ESTIMATION_SAMPLES:
                log_score = 1.0
            run_values[known % RUN_VALUES] = value
            state[11] = known + 1
    state[9] = value
    return log_score


@nb.njit(cache=True)
def _likelihoods(raw, values, out, scores, hist_values, state, avg_window, params, run_values):
    # state: [iteration, head, count, avg_total, prev_likelihood, dist_ready, min, max,
    #         has_minmax, previous value, current run of repeats, repeats so far]
    for i in range(raw.shape[0]):
        iteration = int(state[0])
        value = values[i]
        average = _moving_average(raw[i], iteration, state, 3, avg_window)
        if _estimate_due(iteration, state):
            shifted_out = max(0, iteration - HISTORIC_WINDOW)
            skip = min(iteration, max(0, LEARNING_PERIOD - shifted_out))
            _estimate(scores, hist_values, int(state[2]), int(state[1]), skip, params)
            state[5] = 1.0
        out[i] = _point_score(average, value, iteration, state, params, run_values)
        head = int(state[1])
        scores[head] = raw[i]
        hist_values[head] = value
        state[1] = (head + 1) % scores.shape[0]
        state[2] = min(state[2] + 1, scores.shape[0])
        state[0] = iteration + 1


# The compact detector's history: instead of the last HISTORIC_WINDOW raw scores and values
# (138 KB a key), sums over blocks of REESTIMATION_PERIOD points (count, averaged score and
# its square, value and its square), enough for the estimate, which comes at block
# boundaries: the blocks hold the last HISTORIC_WINDOW points, rounded to whole blocks.
BLOCKS = -(-HISTORIC_WINDOW // REESTIMATION_PERIOD) + 1
# A small forest scores with more noise than one of 40; averaging twice as many points before
# the likelihood steadies it (over three seeds on ../shared/nab: 62.7 standard with 12 trees
# of 64 points, against 61.8 with the published 10).
COMPACT_AVERAGING_WINDOW = 20


# After a report (a score at REPORT_LEVEL, the job's default threshold, or above), the compact
# detector holds the likelihood's scores of the next HOLD_POINTS points at HELD_SCORE at most:
# the published filter's "a run of very unlikely points reports once" widened from a run to
# the stretch after it, so a fault's aftermath (the recovery, the level it settles at) does
# not report again. The range and stuck checks (CHECK_SCORE) are not held; they start a new
# hold. HELD_SCORE is what the published filter gives a run's later points (likelihood
# 0.999). NAB standard profile (../shared/nab, seeds 42 and 1 to 6): median 65.4 with the
# hold, 64.3 without.
REPORT_LEVEL = 0.5
HOLD_POINTS = 200
HELD_SCORE = math.log(1.0000000001 - (1.0 - _YELLOW)) / -23.02585084720009  # _log_score's
CHECK_SCORE = 0.99


@nb.njit(cache=True)
def _held(score: float, iteration: int, state) -> float:
    """The point's score after the hold; state[1] is 1 + the iteration of the last report
    (0: none yet)."""
    last = state[1]
    if last > 0.0 and iteration - (last - 1.0) <= HOLD_POINTS and score < CHECK_SCORE:
        return min(score, HELD_SCORE)
    if score >= REPORT_LEVEL:
        state[1] = iteration + 1.0
    return score


# The contextual detector (the default) judges each point in two more contexts than the
# compact one, each a channel with its own averaged input, its own distribution (two more
# pairs of columns in the block sums) and its own "reports once" filter; a point's score is
# the highest of its channels' log scores, before the range and stuck checks and the hold.
# - Sustained: the raw scores averaged over SUSTAINED_WINDOW points, three times the usual
#   window, so a change of regime (a series that starts to oscillate, or to wander, within
#   its range) is unlikely as a whole though no 20 points of it are.
# - Seasonal: how far the value is from the values one and two periods before (the nearer of
#   the two, so a past anomaly does not echo), in units of the range seen so far, averaged
#   over COMPACT_AVERAGING_WINDOW points. The period is the lag, SEASONAL_MIN_LAG to
#   SEASONAL_MAX_LAG points, at which the series differs least from itself (a running mean
#   of |x[t] - x[t - lag]| per lag, over about LAG_MEMORY points), re-chosen every
#   REESTIMATION_PERIOD points; it counts only if it is a minimum between the shortest and
#   the longest lag (a random walk differs least at the shortest) and under PERIOD_RATIO of
#   the mean over all lags, and the channel is off while there is none. So a day that does
#   not rise, or a holiday shaped like a Sunday, is an anomaly though every value of it is
#   in range (CAD OSE's and HTM's context, without the timestamps the job does not pass).
# The parameters are round values chosen before measuring, not tuned to NAB: on
# ../shared/nab (standard, seeds 42 and 1 to 6) the median is 72.2 with both channels, 66.8
# with the sustained channel alone, 65.4 without either (the compact detector); every
# variant tried (ratio 0.3 or 0.7, averaging 10 or 40, lags up to 350, memory 1,000 or 5,000;
# measured with the shortest lag 12, before the minimum had to lie between the lags) gave
# 69.9 to 72.0. The shortest lag was 12 at first: on the bundled train samples the channel
# then took a journey leg (19 to 33 readings, never the same twice) for a period, re-chose
# it at every estimate and raised 11 false alarms on bearing temperatures and vibration
# (8 in all before it, 19 with it). A calendar cycle is longer (a day of 30-minute readings
# is 48); from 40 on the samples give 9 and the NAB median is 72.2.
SUSTAINED_WINDOW = 60
SEASONAL_MIN_LAG = 40
SEASONAL_MAX_LAG = 400
LAG_MEMORY = 2000.0
PERIOD_RATIO = 0.5
# context: [sustained sum, sustained previous tail probability, period (0: none),
#           seasonal sum, seasonal previous tail probability]
CONTEXT_SLOTS = 5


@nb.njit(cache=True)
def _estimate_blocks(blocks, out_params, channel_params):
    """_estimate's mean and stdev from the block sums (the points after the learning period),
    and each further channel's from its pair of columns."""
    sums = blocks.sum(axis=0)
    _distribution(sums[0], sums[1], sums[2], sums[3], sums[4], out_params)
    for c in range(channel_params.shape[0]):
        _distribution(sums[0], sums[5 + 2 * c], sums[6 + 2 * c], sums[3], sums[4],
                      channel_params[c])  # fmt: skip


@nb.njit(cache=True)
def _period(lag_differences, longest: int) -> int:
    """The lag at which the series differs least from itself, if it is a clear minimum (under
    PERIOD_RATIO of the mean over the lags, and neither the shortest nor the longest lag
    looked at); else 0."""
    best = SEASONAL_MIN_LAG
    total = 0.0
    for lag in range(SEASONAL_MIN_LAG, longest + 1):
        total += lag_differences[lag]
        if lag_differences[lag] < lag_differences[best]:
            best = lag
    lags = longest - SEASONAL_MIN_LAG + 1
    if SEASONAL_MIN_LAG < best < longest and lag_differences[best] < PERIOD_RATIO * total / lags:
        return best
    return 0


@nb.njit(cache=True)
def _move_differences(value, recent, lag_differences, first, last, base, rate):
    """Each lag's running mean difference, lags first..last, the value `lag` back at
    recent[base - lag] (no wrap in this run, so the loop vectorises)."""
    for lag in range(first, last + 1):
        difference = abs(value - recent[base - lag])
        lag_differences[lag] += (difference - lag_differences[lag]) * rate


@nb.njit(cache=True)
def _seasonal_residual(value: float, iteration: int, state, context, recent,
                       lag_differences) -> float:  # fmt: skip
    """How far the value is from the same phase one and two periods before (the nearer), in
    units of the range so far; 0 without a period. Moves the lags' differences, the period
    (every REESTIMATION_PERIOD points) and the recent values past the point."""
    size = recent.shape[0]
    longest = min(lag_differences.shape[0] - 1, iteration)
    at = iteration % size  # the value `lag` points back is at `at - lag`, wrapped
    if iteration - longest + 1 >= LAG_MEMORY:  # the usual case: one rate, two plain runs
        _move_differences(value, recent, lag_differences, SEASONAL_MIN_LAG,
                          min(at, longest), at, 1.0 / LAG_MEMORY)  # fmt: skip
        _move_differences(value, recent, lag_differences, max(at + 1, SEASONAL_MIN_LAG),
                          longest, at + size, 1.0 / LAG_MEMORY)  # fmt: skip
    else:
        for lag in range(SEASONAL_MIN_LAG, longest + 1):
            difference = abs(value - recent[(iteration - lag) % size])
            rate = max(1.0 / (iteration - lag + 1), 1.0 / LAG_MEMORY)
            lag_differences[lag] += (difference - lag_differences[lag]) * rate
    if iteration % REESTIMATION_PERIOD == 0 and iteration >= 3 * SEASONAL_MIN_LAG:
        longest = min(lag_differences.shape[0] - 1, iteration // 3)
        context[2] = _period(lag_differences, longest)
    period = int(context[2])
    residual = 0.0
    if period > 0 and iteration >= 2 * period and state[7] > state[6]:
        nearer = min(abs(value - recent[(iteration - period) % size]),
                     abs(value - recent[(iteration - 2 * period) % size]))  # fmt: skip
        residual = nearer / (state[7] - state[6])
    recent[iteration % size] = value
    return residual


@nb.njit(cache=True)
def _block_likelihoods(raw, values, out, blocks, state, avg_window, params, run_values,
                       context, sustained_window, seasonal_window, recent, lag_differences,
                       channel_params):  # fmt: skip
    # state: as _likelihoods', but state[1] is the hold's (_held) and state[2] unused; the
    # averaging window is avg_window's. The compact detector passes empty context arrays;
    # the contextual one its channels' (CONTEXT_SLOTS, recent values, ...).
    contextual = context.shape[0] > 0
    for i in range(raw.shape[0]):
        iteration = int(state[0])
        value = values[i]
        average = _moving_average(raw[i], iteration, state, 3, avg_window)
        sustained = seasonal = 0.0
        if contextual:
            sustained = _moving_average(raw[i], iteration, context, 0, sustained_window)
            residual = _seasonal_residual(value, iteration, state, context, recent,
                                          lag_differences)  # fmt: skip
            seasonal = _moving_average(residual, iteration, context, 3, seasonal_window)
        block = (iteration // REESTIMATION_PERIOD) % BLOCKS
        if iteration % REESTIMATION_PERIOD == 0:
            blocks[block, :] = 0.0  # the oldest block makes room
        if _estimate_due(iteration, state):
            _estimate_blocks(blocks, params, channel_params)
            state[5] = 1.0
        log_score = _log_score(_likelihood(average, iteration, params, state, 4))
        if contextual:
            likelihood = _likelihood(sustained, iteration, channel_params[0], context, 1)
            log_score = max(log_score, _log_score(likelihood))
            if context[2] > 0.0:
                likelihood = _likelihood(seasonal, iteration, channel_params[1], context, 4)
                log_score = max(log_score, _log_score(likelihood))
        score = _range_and_stuck(value, iteration, log_score, state, run_values)
        out[i] = _held(score, iteration, state)
        if iteration >= LEARNING_PERIOD:
            blocks[block, 0] += 1.0
            blocks[block, 1] += average
            blocks[block, 2] += average * average
            blocks[block, 3] += value
            blocks[block, 4] += value * value
            if contextual:
                blocks[block, 5] += sustained
                blocks[block, 6] += sustained * sustained
                blocks[block, 7] += seasonal
                blocks[block, 8] += seasonal * seasonal
        state[0] = iteration + 1


class LikelihoodDetector:
    """RCF (40 trees, sample 256, shingle 4) -> anomaly likelihood -> log score; range check."""

    name = "likelihood"

    def __init__(self, forest: RandomCutForest | None = None, seed: int = 42,
                 trees: int = 40) -> None:  # fmt: skip
        self.forest = forest or RandomCutForest(
            trees=trees, sample_size=256, shingle_size=4, time_decay=100000.0, seed=seed
        )
        self.scores = np.zeros(HISTORIC_WINDOW)
        self.values = np.zeros(HISTORIC_WINDOW)
        self.state = np.zeros(12)
        self.avg_window = np.zeros(AVERAGING_WINDOW)
        self.params = np.array([0.5, 1e3])
        self.run_values = np.zeros(RUN_VALUES)

    def update(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.ascontiguousarray(values, dtype=np.float64)
        raw = self.forest.score01(self.forest.update(values))
        out = np.empty(len(values))
        self._likelihoods(raw, values, out)
        return raw, out

    def _likelihoods(self, raw: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
        """Each point's score into `out`, from its raw score and value (the state moves)."""
        _likelihoods(raw, values, out, self.scores, self.values, self.state, self.avg_window,
                     self.params, self.run_values)  # fmt: skip

    _OWN = ("scores", "values", "state", "avg_window", "params", "run_values")

    def layout(self) -> dict[str, tuple[object, tuple[int, ...]]]:
        """Every array of the state, the forest's under `forest.`: dtype and shape."""
        own = {name: (getattr(self, name).dtype, getattr(self, name).shape) for name in self._OWN}
        return {**{f"forest.{k}": v for k, v in self.forest.layout().items()}, **own}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"forest.{k}": getattr(self.forest, k) for k in self.forest.layout()}
        return {**out, **{name: getattr(self, name) for name in self._OWN}}

    @property
    def config(self) -> tuple:
        return self.forest.params

    @classmethod
    def attach(cls, config: tuple, arrays: dict[str, np.ndarray]) -> LikelihoodDetector:
        """A detector whose state is `arrays` as they are (no allocation, no copy)."""
        forest = RandomCutForest.attach(
            config, {k[len("forest.") :]: v for k, v in arrays.items() if k.startswith("forest.")}
        )
        detector = cls.__new__(cls)
        detector.forest = forest
        for name in cls._OWN:
            setattr(detector, name, arrays[name])
        return detector

    def to_bytes(self) -> bytes:
        # One blob, compressed once: the forest's arrays beside the likelihood's own.
        arrays = {f"forest_{k}": v for k, v in self.forest.to_arrays().items()}
        arrays.update({name: getattr(self, name) for name in self._OWN})
        return pack_arrays(arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> LikelihoodDetector:
        arrays = unpack_arrays(data)
        forest = RandomCutForest.from_arrays(
            {k[len("forest_") :]: arrays[k] for k in arrays if k.startswith("forest_")}
        )
        detector = cls(forest)
        for name in cls._OWN:
            setattr(detector, name, arrays[name].copy())
        return detector


class CompactDetector(LikelihoodDetector):
    """The likelihood detector in a fourteenth of the memory, with a hold after each report
    (_held): a forest of 6 trees of 128 points (shingle 4), the history as block sums
    (BLOCKS), scores averaged over COMPACT_AVERAGING_WINDOW points. About 140 KB a key
    resident and at most 64 KB as a snapshot, against 1.87 MiB and 520 KB
    (docs/anomaly-detection.md)."""

    name = "compact"
    _OWN = ("blocks", "state", "avg_window", "params", "run_values")

    def __init__(self, forest: RandomCutForest | None = None, seed: int = 42,
                 trees: int = 6) -> None:  # fmt: skip
        # Fewer trees of more points: the same nodes as 12 trees of 64, and on ../shared/nab
        # (standard, seeds 42 and 1 to 6, without the hold) a median 64.3 against 63.4.
        self.forest = forest or RandomCutForest(
            trees=trees, sample_size=128, shingle_size=4, time_decay=100000.0, seed=seed
        )
        self.blocks = np.zeros((BLOCKS, 5))
        self.state = np.zeros(12)
        self.avg_window = np.zeros(COMPACT_AVERAGING_WINDOW)
        self.params = np.array([0.5, 1e3])
        self.run_values = np.zeros(RUN_VALUES)

    def _likelihoods(self, raw: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
        _block_likelihoods(raw, values, out, self.blocks, self.state, self.avg_window,
                           self.params, self.run_values, *self._channels())  # fmt: skip

    def _channels(self) -> tuple[np.ndarray, ...]:
        """The further channels' arrays, as _block_likelihoods takes them: none here."""
        return _NO_CHANNELS


_NO_CHANNELS = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, np.float32),
                np.zeros(0, np.float32), np.zeros((0, 2)))  # fmt: skip


class ContextualDetector(CompactDetector):
    """The default: the compact detector with two more channels, a sustained change of the
    raw scores and a departure from the series' own period (see SUSTAINED_WINDOW). About
    150 KB a key resident and at most 64 KB as a snapshot."""

    name = "contextual"
    _CHANNELS = ("context", "sustained_window", "seasonal_window", "recent", "lag_differences",
                 "channel_params")  # fmt: skip
    _OWN = CompactDetector._OWN + _CHANNELS

    def __init__(self, forest: RandomCutForest | None = None, seed: int = 42,
                 trees: int = 6) -> None:  # fmt: skip
        super().__init__(forest, seed, trees)
        self.blocks = np.zeros((BLOCKS, 9))  # two more pairs of columns: the channels'
        self.context = np.zeros(CONTEXT_SLOTS)
        self.sustained_window = np.zeros(SUSTAINED_WINDOW)
        self.seasonal_window = np.zeros(COMPACT_AVERAGING_WINDOW)
        # Single precision: values one and two periods back, and the lags' mean differences,
        # need no more, and the snapshot stays within 64 KB (NAB scores unchanged to 0.1).
        self.recent = np.zeros(2 * SEASONAL_MAX_LAG, np.float32)
        self.lag_differences = np.zeros(SEASONAL_MAX_LAG + 1, np.float32)
        self.channel_params = np.tile([0.5, 1e3], (2, 1))

    def _channels(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in self._CHANNELS)
