"""`sensorpipe view`: the operations page, a live view of the fleet and its incidents read from
the warehouse (docs/view.md).

The trains learn of an incident through their shadows; this page shows operators the same
transitions as the alerts path loads them into the warehouse's `incidents` table, beside the
fleet (when each train last reported, a silent one marked) and, for a chosen incident, its
sensor's one-minute windows. The server asks the warehouse every `view.poll_seconds` whether a
load committed (the load log changes with every load) and, when one did, pushes the new board
to every open page as a server-sent event: no reload, no polling from the browser. A warehouse
that goes away is reported on the page and read again when it is back.

It reads with its own login, which can read and nothing else (PostgreSQL: `view.user`;
Redshift: the Data API as the caller's IAM identity, an engineer's federated role), binds to
loopback unless told otherwise, and serves only its own files: it works inside a private
network and its Content-Security-Policy lets the page load nothing from anywhere else.

Standard library HTTP server, no framework: three JSON endpoints and one event stream; the page
is plain JavaScript drawing its own SVG chart (no build step, no CDN).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from sensorpipe.sinks.warehouse import (
    INCIDENTS,
    LOAD_LOG,
    MINUTE_AGGREGATES,
    PostgresWarehouse,
    WarehouseError,
)

PAGE = Path(__file__).resolve().parent / "view_page"
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
SEVERITY_ORDER = ("critical", "major", "minor")
ALERT_ID = re.compile(r"^[A-Za-z0-9:_\-]{1,64}/[A-Za-z0-9_\-]{1,64}#\d{8}T\d{6}Z$")
# How far back the board looks for incidents (and trains): what an operations room watches.
HORIZON_DAYS = 7
CLOSED_SHOWN = 20

# Every load (aggregates, incidents, rollups) adds a load-log row in its own transaction.
MARKER_SQL = f"SELECT COUNT(*) AS loads, MAX(loaded_at) AS last_load FROM {LOAD_LOG}"
FLEET_SQL = (
    f"SELECT device_id, MAX(window_end) AS reported_until FROM {MINUTE_AGGREGATES.name} "
    f"WHERE window_start >= (SELECT MAX(window_start) FROM {MINUTE_AGGREGATES.name}) "
    f"- INTERVAL '{HORIZON_DAYS} days' GROUP BY device_id"
)
INCIDENTS_SQL = (
    "SELECT alert_id, action, event_time, device_id, sensor, severity, opened_at, score, value, "
    f"expected_low, expected_high, direction, strength FROM {INCIDENTS.name} "
    f"WHERE opened_at >= (SELECT MAX(opened_at) FROM {INCIDENTS.name}) "
    f"- INTERVAL '{HORIZON_DAYS} days'"
)
SERIES_SQL = (
    "SELECT window_start, window_end, event_count, min_value, max_value, mean_value, "
    f"anomaly_count, max_anomaly_score FROM {MINUTE_AGGREGATES.name} "
    "WHERE device_id = :device_id AND sensor = :sensor AND window_start >= :first "
    "AND window_start <= :last ORDER BY window_start"
)


class WarehouseUnavailable(RuntimeError):
    """The warehouse could not be read (down, restarting, refused the login)."""


# -- reading the warehouse ------------------------------------------------------------------


@dataclass
class PostgresReader:
    """Reads PostgreSQL with the view's own login (the warehouse sink's connection, another
    user); one connection, made again after a failure."""

    warehouse: PostgresWarehouse
    _conn: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        import psycopg

        # :name placeholders (the Data API's) as psycopg's %(name)s.
        text = re.sub(r":([a-z_]+)", r"%(\1)s", sql) if params else sql
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self.warehouse._connect("reading the board")
                    self._conn.autocommit = True  # each read sees every commit so far
                cursor = self._conn.execute(text, params)
                names = [d.name for d in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            except (psycopg.Error, WarehouseError) as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise WarehouseUnavailable(first) from None


@dataclass
class RedshiftReader:
    """Reads Redshift through the Data API (`redshift-data`): no driver, no open port, the
    caller's IAM credentials (an engineer's federated role) unless a database user is named."""

    client: Any
    database: str
    workgroup_name: str | None = None
    cluster_identifier: str | None = None
    db_user: str | None = None
    poll_seconds: float = 0.1
    timeout_seconds: float = 30

    def _target(self) -> dict[str, str]:
        target = {"Database": self.database}
        if self.workgroup_name:
            target["WorkgroupName"] = self.workgroup_name
        else:
            target["ClusterIdentifier"] = str(self.cluster_identifier)
        if self.db_user:
            target["DbUser"] = self.db_user
        return target

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        request: dict[str, Any] = {"Sql": sql, **self._target()}
        if params:
            request["Parameters"] = [{"name": k, "value": str(v)} for k, v in params.items()]
        try:
            statement = self.client.execute_statement(**request)
            deadline = time.monotonic() + self.timeout_seconds
            while (status := self.client.describe_statement(Id=statement["Id"]))["Status"] not in (
                "FINISHED", "FAILED", "ABORTED"
            ):  # fmt: skip
                if time.monotonic() > deadline:
                    raise WarehouseUnavailable(f"statement still {status['Status']}")
                time.sleep(self.poll_seconds)
            if status["Status"] != "FINISHED":
                raise WarehouseUnavailable(f"{status['Status']}: {status.get('Error', '')}")
            rows: list[dict[str, Any]] = []
            token = None
            while True:
                page = self.client.get_statement_result(
                    Id=statement["Id"], **({"NextToken": token} if token else {})
                )
                names = [c["name"] for c in page["ColumnMetadata"]]
                for record in page["Records"]:
                    values = [None if v.get("isNull") else next(iter(v.values())) for v in record]
                    rows.append(dict(zip(names, values, strict=True)))
                token = page.get("NextToken")
                if not token:
                    return rows
        except (BotoCoreError, ClientError) as exc:
            raise WarehouseUnavailable(str(exc)) from None


def reader_from_settings(settings: Any, environ: dict[str, str] | None = None) -> Any:
    """The view's reader of the configured warehouse (`settings`: config.ViewConfig, or a
    job's Settings)."""
    from sensorpipe.secrets import secret_value

    warehouse, view = settings.warehouse, settings.view
    if warehouse.kind == "postgres":
        return PostgresReader(PostgresWarehouse(
            warehouse.host, warehouse.port, warehouse.database, view.user,
            secret_value("view.password_env", view.password_env, None, environ),
            warehouse.sslmode, connect_timeout=3,
        ))  # fmt: skip
    if warehouse.kind == "redshift":
        import boto3

        return RedshiftReader(
            boto3.client("redshift-data", region_name=warehouse.region),
            warehouse.database, warehouse.workgroup_name, warehouse.cluster_identifier,
            view.db_user,
        )  # fmt: skip
    from sensorpipe.config import ConfigError

    raise ConfigError("warehouse.kind: the view reads the warehouse; none is configured")


# -- the board: what the page shows, from the warehouse's rows (pure) ----------------------


def _moment(value: Any) -> datetime | None:
    """A warehouse timestamp (naive UTC, or ISO text from the Data API) as naive UTC."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace(" ", "T")).replace(tzinfo=None)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def board(
    fleet_rows: Iterable[dict[str, Any]],
    incident_rows: Iterable[dict[str, Any]],
    silent_after: timedelta,
) -> dict[str, Any]:
    """The page's data. Time is the data's: `as_of` is the newest window any train reported,
    a train is silent when it reported nothing for `silent_after` before that (a train in a
    tunnel, while the others go on), and ages are counted to it (replays and live runs alike)."""
    reported = {r["device_id"]: _moment(r["reported_until"]) for r in fleet_rows}
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for row in incident_rows:
        by_alert.setdefault(row["alert_id"], []).append(row)
    incidents = []
    for alert, rows in by_alert.items():
        rows.sort(key=lambda r: _moment(r["event_time"]))
        closes = [r for r in rows if r["action"] == "close"]
        latest = [r for r in rows if r["action"] != "close"] or rows
        last = latest[-1]
        incidents.append(
            {
                "alert_id": alert,
                "device_id": last["device_id"],
                "sensor": last["sensor"],
                "severity": last["severity"],
                "status": "closed" if closes else "open",
                "opened_at": _iso(_moment(rows[0]["opened_at"])),
                "closed_at": _iso(_moment(closes[-1]["event_time"])) if closes else None,
                "last_event_time": _iso(_moment(last["event_time"])),
                "score": _number(last["score"]),
                "value": _number(last["value"]),
                "expected_low": _number(last["expected_low"]),
                "expected_high": _number(last["expected_high"]),
                "direction": last["direction"],
                "strength": _number(last["strength"]),
            }
        )
    as_of = max((m for m in reported.values() if m is not None), default=None)
    open_incidents = sorted(
        (i for i in incidents if i["status"] == "open"), key=lambda i: i["opened_at"], reverse=True
    )
    closed = sorted(
        (i for i in incidents if i["status"] == "closed"), key=lambda i: i["closed_at"],
        reverse=True,
    )[:CLOSED_SHOWN]  # fmt: skip
    fleet = []
    for device in sorted(set(reported) | {i["device_id"] for i in incidents}):
        until = reported.get(device)
        counts = {s: 0 for s in SEVERITY_ORDER}
        for incident in open_incidents:
            if incident["device_id"] == device:
                counts[incident["severity"]] = counts.get(incident["severity"], 0) + 1
        silent = until is None or (as_of is not None and as_of - until > silent_after)
        fleet.append(
            {
                "device_id": device,
                "reported_until": _iso(until),
                "status": "silent" if silent else ("alerting" if any(counts.values()) else "ok"),
                "open": counts,
            }
        )
    return {"as_of": _iso(as_of), "fleet": fleet, "open": open_incidents, "closed": closed}


def series_window(incident: dict[str, Any], as_of: str | None) -> tuple[datetime, datetime]:
    """The windows a chart of `incident` shows: the hour up to its close (or to now, the data's
    latest, while it is open), reaching back at least ten minutes before it opened."""
    opened = _moment(incident["opened_at"])
    end = _moment(incident.get("closed_at")) or _moment(as_of) or opened
    end = max(end + timedelta(minutes=5), opened + timedelta(minutes=10))
    start = min(end - timedelta(hours=1), opened - timedelta(minutes=10))
    return start, end


# -- the live board and the HTTP server --------------------------------------------------


class LiveBoard:
    """The current board, rebuilt whenever the warehouse commits a load; waiters are woken
    with each new version (the page's event streams)."""

    def __init__(self, reader: Any, silent_after: timedelta, poll_seconds: float) -> None:
        self.reader, self.silent_after, self.poll_seconds = reader, silent_after, poll_seconds
        self.version = 0
        self.state: dict[str, Any] = {"warehouse": "connecting", "fleet": [], "open": [],
                                      "closed": [], "as_of": None}  # fmt: skip
        self._marker: Any = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view-board", daemon=True)

    def start(self) -> LiveBoard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(timeout=10)

    def refresh(self) -> None:
        """Read the warehouse if a load committed since the last read (one small query if not)."""
        try:
            marker = self.reader.query(MARKER_SQL)
            if marker == self._marker and self.state.get("warehouse") == "ok":
                return
            state = board(
                self.reader.query(FLEET_SQL), self.reader.query(INCIDENTS_SQL), self.silent_after
            )
            state["warehouse"] = "ok"
            self._marker = marker
        except WarehouseUnavailable as exc:
            if self.state.get("warehouse", "").startswith("unavailable"):
                return
            state = {**self.state, "warehouse": f"unavailable: {exc}"}
        except Exception as exc:  # noqa: BLE001 - e.g. tables not created yet: say so, go on
            state = {**self.state, "warehouse": f"unavailable: {type(exc).__name__}: {exc}"}
            if state == self.state:
                return
        with self._changed:
            self.state = state
            self.version += 1
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.poll_seconds)

    def wait_newer(self, version: int, timeout: float) -> tuple[int, dict[str, Any]]:
        with self._changed:
            self._changed.wait_for(
                lambda: self.version != version or self._stop.is_set(), timeout=timeout
            )
            return self.version, self.state

    def series(self, alert_id: str) -> dict[str, Any]:
        incident = next(
            (i for i in (*self.state["open"], *self.state["closed"]) if i["alert_id"] == alert_id),
            None,
        )
        if incident is None:
            return {"alert_id": alert_id, "windows": [], "error": "no such incident on the board"}
        first, last = series_window(incident, self.state.get("as_of"))
        rows = self.reader.query(
            SERIES_SQL,
            {"device_id": incident["device_id"], "sensor": incident["sensor"],
             "first": first.isoformat(sep=" "), "last": last.isoformat(sep=" ")},
        )  # fmt: skip
        windows = [
            {
                "start": _iso(_moment(r["window_start"])),
                "end": _iso(_moment(r["window_end"])),
                "count": int(r["event_count"]),
                "min": _number(r["min_value"]),
                "max": _number(r["max_value"]),
                "mean": _number(r["mean_value"]),
                "anomalies": int(r["anomaly_count"] or 0),
                "max_score": _number(r["max_anomaly_score"]),
            }
            for r in rows
        ]
        return {"incident": incident, "first": _iso(first), "last": _iso(last), "windows": windows}


# Nothing from anywhere else, no inline script or style: the page works on a private network
# and a value from the warehouse cannot become code.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def make_handler(live: LiveBoard, keepalive_seconds: float = 15.0) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by design
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value: Any, status: int = 200) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            url = urlparse(self.path)
            if url.path in FILES:
                name, content_type = FILES[url.path]
                self._send(200, (PAGE / name).read_bytes(), content_type)
            elif url.path == "/board":
                self._json(live.state)
            elif url.path == "/series":
                alert = parse_qs(url.query).get("alert_id", [""])[0]
                if not ALERT_ID.match(alert):
                    self._json({"error": "alert_id: expected <train>/<sensor>#<time>"}, 400)
                    return
                try:
                    self._json(live.series(alert))
                except WarehouseUnavailable as exc:
                    self._json({"error": f"warehouse unavailable: {exc}"}, 503)
            elif url.path == "/events":
                self._events()
            else:
                self._json({"error": "not found"}, 404)

        def _events(self) -> None:
            """Server-sent events: the board now, then each new one; a comment line now and
            then keeps proxies from closing an idle stream."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            for name, value in SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            version, state = live.version, live.state
            try:
                self.wfile.write(b"retry: 1000\n")
                while True:
                    self.wfile.write(f"id: {version}\ndata: {json.dumps(state)}\n\n".encode())
                    self.wfile.flush()
                    while True:
                        newer, state = live.wait_newer(version, keepalive_seconds)
                        if live._stop.is_set():
                            return
                        if newer != version:
                            version = newer
                            break
                        self.wfile.write(b": keepalive\n\n")
                        self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler


@dataclass
class ViewServer:
    """The page's HTTP server and its live board, running on threads until stopped."""

    live: LiveBoard
    httpd: ThreadingHTTPServer

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        self.live.stop()
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(reader: Any, view: Any, host: str | None = None, port: int | None = None) -> ViewServer:
    """Start the page's server (`view` is config.ViewSettings; port 0 picks a free one)."""
    live = LiveBoard(reader, timedelta(minutes=view.silent_after_minutes), view.poll_seconds)
    live.start()
    httpd = ThreadingHTTPServer(
        (host or view.host, view.port if port is None else port), make_handler(live)
    )
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="view-http", daemon=True).start()
    return ViewServer(live, httpd)


# -- the read-only login (PostgreSQL) ------------------------------------------------------


def read_only_grants(user: str, tables: Sequence[str], writer: str) -> list[str]:
    """Statements making `user` a login that can read `tables` and the load log, and tables
    `writer` creates later, and nothing else (no write, no other table)."""
    if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", user):
        raise ValueError(f"view.user {user!r}: expected a lower-case SQL identifier")
    quoted = ", ".join(tables)
    return [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
        f"CREATE ROLE {user} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; END IF; END $$",
        f"REVOKE ALL ON SCHEMA public FROM {user}",
        f"GRANT USAGE ON SCHEMA public TO {user}",
        f"GRANT SELECT ON {quoted} TO {user}",
        f"ALTER ROLE {user} SET default_transaction_read_only = on",
    ]


VIEWED_TABLES = [INCIDENTS.name, MINUTE_AGGREGATES.name, LOAD_LOG]
