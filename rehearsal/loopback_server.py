"""What the tests' own HTTP servers share (the Bitbucket simulator, the redirect target): a ThreadingHTTPServer on
127.0.0.0/8, served from a daemon thread, started and stopped (or used as a context manager), and its URL."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackServer(ABC):
    # What the errors and the serving thread call it.
    name = "server"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _make_server(self) -> ThreadingHTTPServer:
        """A new server bound to its address (port 0: any free one)."""

    def _after_shutdown(self) -> None:
        """Between the end of serving and the closing of the socket (the simulator ends keep-alive connections)."""
        return None

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        self._server = self._make_server()
        # A short poll interval keeps stop() fast: shutdown() waits for one select() round.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{self.name}-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        self._after_shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"
