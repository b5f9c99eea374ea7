"""Alerts to the train: incident transitions -> the desired state of its AWS IoT device shadow.

A train that loses the network in a tunnel reads its shadow again when it reconnects and gets
the latest state, so one update per train per micro-batch carries its open alerts under
`state.desired.sensorpipe_alerts.<alert id>`: sensor, event time, score, severity, status.
Only those fields are written (the shadow merges partial documents), so other writers' fields
are never overwritten. Each update carries the version read; on a version conflict the shadow
is read again and the patch merged anew. Entries the shadow already holds are not sent again,
so a replayed batch (same alert ids, same documents) sends nothing. Throttling backs off.

Locally (`alerts.kind: outbox`) the shadow is a JSON file per train with the same semantics.

Two paths deliver. The alerts query (`foreach_batch_alerts`) reads the lake's committed
events with its own checkpoint: at least once, it also writes the anomalies table. In
continuous runs, `AlertFastPath` also delivers a scoring batch's transitions as soon as that
batch commits, from the files the lake's sink log lists for it, saving the alerts query's
trigger and batch. Delivery is idempotent, so whichever path comes second sends nothing; a
failure of the fast path only delays an alert to the query's delivery.
"""

from sensorpipe.sinks.alerts.delivery import (
    AlertStats,
    alert_patches,
    deliver,
    foreach_batch_alerts,
)
from sensorpipe.sinks.alerts.fast_path import TRANSITION_COLUMNS, AlertFastPath, transitions_in
from sensorpipe.sinks.alerts.stores import (
    ALERTS_KEY,
    THROTTLING,
    AlertDeliveryError,
    FileOutbox,
    IotShadowStore,
    ShadowStore,
    VersionConflict,
    shadow_store_from_settings,
)
from sensorpipe.sinks.sink_log import batch_files

__all__ = [
    "ALERTS_KEY", "THROTTLING", "TRANSITION_COLUMNS", "AlertDeliveryError", "AlertFastPath",
    "AlertStats", "FileOutbox", "IotShadowStore", "ShadowStore", "VersionConflict",
    "alert_patches", "batch_files", "deliver", "foreach_batch_alerts",
    "shadow_store_from_settings", "transitions_in",
]  # fmt: skip
