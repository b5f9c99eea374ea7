"""A mock of Apache Ranger's admin REST API (no Ranger server can run here).

It answers the policy endpoints the official client calls, with responses in the shape Ranger
2.4 returns (server-side fields such as id, guid, version, times, serviceType, and the
defaults it fills into items), keeps policies in memory, and records every request so tests
can check which calls were made. Basic auth is required, as on a real admin server.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BASE = "/service/public/v2/api"
_BY_NAME = re.compile(rf"^{BASE}/service/(?P<service>[^/]+)/policy/(?P<name>[^/?]+)$")
_BY_ID = re.compile(rf"^{BASE}/policy/(?P<id>\d+)$")


def _ranger_item(item: dict) -> dict:
    out = {"users": [], "groups": [], "roles": [], "conditions": [], "delegateAdmin": False, **item}
    out["accesses"] = [{"isAllowed": True, **a} for a in item.get("accesses", [])]
    return out


def _as_ranger_returns(policy: dict, policy_id: int, version: int, created: int) -> dict:
    resources = {
        k: {"isExcludes": False, "isRecursive": False, **v} for k, v in policy["resources"].items()
    }
    return {
        "id": policy_id, "guid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ranger/{policy_id}")),
        "isEnabled": True, "isAuditEnabled": True, "version": version,
        "createdBy": "Admin", "updatedBy": "Admin", "createTime": created,
        "updateTime": created + version, "serviceType": "hive", "policyPriority": 0,
        "resourceSignature": uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(resources)).hex,
        "isDenyAllElse": False, "zoneName": "", "policyLabels": [], "options": {},
        "validitySchedules": [], "conditions": [], "denyPolicyItems": [], "allowExceptions": [],
        "denyExceptions": [], "dataMaskPolicyItems": [], "rowFilterPolicyItems": [],
        "policyItems": [],
        **{k: v for k, v in policy.items() if k not in ("id", "guid", "version")},
        "resources": resources,
        **{
            key: [_ranger_item(i) for i in policy.get(key) or []]
            for key in ("policyItems", "dataMaskPolicyItems", "rowFilterPolicyItems")
        },
    }  # fmt: skip


class RangerAdminMock:
    def __init__(self, user: str = "admin", password: str = "rangerR0cks!") -> None:
        self.policies: dict[int, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._next_id = 100
        mock = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _reply(self, status: int, body: object | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                path = self.path.split("?", 1)[0]
                mock.requests.append((self.command, path))
                if self.headers.get("Authorization") != mock._auth:
                    return self._reply(
                        401, {"statusCode": 401, "msgDesc": "Authentication required"}
                    )
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                by_name, by_id = _BY_NAME.match(path), _BY_ID.match(path)
                if self.command == "GET" and by_name:
                    for policy in mock.policies.values():
                        if (policy["service"], policy["name"]) == (
                            by_name["service"],
                            by_name["name"].replace("%20", " "),
                        ):
                            return self._reply(200, policy)
                    return self._reply(404, {"statusCode": 1, "msgDesc": "Not found"})
                if self.command == "POST" and path == f"{BASE}/policy":
                    if any(
                        (p["service"], p["name"]) == (body["service"], body["name"])
                        for p in mock.policies.values()
                    ):
                        return self._reply(
                            400, {"statusCode": 1, "msgDesc": "policy name already exists"}
                        )
                    mock._next_id += 1
                    stored = _as_ranger_returns(body, mock._next_id, 1, 1764300000000)
                    mock.policies[mock._next_id] = stored
                    return self._reply(200, stored)
                if self.command == "PUT" and by_id:
                    old = mock.policies.get(int(by_id["id"]))
                    if old is None:
                        return self._reply(404, {"statusCode": 1, "msgDesc": "Not found"})
                    stored = _as_ranger_returns(
                        body, old["id"], old["version"] + 1, old["createTime"]
                    )
                    mock.policies[old["id"]] = stored
                    return self._reply(200, stored)
                return self._reply(
                    404, {"statusCode": 1, "msgDesc": f"no mock for {self.command} {path}"}
                )

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RangerAdminMock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]
