"""Incidents, not points: consecutive anomalous points of one sensor form one incident.

An incident opens at its first anomalous point, is escalated only when its severity rises, and
closes at the first point that comes `quiet` after its last anomalous point. Each transition
carries a stable alert id derived from the key and the time its incident opened
(`<device>/<sensor>#<UTC opening time>`), so a replayed batch yields the same transitions and
the same documents, and an incident after a state reset (TTL, new checkpoint) gets a new id
instead of reusing `#1`, which the shadow already holds closed.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

OPEN, ESCALATE, CLOSE = "open", "escalate", "close"
SEVERITIES = {1: "minor", 2: "major", 3: "critical"}


def severity_of(score: float) -> int:
    """critical from 0.99 (range and stuck checks give 1.0), major from 0.8, else minor."""
    if score >= 0.99:
        return 3
    if score >= 0.8:
        return 2
    return 1


def alert_id(device_id: str, sensor: str, number: int) -> str:
    """The id of the key's incident `number` (the epoch second it opened)."""
    return f"{device_id}/{sensor}#{datetime.fromtimestamp(number, UTC):%Y%m%dT%H%M%SZ}"


def _epoch_seconds(moment: datetime) -> int:
    """Seconds since the epoch; a naive time is UTC, as the session's time zone is."""
    return calendar.timegm(moment.utctimetuple())


# The expected range: an exponentially weighted level and mean absolute deviation of the key's
# unflagged readings (a flagged reading does not widen what counts as normal). About the last
# 1 / EXPECTED_ALPHA readings count; before EXPECTED_AFTER readings there is no range. The
# range is the level +- EXPECTED_WIDTH deviations (1.2533 mean absolute deviations are one
# standard deviation of a normal distribution: 4 x 1.2533 is about 5 sigma).
EXPECTED_ALPHA = 1 / 64
EXPECTED_AFTER = 20
EXPECTED_WIDTH = 4 * 1.2533


@dataclass
class IncidentState:
    open: bool = False
    # The epoch second the current (or last) incident opened: unique per key, since an
    # incident closes at least `quiet` after it opened, and the same after a replay.
    number: int = 0
    severity: int = 0
    last_anomaly: datetime | None = None
    # The expected range's running statistics (see EXPECTED_ALPHA).
    level: float = 0.0
    deviation: float = 0.0
    learned: int = 0

    def as_tuple(self) -> tuple:
        return (self.open, self.number, self.severity, self.last_anomaly)

    def expected_range(self) -> tuple[float, float]:
        """What the key's readings so far make normal for the next one: (low, high), NaN
        while fewer than EXPECTED_AFTER unflagged readings were seen."""
        if self.learned < EXPECTED_AFTER:
            return math.nan, math.nan
        half = max(EXPECTED_WIDTH * self.deviation, 1e-9 * abs(self.level), 1e-12)
        return self.level - half, self.level + half

    def learn(self, value: float, flagged: bool) -> None:
        """Past one reading: an unflagged one moves the level and the deviation."""
        if flagged or math.isnan(value):
            return
        self.learned += 1
        # The first readings average evenly (1/n), later ones exponentially.
        alpha = max(1.0 / self.learned, EXPECTED_ALPHA)
        self.deviation += alpha * (abs(value - self.level) - self.deviation) * (self.learned > 1)
        self.level += alpha * (value - self.level)


ABOVE, BELOW = "above", "below"


def explain(
    values: np.ndarray, expected: np.ndarray, flagged: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How each flagged reading is anomalous, against the expected range (low, high columns)
    it was judged by: its direction from the range's middle (ABOVE or BELOW), and its strength,
    the distance from the middle in half-widths of the range (1 at its edge, above 1 outside
    it: a reading flagged for its pattern, a stuck value or a drift, can be inside). None and
    NaN where the reading is not flagged or there is no range yet."""
    low, high = expected[:, 0], expected[:, 1]
    middle, half = (low + high) / 2, (high - low) / 2
    known = np.asarray(flagged, dtype=bool) & np.isfinite(middle)
    directions = np.full(len(values), None, dtype=object)
    directions[known & (values >= middle)] = ABOVE
    directions[known & (values < middle)] = BELOW
    with np.errstate(divide="ignore", invalid="ignore"):
        strengths = np.where(known, np.abs(values - middle) / half, np.nan)
    return directions, strengths


def advance(
    state: IncidentState,
    device_id: str,
    sensor: str,
    event_time: datetime,
    is_anomaly: bool,
    score: float,
    quiet: timedelta,
) -> tuple[str | None, int]:
    """Move the key's incident state past one point (in event-time order); return the
    transition at this point (or None) and the incident's severity."""
    if is_anomaly:
        severity = severity_of(score)
        if not state.open:
            number = max(state.number + 1, _epoch_seconds(event_time))
            state.open, state.number, state.severity = True, number, severity
            state.last_anomaly = event_time
            return OPEN, severity
        state.last_anomaly = max(state.last_anomaly, event_time)
        if severity > state.severity:
            state.severity = severity
            return ESCALATE, severity
        return None, state.severity
    if state.open and event_time - state.last_anomaly >= quiet:
        state.open = False
        return CLOSE, state.severity
    return None, state.severity
