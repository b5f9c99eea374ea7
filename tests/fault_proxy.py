"""An HTTP proxy on loopback in front of a local service (kinesalite, moto) that answers the
requests a rule picks with an AWS-style fault, and forwards the rest."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A rule gets (method, path, X-Amz-Target header) and returns (HTTP status, error code) or None.
Rule = Callable[[str, str, str], tuple[int, str] | None]


class JsonRewrite:
    """A mock of one part of an AWS JSON API: `answer` may reply to a request itself (a JSON
    document, or None to forward it), `rewrite` may change the upstream's reply."""

    def answer(self, target: str, request: dict) -> dict | None:
        return None

    def rewrite(self, target: str, request: dict, reply: dict) -> dict:
        return reply


class FaultProxy:
    def __init__(self, upstream_port: int, rule: Rule, rewrite: JsonRewrite | None = None) -> None:
        self.upstream_port = upstream_port
        self.rule = rule
        self.json = rewrite or JsonRewrite()
        self.faults: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                fault = proxy._fault(self.command, self.path, self.headers.get("X-Amz-Target", ""))
                if fault:
                    status, code = fault
                    payload = json.dumps({"__type": code, "message": "injected"}).encode()
                    self._reply(
                        status,
                        [
                            ("Content-Type", "application/x-amz-json-1.1"),
                            ("x-amzn-ErrorType", code),
                        ],
                        payload,
                    )
                    return
                target = self.headers.get("X-Amz-Target", "")
                request = json.loads(body) if target and body else {}
                mocked = proxy.json.answer(target, request) if target else None
                if mocked is not None:
                    headers = [("Content-Type", "application/x-amz-json-1.1")]
                    self._reply(200, headers, json.dumps(mocked).encode())
                    return
                if target and "ShardIterator" in request:
                    request = proxy.json.rewrite(target + ":request", request, request)
                    body = json.dumps(request).encode()
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length")}  # fmt: skip
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if target and resp.status == 200 and data:
                    reply = proxy.json.rewrite(target, request, json.loads(data))
                    data = json.dumps(reply).encode()
                kept = [
                    (k, v)
                    for k, v in resp.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ]
                self._reply(resp.status, kept, data)

            def _reply(self, status: int, headers: list, payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _fault(self, method: str, path: str, target: str) -> tuple[int, str] | None:
        with self._lock:
            fault = self.rule(method, path, target)
            if fault:
                self.faults[fault[1]] = self.faults.get(fault[1], 0) + 1
            return fault

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def kinesis_get_records_faults(
    throttle_every: int = 0, expire_every: int = 0, throttle_always: bool = False,
    limit_every: int = 0,
) -> Rule:  # fmt: skip
    """Every n-th GetRecords throttled (ProvisionedThroughputExceeded, or with `limit_every`
    the account-level LimitExceeded) or answered with an expired iterator, as Kinesis does."""
    calls = [0]

    def rule(method: str, path: str, target: str) -> tuple[int, str] | None:
        if not target.endswith(".GetRecords"):
            return None
        calls[0] += 1
        if limit_every and calls[0] % limit_every == 0:
            return 400, "LimitExceededException"
        if throttle_always or (throttle_every and calls[0] % throttle_every == 0):
            return 400, "ProvisionedThroughputExceededException"
        if expire_every and calls[0] % expire_every == 0:
            return 400, "ExpiredIteratorException"
        return None

    return rule


def first_shadow_updates_throttled(count: int) -> Rule:
    """The first `count` UpdateThingShadow calls answered 429 ThrottlingException."""
    left = [count]

    def rule(method: str, path: str, target: str) -> tuple[int, str] | None:
        if method == "POST" and "/shadow" in path and left[0]:
            left[0] -= 1
            return 429, "ThrottlingException"
        return None

    return rule


class KinesisGap(JsonRewrite):
    """A mock of a stretch of a shard with no records: every iterator GetShardIterator hands
    out first meets `empty` empty GetRecords answers, still behind (MillisBehindLatest > 0),
    as Kinesis answers over a gap, before it reaches the shard's records. The iterators the
    proxy hands out say how far through the gap they are."""

    PREFIX = "gap:"

    def __init__(self, empty: int) -> None:
        self.empty = empty
        self.empty_answers = 0

    def rewrite(self, target: str, request: dict, reply: dict) -> dict:
        if target.endswith(".GetShardIterator"):
            return {**reply, "ShardIterator": f"{self.PREFIX}0:{reply['ShardIterator']}"}
        if target.endswith(".GetRecords:request"):
            iterator = request["ShardIterator"]
            if iterator.startswith(self.PREFIX):  # through the gap: the real iterator
                request = {**request, "ShardIterator": iterator.split(":", 2)[2]}
            return request
        return reply

    def answer(self, target: str, request: dict) -> dict | None:
        iterator = request.get("ShardIterator", "")
        if not (target.endswith(".GetRecords") and iterator.startswith(self.PREFIX)):
            return None
        _, walked, real = iterator.split(":", 2)
        if int(walked) >= self.empty:
            return None  # forwarded, with the real iterator
        self.empty_answers += 1
        return {"Records": [], "MillisBehindLatest": 60000,
                "NextShardIterator": f"{self.PREFIX}{int(walked) + 1}:{real}"}  # fmt: skip
