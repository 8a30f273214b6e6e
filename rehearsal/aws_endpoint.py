"""moto over HTTP on 127.0.0.1: the endpoint the Lambda workers and the hosts' AWS CLI call (AWS_ENDPOINT_URL).

One server per process, moto's ThreadedMotoServer in this process, so that it serves the same backends as the
in-process mock (and the same patches: rehearsal/moto_fixes.py, IAM enforcement). It outlives the emulated worlds,
so that warm Lambda workers keep their endpoint, as a Lambda environment keeps its AWS endpoints. Each request
waits for the latency model's round trip first, when one is in force (rehearsal/latency.py)."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from rehearsal import latency

_url: str | None = None


def _with_latency(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        model = latency.active()
        if model is not None:
            service = latency.service_of(str(environ.get("HTTP_AUTHORIZATION", "")))
            model.count(service)
            if (seconds := model.of(service)) > 0:
                time.sleep(seconds)
        return app(environ, start_response)

    return serve


_lock = threading.Lock()


def moto_endpoint() -> str:
    """The URL of this process's moto server (started on first use, stopped when the process exits)."""
    global _url
    with _lock:
        if _url is None:
            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            atexit.register(server.stop)
            wsgi = server._server  # the werkzeug server: each request thread calls its app
            assert wsgi is not None
            wsgi.app = _with_latency(wsgi.app)
            address, port = server.get_host_and_port()
            _url = f"http://{address}:{port}"
        return _url
