"""Another origin for the redirect tests: a second server on 127.0.0.1 that records what arrives there (a
maintenance token must never)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from rehearsal.loopback_server import LoopbackServer


@dataclass(frozen=True)
class ArrivedRequest:
    """One request that reached a RedirectTarget, as it arrived."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def carries(self, secret: str) -> bool:
        """Whether the secret arrived anywhere: request line, query or any header (Authorization included)."""
        texts = [self.path, *(v for values in self.query.values() for v in values), *self.headers.values()]
        basic = [self.headers.get(k, "") for k in self.headers if k.lower() == "authorization"]
        for value in basic:
            scheme, _, encoded = value.partition(" ")
            if scheme.lower() == "basic":
                with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                    texts.append(base64.b64decode(encoded.strip(), validate=True).decode("utf-8"))
        return any(secret in text for text in texts)


class _TargetHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "RedirectTarget/1.0"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> None:
        length_header = self.headers.get("Content-Length") or "0"
        if length_header.isdigit() and int(length_header) > 0:
            self.rfile.read(int(length_header))
        parts = urlsplit(self.path)
        arrived = ArrivedRequest(
            self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), dict(self.headers.items())
        )
        target = cast("_TargetServer", self.server).target
        with target._lock:
            target._arrived.append(arrived)
        # An answer a naive client would take for success: 200 and an empty JSON object.
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _record


class _TargetServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], target: RedirectTarget) -> None:
        self.target = target
        super().__init__(address, _TargetHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class RedirectTarget(LoopbackServer):
    """Another origin on 127.0.0.1 that a redirect may point at (a rogue proxy's, or an attacker's). It answers
    every request with 200 ``{}`` and records it, so a test can show that no token or password ever arrived."""

    name = "redirect target"

    def __init__(self, host: str = "127.0.0.1") -> None:
        if not host.startswith("127."):
            raise ValueError("the redirect target listens on 127.0.0.0/8 only")
        super().__init__()
        self._host = host
        self._lock = threading.Lock()
        self._arrived: list[ArrivedRequest] = []

    def _make_server(self) -> _TargetServer:
        return _TargetServer((self._host, 0), self)

    @property
    def arrived(self) -> list[ArrivedRequest]:
        with self._lock:
            return list(self._arrived)

    def received(self, secret: str) -> bool:
        """Whether any request that arrived here carried the secret."""
        return any(request.carries(secret) for request in self.arrived)
