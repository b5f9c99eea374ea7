"""Small JSON documents under a local folder or an s3:// prefix, each written whole or not at all.

Used where a job keeps its own durable bookkeeping next to its data: the Kinesis source's
per-batch end positions, the JDBC ingest's high-water marks, lineage run records.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any


class JsonStore:
    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self._s3 = None
        scheme, sep, rest = self.root.partition("://")
        if sep and scheme in ("s3", "s3a", "s3n"):
            import boto3

            bucket, _, prefix = rest.partition("/")
            self._s3, self._bucket, self._prefix = boto3.client("s3"), bucket, prefix
        elif scheme == "file" and sep:
            self.root = "/" + rest.lstrip("/") if rest else "/"  # file:///x and file:/x alike
        elif sep:
            # Anything else would be taken for a local folder named "hdfs:" (or "gs:", ...).
            raise ValueError(
                f"{root}: {scheme}:// is not supported here; use s3:// or a local path"
            )

    def _key(self, relative: str) -> str:
        return f"{self._prefix}/{relative}" if self._prefix else relative

    def write(self, relative: str, data: dict[str, Any]) -> None:
        self.write_text(relative, json.dumps(data, sort_keys=True, default=str))

    def write_text(self, relative: str, body: str) -> None:
        """A text document, written whole or not at all."""
        if self._s3 is not None:
            self._s3.put_object(Bucket=self._bucket, Key=self._key(relative), Body=body.encode())
            return
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{random.randrange(1 << 30)}"
        with open(tmp, "w") as f:
            f.write(body)
        os.replace(tmp, path)  # readers see the whole file or none

    def create(self, relative: str, data: dict[str, Any]) -> bool:
        """Write a document only if there is none yet; False if one was there (the first
        writer wins: S3's conditional write `If-None-Match: *`, or a hard link locally)."""
        body = json.dumps(data, sort_keys=True, default=str)
        if self._s3 is not None:
            from botocore.exceptions import ClientError

            try:
                self._s3.put_object(
                    Bucket=self._bucket, Key=self._key(relative), Body=body.encode(),
                    IfNoneMatch="*",
                )  # fmt: skip
            except ClientError as exc:
                # 412: there is one; 409: another conditional write of it is under way.
                if exc.response["Error"]["Code"] in ("PreconditionFailed",
                                                     "ConditionalRequestConflict"):  # fmt: skip
                    return False
                raise
            return True
        path = os.path.join(self.root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{random.randrange(1 << 30)}"
        with open(tmp, "w") as f:
            f.write(body)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
        return True

    def read(self, relative: str) -> dict[str, Any] | None:
        text = self.text(relative)
        return None if text is None else json.loads(text)

    def text(self, relative: str) -> str | None:
        """A document's text as it is (None if there is none)."""
        if self._s3 is not None:
            try:
                obj = self._s3.get_object(Bucket=self._bucket, Key=self._key(relative))
            except self._s3.exceptions.NoSuchKey:
                return None
            return obj["Body"].read().decode()
        path = self.root[len("file://") :] if self.root.startswith("file://") else self.root
        try:
            with open(os.path.join(path, relative)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def children(self, relative: str) -> list[str]:
        """Names directly under `relative` (sub-folders and documents), sorted."""
        if self._s3 is not None:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._key(relative).rstrip("/") + "/", Delimiter="/"
            )
            names = [
                entry.rstrip("/").rsplit("/", 1)[-1]
                for page in pages
                for entry in [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                + [o["Key"] for o in page.get("Contents", [])]
            ]
        else:
            try:
                names = os.listdir(os.path.join(self.root, relative))
            except FileNotFoundError:
                names = []
        return sorted(n for n in names if ".tmp-" not in n)

    def delete(self, relative: str) -> None:
        """Delete a document or everything under a sub-folder."""
        if self._s3 is not None:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=self._key(relative)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    self._s3.delete_object(Bucket=self._bucket, Key=obj["Key"])
            return
        path = os.path.join(self.root, relative)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)
