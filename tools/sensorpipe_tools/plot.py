"""`sensorpipe plot`: one sensor of one device over a time range, from the lake: the values with
the expected range the detector took as normal at each reading shaded and the flagged points
marked, and the anomaly score beneath with the threshold, so an engineer can see why an alert
fired."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds


def read_series(
    lake_events: str | Path,
    device_id: str,
    sensor: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """One (device, sensor) series from the lake's events table (Parquet, Hive partitions);
    the expected range is NaN where the lake has none (files written before it existed)."""
    dataset = ds.dataset(
        str(lake_events), format="parquet", partitioning="hive", exclude_invalid_files=True
    )
    condition = (ds.field("device_id") == device_id) & (ds.field("sensor") == sensor)
    columns = ["event_time", "value", "unit", "anomaly_score", "is_anomaly"]
    ranged = [c for c in ("expected_low", "expected_high") if c in dataset.schema.names]
    frame = dataset.to_table(filter=condition, columns=columns + ranged).to_pandas()
    for column in ("expected_low", "expected_high"):
        frame[column] = frame[column].astype(float) if column in frame else float("nan")
    frame = frame.sort_values("event_time")
    if start is not None:
        frame = frame[frame["event_time"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["event_time"] <= pd.Timestamp(end)]
    return frame.reset_index(drop=True)


def strongest_anomaly(lake_events: str | Path) -> tuple[str, str, datetime]:
    """The (device, sensor, time) of the highest-scoring flagged event in the lake (scores of 1
    are common, range and stuck checks give them: the raw forest score breaks the tie)."""
    dataset = ds.dataset(
        str(lake_events), format="parquet", partitioning="hive", exclude_invalid_files=True
    )
    table = dataset.to_table(
        filter=ds.field("is_anomaly"),
        columns=["device_id", "sensor", "event_time", "anomaly_score"],
    )
    if table.num_rows == 0:
        raise LookupError(f"no flagged event in {lake_events}")
    top = (
        table.to_pandas()
        .sort_values(["anomaly_score", "event_time"], ascending=[False, True])
        .iloc[0]
    )
    return top["device_id"], top["sensor"], top["event_time"].to_pydatetime()


def plot_series(
    frame: pd.DataFrame, device_id: str, sensor: str, threshold: float, out: str | Path
) -> Path:
    import matplotlib.pyplot as plt

    fig = draw_series(frame, device_id, sensor, threshold)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def draw_series(frame: pd.DataFrame, device_id: str, sensor: str, threshold: float) -> Any:
    """The figure `plot_series` writes: values, expected range and flags above, score below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frame.empty:
        raise LookupError(f"no events for {device_id} {sensor} in that range")
    unit = frame["unit"].iloc[0]
    flagged = frame[frame["is_anomaly"]]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]}
    )
    if frame["expected_low"].notna().any():
        top.fill_between(frame["event_time"], frame["expected_low"], frame["expected_high"],
                         step="mid", color="#2ca02c", alpha=0.15, lw=0,
                         label="expected range")  # fmt: skip
    top.plot(frame["event_time"], frame["value"], lw=0.9, color="#1f77b4", label=sensor)
    top.scatter(
        flagged["event_time"],
        flagged["value"],
        color="#d62728",
        zorder=3,
        s=28,
        label=f"flagged ({len(flagged)})",
    )
    top.set_ylabel(f"{sensor} [{unit}]")
    top.set_title(f"{device_id} {sensor}: values and anomaly score")
    top.legend(loc="upper left")
    bottom.plot(frame["event_time"], frame["anomaly_score"], lw=0.9, color="#555555")
    bottom.axhline(threshold, color="#d62728", ls="--", lw=0.8, label=f"threshold {threshold}")
    bottom.scatter(flagged["event_time"], flagged["anomaly_score"], color="#d62728", s=18)
    bottom.set_ylim(-0.02, 1.05)
    bottom.set_ylabel("anomaly score")
    bottom.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def around(moment: datetime, hours: float) -> tuple[datetime, datetime]:
    return moment - timedelta(hours=hours), moment + timedelta(hours=hours)


def sample_anomaly_range(
    lake_events: str | Path, manifest: dict, index: int, margin_hours: float = 3.0
) -> tuple[str, str, datetime, datetime]:
    """The time range around the manifest's anomaly `index`, as the lake holds it: `sensorpipe
    produce` shifts recorded event times by whole hours, so the shift is read off the lake."""
    anomaly = manifest["anomalies"][index]
    device, sensor = anomaly["device_id"], anomaly["sensor"]
    first = read_series(lake_events, device, sensor)["event_time"].min()
    recorded_start = pd.Timestamp(manifest["spec"]["start"]).tz_localize(None)
    shift = (first - recorded_start).floor("h")
    start = pd.Timestamp(anomaly["start"]).tz_localize(None) + shift
    end = pd.Timestamp(anomaly["end"]).tz_localize(None) + shift
    margin = timedelta(hours=margin_hours)
    return device, sensor, (start - margin).to_pydatetime(), (end + margin).to_pydatetime()
