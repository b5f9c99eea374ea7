"""Local stand-ins for AWS services, started on loopback and stopped by PID.

Used by `make run` (through `sensorpipe local ...`) and by the integration tests. Each service
is the project's own install (npm ci / Debian packages), never something fetched at run time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class ServiceError(RuntimeError):
    """A local service could not be started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"process {proc.pid} exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceError(f"nothing listened on 127.0.0.1:{port} within {timeout_s} s")


@dataclass
class Kinesalite:
    """kinesalite (npm) speaking the Kinesis API on 127.0.0.1:port, data in memory."""

    port: int
    proc: subprocess.Popen

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, port: int | None = None, log_path: str | Path | None = None) -> Kinesalite:
        binary = ROOT / "node_modules/.bin/kinesalite"
        if not binary.exists():
            raise ServiceError(f"{binary} is missing: run `npm ci` in {ROOT}")
        # Through node with a guard: kinesalite ends on a request a killed client aborted.
        guard = Path(__file__).with_name("kinesalite_guard.js")
        port = port or free_port()
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(
            [
                "node",
                "--require",
                str(guard),
                str(binary.resolve()),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--createStreamMs",
                "0",
                "--deleteStreamMs",
                "0",
                "--updateStreamMs",
                "0",
                "--shardLimit",
                "100",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(port, 20, proc)
        except ServiceError:
            proc.kill()
            raise
        return cls(port, proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def stop_pid(pid: int, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process is still there after `timeout_s`."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def local_aws_environment() -> dict[str, str]:
    """Credentials for local stand-ins: they check none, boto3 still wants some."""
    return {
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Postgres:
    """A throwaway PostgreSQL 15 server (Debian's binaries) on 127.0.0.1:port, standing in for
    Redshift. It refuses to run as root, so it runs as the unprivileged `postgres` user."""

    port: int
    data_dir: Path
    user: str = "sensorpipe"
    database: str = "warehouse"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.database}"

    @staticmethod
    def _as_postgres(*cmd: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    @classmethod
    def start(cls, data_dir: str | Path, port: int | None = None) -> Postgres:
        if not (PG_BIN / "initdb").exists():
            raise ServiceError(f"{PG_BIN}/initdb is missing: apt-get install postgresql-15")
        data_dir = Path(data_dir)
        port = port or free_port()
        server = cls(port, data_dir)
        if not (data_dir / "PG_VERSION").exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                subprocess.run(["chown", "-R", "postgres:postgres", str(data_dir)], check=True)
            subprocess.run(
                cls._as_postgres(
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    server.user,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ),
                check=True,
                capture_output=True,
            )
        server.resume()
        subprocess.run(
            cls._as_postgres(
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                server.user,
                server.database,
            ),
            capture_output=True,  # already there on a restart of the same data dir
        )
        return server

    def resume(self) -> None:
        """Start the server on an existing data directory (after `pause`)."""
        subprocess.run(
            self._as_postgres(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-l",
                str(self.data_dir / "server.log"),
                "-o",
                f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ),
            check=True,
            capture_output=True,
        )
        wait_for_port(self.port, 20)

    def pause(self) -> None:
        """Stop the server, keeping its data (fast shutdown: open connections are cut)."""
        subprocess.run(
            self._as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "fast", "stop"
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        self.pause()
