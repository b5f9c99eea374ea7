"""Throwaway MIT Kerberos KDCs (Debian's krb5-kdc) on loopback, for the Kerberos tests."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sensorpipe_tools.local_services import free_port, wait_for_port

ENCTYPE = "aes256-cts-hmac-sha1-96"


@dataclass
class MitKdc:
    realm: str
    port: int
    folder: Path
    proc: subprocess.Popen

    @property
    def kdc_conf(self) -> Path:
        return self.folder / "kdc.conf"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What kadmin.local needs to reach this realm's database."""
        return {
            **os.environ,
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5_CONFIG": str(self.folder / "krb5.conf"),
        }

    def kadmin(self, query: str) -> str:
        done = subprocess.run(
            ["kadmin.local", "-r", self.realm, "-q", query],
            env=self.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout

    @classmethod
    def start(cls, realm: str, folder: Path) -> MitKdc:
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        (folder / "kdc.conf").write_text(
            f"""[kdcdefaults]
    kdc_ports = {port}
    kdc_tcp_ports = {port}
[realms]
    {realm} = {{
        database_name = {folder}/principal
        key_stash_file = {folder}/stash
        acl_file = {folder}/kadm5.acl
        max_life = 24h
        max_renewable_life = 7d
        master_key_type = {ENCTYPE}
        supported_enctypes = {ENCTYPE}:normal
        kdc_ports = {port}
        kdc_tcp_ports = {port}
    }}
[logging]
    kdc = FILE:{folder}/kdc.log
"""
        )
        (folder / "krb5.conf").write_text(
            f"[libdefaults]\n  default_realm = {realm}\n[realms]\n  {realm} = {{\n"
            f"    kdc = 127.0.0.1:{port}\n  }}\n"
        )
        (folder / "kadm5.acl").write_text("")
        kdc = cls(realm, port, folder, None)  # type: ignore[arg-type]
        subprocess.run(
            ["kdb5_util", "-r", realm, "create", "-s", "-P", "master-key-for-tests"],
            env=kdc.env(), capture_output=True, check=True,
        )  # fmt: skip
        kdc.proc = subprocess.Popen(
            ["krb5kdc", "-n", "-r", realm], env=kdc.env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(port, 20, kdc.proc)
        return kdc

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
