"""A tiny Confluent-compatible schema registry on 127.0.0.1 (a thread), for tests: the endpoints
worker/io/schema_registry.py uses, with Confluent's status codes and error bodies. Ids start at
101 so that a test can tell the registry's ids from schemas/registry.json's."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


def canonical(schema: str) -> str:
    return json.dumps(json.loads(schema), sort_keys=True, separators=(",", ":"))


@dataclass
class RegistryState:
    user_info: str | None = None
    subjects: dict[str, list[int]] = field(default_factory=dict)  # subject -> ids by version
    schemas: dict[int, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def id_of(self, schema: str) -> int | None:
        return next((i for i, s in self.schemas.items() if canonical(s) == canonical(schema)), None)


def handler_for(state: RegistryState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self) -> bool:
            if state.user_info is None:
                return True
            expected = "Basic " + base64.b64encode(state.user_info.encode()).decode()
            if self.headers.get("Authorization") == expected:
                return True
            self.reply(401, {"error_code": 401, "message": "Unauthorized"})
            return False

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            if not self.authorized():
                return
            parts = self.path.strip("/").split("/")
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in state.schemas:
                self.reply(200, {"schema": state.schemas[int(parts[2])]})
            else:
                self.reply(404, {"error_code": 40403, "message": "Schema not found"})

        def do_POST(self) -> None:
            state.requests.append(f"POST {self.path}")
            if not self.authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            schema = body["schema"]
            parts = [unquote(p) for p in self.path.strip("/").split("/")]
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                known = state.id_of(schema)
                if known is None:
                    known = 101 + len(state.schemas)
                    state.schemas[known] = schema
                versions = state.subjects.setdefault(parts[1], [])
                if known not in versions:
                    versions.append(known)
                self.reply(200, {"id": known})
            elif len(parts) == 2 and parts[0] == "subjects":
                if parts[1] not in state.subjects:
                    self.reply(404, {"error_code": 40401, "message": f"Subject '{parts[1]}' not found."})
                    return
                known = state.id_of(schema)
                if known is None or known not in state.subjects[parts[1]]:
                    self.reply(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                version = state.subjects[parts[1]].index(known) + 1
                self.reply(200, {"subject": parts[1], "version": version, "id": known, "schema": schema})
            else:
                self.reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})

    return Handler


@contextmanager
def fake_registry(user_info: str | None = None) -> Iterator[tuple[str, RegistryState]]:
    state = RegistryState(user_info=user_info)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
